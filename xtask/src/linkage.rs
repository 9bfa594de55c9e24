//! The guard that keeps `cargo xtask` buildable on a machine with nothing but
//! Rust: the xtask binary may need only the C runtime at run time. A
//! dependency that links a system library (libpcap through pcap-filter, for
//! one) adds a `DT_NEEDED` entry to its dynamic section, and then the README's
//! first command fails to link before `cargo xtask setup` could install the
//! library.

use std::path::Path;

use anyhow::{Context as _, bail};
use object::{
    Endianness, elf,
    read::elf::{ElfFile64, FileHeader as _},
};

/// What every Linux machine with glibc has: the libraries of the C runtime
/// (by name before the version, `libc.so.6` is `libc.so`) and the dynamic
/// loader.
const C_RUNTIME: &[&str] = &[
    "libc.so",
    "libm.so",
    "libgcc_s.so",
    "libpthread.so",
    "libdl.so",
    "librt.so",
    "libutil.so",
    "ld-linux-x86-64.so",
    "ld-linux-aarch64.so",
    "ld-linux.so",
];

/// Fails, naming them, when the running xtask binary needs libraries beyond
/// the C runtime.
pub fn check() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the running xtask binary")?;
    let foreign = beyond_c_runtime(&needed(&exe)?);
    if !foreign.is_empty() {
        bail!(
            "{} needs {} beyond the C runtime: a fresh machine cannot build or run it before \
             `cargo xtask setup`. Move whatever needs them out of xtask (into the pcap-lab \
             crate, lab/, which xtask runs after setup) and keep xtask's dependencies pure Rust.",
            exe.display(),
            foreign.join(", ")
        );
    }
    Ok(())
}

/// The `DT_NEEDED` entries of an ELF file's dynamic section (none for a
/// static binary).
pub fn needed(path: &Path) -> anyhow::Result<Vec<String>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = ElfFile64::<Endianness>::parse(data.as_slice())
        .with_context(|| format!("{} is not a 64-bit ELF file", path.display()))?;
    let endian = file.elf_header().endian()?;
    let table = file
        .elf_section_table()
        .dynamic_table(endian, data.as_slice())
        .with_context(|| format!("reading the dynamic section of {}", path.display()))?;
    table
        .iter()
        .filter(|entry| entry.tag == elf::DT_NEEDED)
        .map(|entry| {
            let name = table
                .string(entry)
                .with_context(|| format!("a DT_NEEDED name in {}", path.display()))?;
            Ok(String::from_utf8_lossy(name).into_owned())
        })
        .collect()
}

/// The libraries in `needed` that are not part of the C runtime.
fn beyond_c_runtime(needed: &[String]) -> Vec<String> {
    needed
        .iter()
        .filter(|library| {
            !C_RUNTIME.iter().any(|runtime| {
                library
                    .strip_prefix(runtime)
                    .is_some_and(|version| version.is_empty() || version.starts_with('.'))
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|&s| s.to_owned()).collect()
    }

    #[test]
    fn the_c_runtime_passes_and_anything_else_is_named() {
        let runtime = names(&[
            "libc.so.6",
            "libgcc_s.so.1",
            "libm.so.6",
            "ld-linux-x86-64.so.2",
            "libpthread.so.0",
            "libdl.so.2",
            "librt.so.1",
        ]);
        assert_eq!(beyond_c_runtime(&runtime), Vec::<String>::new());
        let mut with_pcap = runtime.clone();
        with_pcap.push("libpcap.so.0.8".to_owned());
        with_pcap.push("libcrypto.so.3".to_owned());
        // A library whose name merely starts like the C runtime's is not it.
        with_pcap.push("libcap.so.2".to_owned());
        with_pcap.push("libc.sos".to_owned());
        assert_eq!(
            beyond_c_runtime(&with_pcap),
            names(&[
                "libpcap.so.0.8",
                "libcrypto.so.3",
                "libcap.so.2",
                "libc.sos"
            ])
        );
    }

    #[test]
    fn reads_the_dynamic_section_of_a_real_binary() {
        // This test binary is linked like xtask: it needs libc, and only the
        // C runtime.
        let exe = std::env::current_exe().unwrap();
        let needed = needed(&exe).unwrap();
        assert!(
            needed.iter().any(|n| n == "libc.so.6"),
            "{needed:?} should name libc.so.6"
        );
        assert_eq!(beyond_c_runtime(&needed), Vec::<String>::new());
    }

    #[test]
    fn a_binary_linking_libpcap_is_refused() {
        // tcpdump (installed by setup, which `cargo xtask test` runs first)
        // links libpcap.
        let foreign = beyond_c_runtime(&needed(Path::new("/usr/bin/tcpdump")).unwrap());
        assert!(
            foreign.iter().any(|n| n.starts_with("libpcap.so")),
            "{foreign:?} should name libpcap"
        );
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error() {
        let err = needed(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/Cargo.toml"
        )))
        .unwrap_err();
        assert!(err.to_string().contains("not a 64-bit ELF file"), "{err:#}");
    }
}
