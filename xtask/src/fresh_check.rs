//! `cargo xtask fresh-check`: the README's first command as a new user runs
//! it, on a pristine Debian 12 root made with debootstrap that has the base
//! tools of this kind of machine (gcc, git, python3, curl, ca-certificates)
//! and rustup's stable toolchain, but nothing that `cargo xtask setup`
//! installs. It clones this repository's HEAD into the root and runs
//! `cargo xtask demo` there, chrooted, in a private mount namespace.
//!
//! Only the Debian packages debootstrap downloads are cached (a
//! `debootstrap --make-tarball` tarball); the root itself is made anew on
//! every run. Mounts live in the private mount namespace, so they vanish with
//! it, even when the demo fails or is killed.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

use crate::{run_command, setup::elapsed, workspace_root};

/// Debian 12.
const SUITE: &str = "bookworm";

/// The base tools of a machine of this kind, beyond debootstrap's required
/// and important packages. `libc6-dev` is what makes gcc a linker for Rust.
const BASE: &[&str] = &[
    "gcc",
    "libc6-dev",
    "git",
    "python3",
    "curl",
    "ca-certificates",
];

/// Where debootstrap's download is cached and the root is made.
const DEFAULT_DIR: &str = "/var/tmp/pcap-fresh-check";

/// Certificate authorities a machine adds to Debian's (update-ca-certificates(8)).
const LOCAL_CAS: &str = "/usr/local/share/ca-certificates";

/// The clone's path inside the root.
const CLONE: &str = "/root/pcap";

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Cache of Debian packages (a debootstrap tarball) and place of the root.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Keep the root afterwards, to look inside; it is removed otherwise.
    #[arg(long)]
    keep: bool,
    /// What to run in the clone, as the new user would.
    #[arg(long, default_value = "cargo xtask demo")]
    command: String,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "fresh-check needs root: it runs debootstrap, chroot and mounts, and the demo needs root"
    );
    let total = Instant::now();
    let mut timings = String::new();
    let mut phase = |name: &str, work: &mut dyn FnMut() -> anyhow::Result<()>| {
        println!("fresh-check: {name}...");
        let start = Instant::now();
        let result = work().with_context(|| format!("fresh-check: {name}"));
        let line = format!(
            "fresh-check: {name}: {} in {}",
            if result.is_ok() { "done" } else { "FAILED" },
            elapsed(start)
        );
        println!("{line}");
        writeln!(timings, "{line}").expect("writing to a String");
        result
    };

    fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let dir = options.dir.canonicalize()?;
    let _lock = lock(&dir)?;
    let root = dir.join("root");
    let mirror = host_mirror();
    let tarball = dir.join(format!("{SUITE}-{}.tgz", BASE.join("+")));

    let result = (|| {
        if !has_program("debootstrap") {
            phase("installing debootstrap on the host", &mut || {
                run_command(Command::new("apt-get").args(["update", "-q"]))?;
                run_command(
                    Command::new("apt-get")
                        .args(["install", "-y", "-q", "debootstrap"])
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                )
            })?;
        }
        if !tarball.exists() {
            phase(
                &format!(
                    "downloading Debian {SUITE} from {mirror} (cached in {})",
                    tarball.display()
                ),
                &mut || make_tarball(&dir, &tarball, &mirror),
            )?;
        }
        phase("removing the previous root", &mut || remove_root(&root))?;
        phase(
            &format!("debootstrap {SUITE} into {}", root.display()),
            &mut || debootstrap("--unpack-tarball", &tarball, &root, &mirror),
        )?;
        phase(
            "configuring apt, DNS and certificate authorities like the host",
            &mut || configure(&root),
        )?;
        phase("copying rustup and its stable toolchain", &mut || {
            copy_rustup(&root)
        })?;
        phase("cloning the repository's HEAD", &mut || clone(&root))?;
        phase(
            &format!(
                "`{}` in the root, in a private mount namespace",
                options.command
            ),
            &mut || run_inside(&root, &options.command),
        )
    })();

    if options.keep {
        println!("fresh-check: the root stays in {}", root.display());
    } else if let Err(error) = phase("removing the root (--keep keeps it)", &mut || {
        remove_root(&root)
    }) {
        eprintln!("{error:#}");
    }
    println!(
        "\nfresh-check timings:\n{timings}fresh-check: total {}",
        elapsed(total)
    );
    result?;
    println!(
        "fresh-check: `{}` ran to the end on a fresh Debian 12 root",
        options.command
    );
    Ok(())
}

