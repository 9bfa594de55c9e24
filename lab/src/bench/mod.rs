//! `cargo xtask bench`: local capture against tcpdump, the in-kernel filter
//! against the kernel's classic BPF, the distributed path against local
//! and against bare TLS over the same hops (its floor),
//! start time, `-i any` start and stop with many interfaces, apps'
//! throughput, and how the cost scales with captures and
//! agents. Writes docs/bench.md (and the scaling plot, docs/bench-scaling.svg):
//! its tables replace the part above [`NOTES_MARKER`], and the notes below
//! it (analyses, profiles, the history of each figure) are kept.

mod apps;
mod attach;
mod capture;
mod distributed;
mod filter;
mod floor;
mod scaling;

use std::fmt::Write as _;
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use pcap_tests::process::wait_until;

use crate::{cargo, workspace_root};

/// One measured run of a capture path: packets offered and captured, drops
/// reported, and the capturing side's CPU time.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    offered: u64,
    captured: u64,
    dropped: u64,
    cpu: Duration,
}

#[derive(Debug, Args)]
pub struct Options {
    /// Runs per tool and packet size (alternating which tool goes first).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Packets per run for 64-byte frames (1518-byte runs send half as many).
    #[arg(long, default_value_t = 2_000_000)]
    packets: u64,
    /// Where to write the report.
    #[arg(long, default_value = "docs/bench.md")]
    out: std::path::PathBuf,
    /// Run only these parts (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
}

/// The parts of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// The in-kernel filter against classic BPF.
    Filter,
    /// Local capture against tcpdump.
    Capture,
    /// Agent → API → CLI against local.
    Distributed,
    /// How long a capture takes to start across 10 agents.
    Start,
    /// How long `-i any` takes to start and stop with 101 interfaces,
    /// through TCX and through tc, against tcpdump.
    Attach,
    /// An app's TCP throughput while a capture runs on its veth.
    Apps,
    /// CPU per packet and drops as captures per agent (1 to 8) and agents
    /// per API (1 to 10) grow; also draws docs/bench-scaling.svg.
    Scaling,
}

/// The line of the report after which its notes begin. A run rewrites
/// what is above it and keeps what is below it.
const NOTES_MARKER: &str =
    "<!-- cargo xtask bench rewrites everything above this line and keeps everything below it. -->";

/// A part that appends its section to the report.
type RunPart = fn(&Options, &mut String) -> anyhow::Result<()>;

/// The parts that run the release binaries, in the order they run.
const RELEASE_PARTS: [(Part, RunPart); 6] = [
    (Part::Capture, capture::run),
    (Part::Distributed, distributed::run),
    (Part::Start, distributed::run_start),
    (Part::Attach, attach::run),
    (Part::Apps, apps::run),
    (Part::Scaling, scaling::run),
];

pub fn run(options: &Options) -> anyhow::Result<()> {
    let mut report = String::new();
    writeln!(report, "# Benchmarks\n")?;
    writeln!(
        report,
        "Produced by `cargo xtask bench --runs {} --packets {}{}` on {} ({} CPUs), Linux {}.\n",
        options.runs,
        options.packets,
        if options.only.is_empty() {
            String::new()
        } else {
            format!(
                " --only {}",
                options
                    .only
                    .iter()
                    .map(|p| format!("{p:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        },
        cpu_model()?,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    )?;
    let wanted = |part| options.only.is_empty() || options.only.contains(&part);
    if wanted(Part::Filter) {
        filter::run(&mut report)?;
    }
    if RELEASE_PARTS.iter().any(|&(part, _)| wanted(part)) {
        cargo(&["build", "--release", "--bins"])?;
    }
    for (part, run) in RELEASE_PARTS {
        if wanted(part) {
            run(options, &mut report)?;
        }
    }
    let out = workspace_root().join(&options.out);
    let notes = match std::fs::read_to_string(&out) {
        Ok(existing) => notes_of(&existing).to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    };
    std::fs::write(&out, with_notes(&report, &notes))
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{report}");
    Ok(())
}

/// What follows [`NOTES_MARKER`] in `existing` (nothing without it).
fn notes_of(existing: &str) -> &str {
    existing
        .split_once(NOTES_MARKER)
        .map_or("", |(_, notes)| notes.trim_start_matches('\n'))
}

/// The report, the marker, then the notes.
fn with_notes(report: &str, notes: &str) -> String {
    format!("{}\n\n{NOTES_MARKER}\n\n{notes}", report.trim_end())
}

/// The median of `values` (the upper one of an even count); NaN when empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Removes the last run's capture file, if any, before a tool writes
/// `file` again: truncating it on open would charge the tool for freeing
/// its pages (tens of thousands of tmpfs pages at 2 M packets).
fn remove_last(file: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", file.display()))
        }
        _ => Ok(()),
    }
}

/// What `read` gives once it has not changed for `quiet` (within a
/// minute): a file that stops growing, a process that goes idle.
fn steady<T: PartialEq>(
    what: &str,
    quiet: Duration,
    mut read: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut last = (read()?, Instant::now());
    wait_until(what, Duration::from_mins(1), || {
        let now = read()?;
        if now != last.0 {
            last = (now, Instant::now());
        }
        Ok(last.1.elapsed() > quiet)
    })?;
    Ok(last.0)
}

fn cpu_model() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_replaces_the_tables_and_keeps_the_notes() {
        let first = with_notes("# Benchmarks\n\nold table\n", "");
        assert!(first.ends_with(&format!("{NOTES_MARKER}\n\n")));
        let curated = format!("{first}## Why\n\nthe analysis\n");
        let second = with_notes("# Benchmarks\n\nnew table\n", notes_of(&curated));
        assert_eq!(
            second,
            format!("# Benchmarks\n\nnew table\n\n{NOTES_MARKER}\n\n## Why\n\nthe analysis\n")
        );
        assert_eq!(
            with_notes("a\n", notes_of(&second)),
            with_notes("a\n", notes_of(&curated))
        );
    }

    #[test]
    fn a_file_without_the_marker_keeps_nothing() {
        assert_eq!(notes_of("# Benchmarks\n\nhand-written\n"), "");
    }
}
