use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The rustup toolchain that `cargo xtask setup` links to Debian's rustc, the
/// compiler whose library sources `-Z build-std` needs.
const EBPF_TOOLCHAIN: &str = "pcap-bpf";

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "pcap-ebpf")
        .ok_or_else(|| anyhow!("pcap-ebpf package not found"))?;
    let root_dir = ebpf_package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("pcap-ebpf manifest has no parent"))?;
    // The eBPF build needs unstable flags (-Z build-std) from a stable compiler.
    // SAFETY: the build script has not started any other thread yet.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [Package {
            name: ebpf_package.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
