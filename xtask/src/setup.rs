//! `cargo xtask setup`: everything a fresh Debian 12 machine of this kind
//! needs, each step skipped when already done (see docs/toolchain.md).
//! Each step that has work to do says what it does, roughly how long it
//! takes, and how long it took; when all is there setup prints nothing.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::run_command;

/// Debian packages: Debian's Rust 1.96 with its library sources (for
/// `-Z build-std`), LLVM 22 for bpf-linker, the reference tools, and ruby
/// for the BOSH template tests.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpcap-dev",
    "tcpdump",
    "tshark",
    "wireshark-common",
    "netsniff-ng",
    "iproute2",
    "iputils-ping",
    "bpftool",
    "python3",
    "curl",
    // Renders the BOSH jobs' ERB templates in tests/tests/bosh_templates.rs.
    "ruby",
    // VXLAN-policy-agent rules in the simulated Diego cells (tests/src/landscape.rs).
    "iptables",
    // The test UAA's signing keys (tests/src/servers/uaa.rs).
    "openssl",
    // sysctl, in every simulated host and cell (tests/src/netns.rs, landscape.rs).
    "procps",
    // Builds tests/cf-stub, the Go stand-in for the cf CLI (tests/tests/cf_plugin.rs).
    "golang-go",
    // `cargo xtask bench`: the app-throughput load (lab/src/bench/apps.rs),
    // and the profilers used to compare before/after (docs/bench.md).
    "iperf3",
    "linux-perf",
    "valgrind",
    // git for cargo's git sources and the fresh-check clone; the C compiler
    // and headers that the pcap-sys and ring build scripts use, and make for
    // tikv-jemalloc-sys's (pcap-api's allocator: configure, then make).
    "git",
    "gcc",
    "libc6-dev",
    "make",
    "ca-certificates",
];

/// The rustup toolchain name for Debian's compiler; pcap-agent's build.rs uses it.
const EBPF_TOOLCHAIN: &str = "pcap-bpf";

pub fn run() -> anyhow::Result<()> {
    apt_packages()?;
    bpf_linker()?;
    s3_server()?;
    cargo_deny()?;
    toolchain_link()
}

/// Runs one step of the set-up, saying what it does, how long it usually
/// takes and how long it took.
fn step(
    what: &str,
    usually: &str,
    work: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    eprintln!("setup: {what} (usually {usually})...");
    let start = Instant::now();
    work().with_context(|| format!("setup: {what}"))?;
    eprintln!("setup: {what}: done in {}", elapsed(start));
    Ok(())
}

/// "52 s", "3 min 05 s".
pub fn elapsed(start: Instant) -> String {
    let seconds = start.elapsed().as_secs();
    if seconds < 60 {
        format!("{seconds} s")
    } else {
        format!("{} min {:02} s", seconds / 60, seconds % 60)
    }
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "setup needs root to install the Debian packages {}: run it as root \
             (the demo and the system tests need root too)",
            missing.join(" ")
        );
    }
    step(
        &format!(
            "installing {} Debian packages: {}",
            missing.len(),
            missing.join(" ")
        ),
        "2 to 5 min, most of it downloading",
        || apt_install(&missing),
    )
}

fn apt_install(missing: &[&str]) -> anyhow::Result<()> {
    run_command(Command::new("apt-get").args(["update", "-q"]))?;
    run_command(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

fn bpf_linker() -> anyhow::Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    step(
        "building bpf-linker against LLVM 22 with cargo install",
        "3 min on 2 cores",
        build_bpf_linker,
    )
}

fn build_bpf_linker() -> anyhow::Result<()> {
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    run_command(
        Command::new(env!("CARGO"))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path),
    )
}

/// The S3-compatible server the stored-capture tests run (tests/src/s3.rs):
/// s3s-fs checks SigV4 signatures and presigned URLs' expiry, and enforces
/// S3's 5 MiB minimum part size.
const S3S_FS_VERSION: &str = "0.14.1";

fn s3_server() -> anyhow::Result<()> {
    if Command::new("s3s-fs")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(S3S_FS_VERSION)
        })
    {
        return Ok(());
    }
    step(
        &format!(
            "building s3s-fs {S3S_FS_VERSION} (the S3 server of the store tests) with cargo install"
        ),
        "6 min on 2 cores",
        || {
            run_command(Command::new(env!("CARGO")).args([
                "install",
                "s3s-fs",
                "--version",
                S3S_FS_VERSION,
                "--features",
                "binary",
                "--locked",
            ]))
        },
    )
}

/// `cargo deny`, which `cargo xtask test` runs against deny.toml.
const CARGO_DENY_VERSION: &str = "0.20.2";

fn cargo_deny() -> anyhow::Result<()> {
    if Command::new(env!("CARGO"))
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_DENY_VERSION)
        })
    {
        return Ok(());
    }
    step(
        &format!("building cargo-deny {CARGO_DENY_VERSION} with cargo install"),
        "5 to 10 min on 2 cores",
        || {
            run_command(Command::new(env!("CARGO")).args([
                "install",
                "cargo-deny",
                "--version",
                CARGO_DENY_VERSION,
                "--locked",
            ]))
        },
    )
}

fn toolchain_link() -> anyhow::Result<()> {
    let list = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running rustup")?;
    if String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(EBPF_TOOLCHAIN))
    {
        return Ok(());
    }
    step(
        &format!("linking Debian's compiler as the rustup toolchain {EBPF_TOOLCHAIN}"),
        "a second",
        || run_command(Command::new("rustup").args(["toolchain", "link", EBPF_TOOLCHAIN, "/usr"])),
    )
}
