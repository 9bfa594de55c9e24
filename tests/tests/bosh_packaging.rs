//! The `rust` package of the BOSH release (bosh/packages/rust/packaging),
//! run as BOSH's compilation VM runs it: blobs under
//! `BOSH_COMPILE_TARGET/rust/`, an empty `BOSH_INSTALL_TARGET`, no network
//! (a new network namespace) and a bare environment.
//!
//! static.rust-lang.org is out of reach here, so the blobs are stand-ins
//! made by tests/bosh/rust-blobs-standin.sh from this machine's toolchains:
//! rustup's official toolchain (its files and manifests, in the standalone
//! installer's layout, with tests/bosh/rust-installer-standin.sh as the
//! installer's `install.sh`), Debian's library sources with `vendor/`,
//! rustup as rustup-init, and the bpf-linker blob that
//! bosh/scripts/bpf-linker-blob.sh makes. The toolchain is rustup's
//! 1.95.0, so the script runs with its version constant set to that.
//!
//! Needs root (unshare), rustup with the 1.95.0 toolchain, bpf-linker.

use std::{path::Path, process::Command};

use pcap_tests::{
    TempDir,
    bosh::{run_ok, workspace_root},
};

const STANDIN_VERSION: &str = "1.95.0";

/// The packaging script with `rust_version` set to `version`.
fn packaging_script(dir: &Path, version: &str) -> std::path::PathBuf {
    let script =
        std::fs::read_to_string(workspace_root().join("bosh/packages/rust/packaging")).unwrap();
    let line = "\nrust_version=1.96.0\n";
    assert_eq!(script.matches(line).count(), 1, "{script}");
    let path = dir.join("packaging");
    std::fs::write(
        &path,
        script.replace(line, &format!("\nrust_version={version}\n")),
    )
    .unwrap();
    path
}

/// Runs `script` as BOSH would: in `compile`, installing to `install`, with
/// no network and only a basic PATH.
fn run_packaging(script: &Path, compile: &Path, install: &Path) -> std::process::Output {
    Command::new("unshare")
        .args(["--net", "--"])
        .arg("bash")
        .arg(script)
        .current_dir(compile)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", compile)
        .env("BOSH_COMPILE_TARGET", compile)
        .env("BOSH_INSTALL_TARGET", install)
        .output()
        .unwrap()
}

/// Runs `command` in bash with the package's compile.env sourced, as the
/// pcap package's packaging script does.
fn with_compile_env(install: &Path, command: &str) -> String {
    let out = run_ok(
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -euo pipefail; source {}/bosh/compile.env; {command}",
                install.display()
            ))
            .env_clear()
            .env("PATH", "/usr/bin:/bin"),
        command,
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn packaging_without_its_blobs_names_the_missing_blob() {
    let dir = TempDir::new("bosh-rust-no-blobs").unwrap();
    let install = dir.join("install");
    std::fs::create_dir_all(dir.join("rust")).unwrap();
    std::fs::create_dir_all(&install).unwrap();
    let out = run_packaging(
        &workspace_root().join("bosh/packages/rust/packaging"),
        &dir,
        &install,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "the blob rust/rust-1.96.0-x86_64-unknown-linux-gnu.tar.xz is missing; add it with \
             `bosh add-blob FILE rust/rust-1.96.0-x86_64-unknown-linux-gnu.tar.xz`"
        ),
        "{stderr}"
    );
    // The spec lists exactly the blobs the script reads.
    let spec = std::fs::read_to_string(workspace_root().join("bosh/packages/rust/spec")).unwrap();
    let script =
        std::fs::read_to_string(workspace_root().join("bosh/packages/rust/packaging")).unwrap();
    let files: Vec<&str> = spec
        .lines()
        .skip_while(|l| *l != "files:")
        .skip(1)
        .filter_map(|l| l.strip_prefix("  - rust/"))
        .collect();
    assert_eq!(
        files,
        [
            "rust-1.96.0-x86_64-unknown-linux-gnu.tar.xz",
            "rust-src-1.96.0.tar.xz",
            "rustup-init-x86_64-unknown-linux-gnu",
            "bpf-linker-x86_64-llvm22.tar.gz",
        ]
    );
    for pattern in [
        "blob \"rust-${rust_version}-${triple}.tar.xz\"",
        "blob \"rust-src-${rust_version}.tar.xz\"",
        "blob \"rustup-init-${triple}\"",
        "blob \"bpf-linker-${triple%%-*}-llvm22.tar.gz\"",
    ] {
        assert!(script.contains(pattern), "{pattern}");
    }
}

/// Makes the stand-in blobs (about 2 minutes: 600 MB of toolchain through
/// xz) and installs them (under a minute).
#[test]
#[ignore = "takes about 3 minutes (compressing and installing a whole toolchain): run with --ignored"]
fn packaging_installs_the_toolchain_from_installer_blobs_offline() {
    let dir = TempDir::new("bosh-rust-packaging").unwrap();
    let install = dir.join("install");
    std::fs::create_dir_all(&install).unwrap();
    run_ok(
        Command::new(workspace_root().join("tests/bosh/rust-blobs-standin.sh"))
            .arg(&*dir)
            .arg(STANDIN_VERSION),
        "rust-blobs-standin.sh",
    );

    let started = std::time::Instant::now();
    let script = packaging_script(&dir, STANDIN_VERSION);
    let out = run_packaging(&script, &dir, &install);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "packaging failed:\n{stderr}");
    eprintln!("packaging took {:?}", started.elapsed());

    // The compiler the installer put at the prefix runs.
    let rustc = run_ok(
        Command::new(install.join("bin/rustc"))
            .arg("--version")
            .env_clear(),
        "rustc --version",
    );
    assert!(
        String::from_utf8_lossy(&rustc.stdout).starts_with(&format!("rustc {STANDIN_VERSION} ")),
        "{}",
        String::from_utf8_lossy(&rustc.stdout)
    );
    let sysroot = with_compile_env(&install, "rustc --print sysroot");
    assert_eq!(Path::new(sysroot.trim()), &*install);

    // What packages/pcap/packaging runs: the rustup toolchain pcap-bpf is this
    // compiler, with the library sources and their vendored crates.
    let linked = with_compile_env(&install, "rustup run pcap-bpf rustc --print sysroot");
    assert_eq!(Path::new(linked.trim()), &*install);
    for path in [
        "lib/rustlib/src/rust/library/core/Cargo.toml",
        "lib/rustlib/src/rust/library/vendor",
        "lib/rustlib/x86_64-unknown-linux-gnu/lib",
    ] {
        assert!(install.join(path).exists(), "{path}");
    }
    let cargo = with_compile_env(&install, "command -v cargo");
    assert_eq!(Path::new(cargo.trim()), install.join("bin/cargo"));

    // bpf-linker runs with the package's own libLLVM, not the machine's.
    let version = with_compile_env(&install, "bpf-linker --version");
    assert!(version.starts_with("bpf-linker "), "{version}");
    let ldd = with_compile_env(&install, "ldd \"$(command -v bpf-linker)\"");
    let llvm = ldd
        .lines()
        .find(|l| l.contains("libLLVM.so.22"))
        .unwrap_or_else(|| panic!("{ldd}"));
    assert!(
        llvm.contains(&format!("{}/llvm/lib/libLLVM.so.22", install.display())),
        "{llvm}"
    );
}
