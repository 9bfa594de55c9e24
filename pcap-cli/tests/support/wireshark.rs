//! Reading captures back with Wireshark's `tshark` and `capinfos`, for the
//! unit tests of `sink` and for the end-to-end tests.
//!
//! Both tools must be on `PATH` (Debian: `apt-get install tshark`); the
//! tests fail, rather than skip, without them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One row per packet of the given `tshark -T fields` fields, joined by
/// `|`. Hex flags (`0x00000001`) are turned into decimal, so that rows do not
/// depend on how a tshark version pads them.
pub fn tshark_rows(file: &Path, fields: &[&str]) -> Vec<String> {
    let mut args = vec!["-r", path_str(file), "-T", "fields"];
    for field in fields {
        args.extend(["-e", field]);
    }
    run("tshark", &args)
        .lines()
        .map(|line| line.split('\t').map(decimal).collect::<Vec<_>>().join("|"))
        .collect()
}

/// Fields of tshark's dissection of the pcapng file itself (one row holding
/// every block), one string per field; repeated values are joined by `,`.
pub fn tshark_block_fields(file: &Path, fields: &[&str]) -> Vec<String> {
    let mut args = vec![
        "-X",
        "read_format:MIME Files Format",
        "-r",
        path_str(file),
        "-T",
        "fields",
    ];
    for field in fields {
        args.extend(["-e", field]);
    }
    let output = run("tshark", &args);
    let row = output.lines().next().unwrap_or_default();
    row.split('\t').map(str::to_owned).collect()
}

/// The value of `name` in `capinfos -M FILE`, e.g. `Number of packets`.
pub fn capinfos_value(file: &Path, name: &str) -> String {
    let info = run("capinfos", &["-M", path_str(file)]);
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.trim_start().strip_prefix(':'))
        .map_or_else(
            || panic!("no {name:?} in capinfos output:\n{info}"),
            |value| value.trim().to_owned(),
        )
}

fn decimal(value: &str) -> String {
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap().to_string(),
        None => value.to_owned(),
    }
}

/// Runs `tool`; its standard output, or the test fails.
fn run(tool: &str, args: &[&str]) -> String {
    let output = match Command::new(tool).args(args).output() {
        Ok(output) => output,
        Err(error) => panic!("cannot run `{tool}` (apt-get install tshark): {error}"),
    };
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "`{tool} {}` failed with {}:\n{stdout}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// A path in the temporary directory, removed when dropped.
pub struct ScratchFile(pub PathBuf);

impl ScratchFile {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "pcap-cli-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self(std::env::temp_dir().join(unique))
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