/// Each run removes and remakes the root: one run per directory at a time.
fn lock(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
    nix::fcntl::Flock::lock(
        fs::File::create(dir.join("lock"))?,
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, errno)| {
        anyhow::anyhow!(
            "another fresh-check is using {} ({errno}): wait for it, or give another --dir",
            dir.display()
        )
    })
}

fn has_program(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|dir| dir.join(name).is_file())
    })
}

/// The Debian mirror the host's apt uses (`deb.debian.org` when none is found).
fn host_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push(text);
    }
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|e| e == "sources" || e == "list")
            {
                texts.extend(fs::read_to_string(path));
            }
        }
    }
    texts
        .iter()
        .find_map(|text| debian_mirror(text))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned())
}

/// The first Debian archive (not the security archive) named in an apt
/// sources file, one-line (`deb URI SUITE ...`) or deb822 (`URIs: URI`).
fn debian_mirror(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .flat_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first() {
                Some(&"URIs:") => words[1..].to_vec(),
                Some(&"deb") => words
                    .iter()
                    .skip(1)
                    .find(|w| !w.starts_with('['))
                    .into_iter()
                    .copied()
                    .collect(),
                _ => Vec::new(),
            }
        })
        .map(|uri| uri.trim_end_matches('/').to_owned())
        .find(|uri| uri.ends_with("/debian"))
}

/// `debootstrap OPTION=TARBALL --include=BASE SUITE TARGET MIRROR`, where
/// `option` makes the tarball or unpacks it.
fn debootstrap(option: &str, tarball: &Path, target: &Path, mirror: &str) -> anyhow::Result<()> {
    run_command(
        Command::new("debootstrap")
            .arg(format!("{option}={}", tarball.display()))
            .arg(format!("--include={}", BASE.join(",")))
            .args([SUITE])
            .arg(target)
            .arg(mirror),
    )
}

fn make_tarball(dir: &Path, tarball: &Path, mirror: &str) -> anyhow::Result<()> {
    let work = dir.join("tarball-work");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    let partial = tarball.with_extension("tgz.partial");
    debootstrap("--make-tarball", &partial, &work, mirror)?;
    fs::rename(&partial, tarball)?;
    fs::remove_dir_all(&work).ok();
    Ok(())
}

/// Removes the root, refusing when anything is mounted below it (then
/// `rm -r` would reach into the host's /dev or /sys).
fn remove_root(root: &Path) -> anyhow::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let mounted = mounts_below(&mountinfo, root);
    if !mounted.is_empty() {
        bail!(
            "{} are still mounted below {}: unmount them (`umount -R {}`) and run again",
            mounted.join(", "),
            root.display(),
            root.display()
        );
    }
    run_command(
        Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(root),
    )
}

/// The mount points in `/proc/self/mountinfo` text that are `root` or below it.
fn mounts_below(mountinfo: &str, root: &Path) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(root))
        .map(str::to_owned)
        .collect()
}

/// apt sources, DNS and local certificate authorities as on the host; no
/// service starts during apt.
fn configure(root: &Path) -> anyhow::Result<()> {
    // Debian 12's own sources (bookworm, -updates, -security): setup needs
    // the security archive's rustc-web and LLVM 22.
    let host_sources = Path::new("/etc/apt/sources.list.d/debian.sources");
    if host_sources.exists() {
        fs::copy(
            host_sources,
            root.join("etc/apt/sources.list.d/debian.sources"),
        )?;
        fs::remove_file(root.join("etc/apt/sources.list")).ok();
    } else {
        fs::copy("/etc/apt/sources.list", root.join("etc/apt/sources.list"))?;
    }
    fs::write(
        root.join("etc/resolv.conf"),
        fs::read("/etc/resolv.conf").context("reading the host's /etc/resolv.conf")?,
    )?;
    fs::copy("/etc/hosts", root.join("etc/hosts"))?;
    // The machine's own certificate authorities (an egress proxy's, say),
    // without which cargo cannot reach crates.io.
    let local_cas = Path::new(LOCAL_CAS);
    if local_cas.is_dir() {
        run_command(
            Command::new("cp")
                .arg("-a")
                .arg(local_cas.join("."))
                .arg(root.join(LOCAL_CAS.trim_start_matches('/'))),
        )?;
        run_command(
            Command::new("chroot")
                .arg(root)
                .arg("update-ca-certificates"),
        )?;
    }
    // As in any chroot: packages must not start services of their own.
    let policy = root.join("usr/sbin/policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 101\n")?;
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", policy.display()))
}

