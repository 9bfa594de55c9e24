//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` one after
//! another, each for a stated time, and reports executions, corpus size and
//! crashes (see docs/fuzzing.md).
//!
//! Only shells out: cargo-fuzz needs a nightly compiler (libFuzzer's
//! `-Z sanitizer` instrumentation), and `fuzz/` is a workspace of its own.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{run_command, workspace_root};

/// The cargo-fuzz release `cargo xtask fuzz` installs and uses.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The rustup toolchain cargo-fuzz builds with. Commands run `cargo` from
/// PATH (rustup's proxy, which understands `+nightly`), not `env!("CARGO")`,
/// the stable cargo that built xtask.
const TOOLCHAIN: &str = "+nightly";

/// Targets that load eBPF programs, so need root (CAP_BPF, CAP_PERFMON).
const KERNEL_TARGETS: &[&str] = &["translate", "compile"];

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Fuzz only this target (see `fuzz/Cargo.toml`); every target when
    /// not given.
    #[arg(long)]
    target: Option<String>,
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Build the targets, fuzz nothing.
    #[arg(long)]
    build_only: bool,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    set_up()?;
    let all = list_targets(&root)?;
    let targets: Vec<String> = match &options.target {
        Some(target) if all.contains(target) => vec![target.clone()],
        Some(target) => bail!(
            "no fuzz target {target:?}; the targets are: {}",
            all.join(", ")
        ),
        None => all,
    };
    let needs_root: Vec<&str> = targets
        .iter()
        .map(String::as_str)
        .filter(|t| KERNEL_TARGETS.contains(t))
        .collect();
    if !needs_root.is_empty() && !nix::unistd::geteuid().is_root() && !options.build_only {
        bail!(
            "the fuzz targets {} load eBPF programs and need root: run as root, \
             or choose another target with --target",
            needs_root.join(", ")
        );
    }
    run_command(
        Command::new("cargo")
            .arg(TOOLCHAIN)
            .args(["fuzz", "build"])
            .args(FUZZ_FLAGS)
            .current_dir(&root),
    )?;
    if options.build_only {
        return Ok(());
    }
    let mut results = Vec::new();
    for target in &targets {
        results.push(fuzz(&fuzz_dir, target, options.seconds)?);
    }
    println!(
        "\n{:<16} {:>8} {:>12} {:>14} {:>12}  result",
        "target", "seconds", "executions", "corpus inputs", "corpus KiB"
    );
    for r in &results {
        println!(
            "{:<16} {:>8} {:>12} {:>14} {:>12}  {}",
            r.target,
            r.seconds,
            r.executions
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            r.corpus_files,
            r.corpus_bytes / 1024,
            r.failure.as_deref().unwrap_or("ok")
        );
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.failure.is_some())
        .map(|r| r.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzzing found problems in {}: see fuzz/logs/ and fuzz/artifacts/",
            failed.join(", ")
        );
    }
    Ok(())
}

/// How the targets are built and run: no sanitizer (the code under test is
/// safe Rust and an uninstrumented libpcap; ASan would only halve the
/// executions), but debug assertions, so overflows panic.
const FUZZ_FLAGS: &[&str] = &["--sanitizer", "none", "--debug-assertions"];

/// Checks for the nightly toolchain and installs the pinned cargo-fuzz.
fn set_up() -> anyhow::Result<()> {
    let nightly = Command::new("cargo")
        .args([TOOLCHAIN, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run cargo")?;
    if !nightly.success() {
        bail!(
            "cargo-fuzz needs a nightly compiler: install one with \
             `rustup toolchain install nightly --profile minimal`"
        );
    }
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    if !installed.contains(CARGO_FUZZ_VERSION) {
        run_command(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    Ok(())
}

fn list_targets(root: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("cargo")
        .args([TOOLCHAIN, "fuzz", "list"])
        .current_dir(root)
        .output()
        .context("cannot run cargo fuzz list")?;
    if !out.status.success() {
        bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

struct Outcome {
    target: String,
    seconds: u64,
    executions: Option<u64>,
    corpus_files: usize,
    corpus_bytes: u64,
    /// Why the run failed; `None` when it found nothing.
    failure: Option<String>,
}

/// Fuzzes `target` for `seconds`, with its corpus in `fuzz/corpus/TARGET`
/// (kept between runs, not committed), the committed seeds in
/// `fuzz/seeds/TARGET` and the dictionary `fuzz/dicts/TARGET.dict` if there
/// are any; libFuzzer's output goes to `fuzz/logs/TARGET.log`.
fn fuzz(fuzz_dir: &Path, target: &str, seconds: u64) -> anyhow::Result<Outcome> {
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
    let logs = fuzz_dir.join("logs");
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)?;
    println!(
        "fuzzing {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let mut command = Command::new("cargo");
    command
        .arg(TOOLCHAIN)
        .args(["fuzz", "run"])
        .args(FUZZ_FLAGS)
        .arg(target)
        .arg(&corpus);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    command.args([
        "--".to_owned(),
        format!("-max_total_time={seconds}"),
        // A compile or a test run that takes this long is a hang.
        "-timeout=20".to_owned(),
        "-rss_limit_mb=4096".to_owned(),
        "-print_final_stats=1".to_owned(),
        // Reach long inputs (long programs, many messages) within minutes.
        "-len_control=10".to_owned(),
    ]);
    if dict.is_file() {
        command.arg(format!("-dict={}", dict.display()));
    }
    let started = Instant::now();
    let status = command
        .current_dir(fuzz_dir.parent().expect("fuzz/ is in the workspace"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let executions = text
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok());
    // libFuzzer's own time, without the build: "Done 1234 runs in 300 second(s)".
    let fuzzed_seconds = text
        .lines()
        .find_map(|l| l.strip_prefix("Done "))
        .and_then(|l| l.split(" in ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let (corpus_files, corpus_bytes) = dir_size(&corpus);
    let failure = if status.success() {
        None
    } else {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!(
            "{target} failed ({status}); the end of {}:\n{}",
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        Some(format!(
            "FAILED: {status}, see {}",
            artifact_dir(fuzz_dir, target).display()
        ))
    };
    Ok(Outcome {
        target: target.to_owned(),
        seconds: fuzzed_seconds.unwrap_or_else(|| started.elapsed().as_secs()),
        executions,
        corpus_files,
        corpus_bytes,
        failure,
    })
}

fn artifact_dir(fuzz_dir: &Path, target: &str) -> PathBuf {
    fuzz_dir.join("artifacts").join(target)
}

/// Files and bytes in a corpus directory.
fn dir_size(dir: &Path) -> (usize, u64) {
    fs::read_dir(dir).map_or((0, 0), |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(fs::Metadata::is_file)
            .fold((0, 0), |(n, bytes), m| (n + 1, bytes + m.len()))
    })
}