/// rustup as its installer leaves it: `~/.cargo/bin/rustup` and its proxies,
/// `~/.cargo/env` sourced from `~/.profile` and `~/.bashrc`, and the stable
/// toolchain as default. Copied from the host, since rustup's servers may be
/// out of reach; the host's other toolchains and cargo-installed tools
/// (bpf-linker, s3s-fs...) are left out.
fn copy_rustup(root: &Path) -> anyhow::Result<()> {
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let rustup_home =
        std::env::var_os("RUSTUP_HOME").map_or_else(|| home.join(".rustup"), PathBuf::from);
    let cargo_home =
        std::env::var_os("CARGO_HOME").map_or_else(|| home.join(".cargo"), PathBuf::from);
    let stable = fs::read_dir(rustup_home.join("toolchains"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("stable-"))
        .with_context(|| {
            format!(
                "no stable toolchain in {}: `rustup toolchain install stable` first",
                rustup_home.display()
            )
        })?;
    let new_rustup = root.join("root/.rustup");
    let new_cargo_bin = root.join("root/.cargo/bin");
    fs::create_dir_all(new_rustup.join("toolchains"))?;
    fs::create_dir_all(&new_cargo_bin)?;
    run_command(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(rustup_home.join("toolchains").join(&stable))
            .arg(new_rustup.join("toolchains")),
    )?;
    fs::write(
        new_rustup.join("settings.toml"),
        format!(
            "version = \"12\"\ndefault_toolchain = \"{stable}\"\nprofile = \"default\"\n\
             auto_self_update = \"disable\"\n\n[overrides]\n"
        ),
    )?;
    fs::copy(cargo_home.join("bin/rustup"), new_cargo_bin.join("rustup"))?;
    for entry in fs::read_dir(cargo_home.join("bin"))?.flatten() {
        let is_proxy =
            fs::read_link(entry.path()).is_ok_and(|target| target == Path::new("rustup"));
        if is_proxy {
            std::os::unix::fs::symlink("rustup", new_cargo_bin.join(entry.file_name()))?;
        }
    }
    fs::write(
        root.join("root/.cargo/env"),
        "#!/bin/sh\n# rustup shell setup\ncase \":${PATH}:\" in\n    *:\"$HOME/.cargo/bin\":*)\n        ;;\n    *)\n        export PATH=\"$HOME/.cargo/bin:$PATH\"\n        ;;\nesac\n",
    )?;
    for file in ["root/.profile", "root/.bashrc"] {
        let path = root.join(file);
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str("\n. \"$HOME/.cargo/env\"\n");
        fs::write(&path, text)?;
    }
    Ok(())
}

fn clone(root: &Path) -> anyhow::Result<()> {
    let source = workspace_root();
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&source)
        .output()?;
    println!(
        "fresh-check: HEAD is {} (uncommitted changes are not in the clone)",
        String::from_utf8_lossy(&head.stdout).trim()
    );
    run_command(
        Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(&source)
            .arg(root.join(CLONE.trim_start_matches('/'))),
    )
}

/// Mounts what a booted machine has (proc, sys with its bpffs and cgroups,
/// dev with kmsg, a tmpfs run) in a private mount namespace, chroots and runs
/// `command` in the clone in a login shell, as root with a clean environment.
fn run_inside(root: &Path, command: &str) -> anyhow::Result<()> {
    const SCRIPT: &str = r#"
set -eu
root=$1
mount --make-rprivate /
# The root must be a mount point: `ip netns exec` remounts / as a slave.
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mkdir -p "$root/run/lock"
exec chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root TERM=dumb \
    LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -lc "cd $2 && $3"
"#;
    run_command(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                SCRIPT,
                "sh",
            ])
            .arg(root)
            .arg(CLONE)
            .arg(command),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_debian_mirror_in_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            debian_mirror(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let security_first = "deb http://security.debian.org/debian-security bookworm-security main\n\
                              deb [arch=amd64] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            debian_mirror(security_first).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            debian_mirror("deb https://packages.cloud.google.com/apt cloud-sdk main"),
            None
        );
    }

    #[test]
    fn mounts_below_the_root_are_found() {
        let mountinfo = "22 1 254:1 / / rw - ext4 /dev/vda rw\n\
                         30 22 0:5 / /var/tmp/x/root/dev rw - devtmpfs udev rw\n\
                         31 22 0:5 / /var/tmp/x/rootfs rw - devtmpfs udev rw\n";
        assert_eq!(
            mounts_below(mountinfo, Path::new("/var/tmp/x/root")),
            vec!["/var/tmp/x/root/dev".to_owned()]
        );
    }
}
