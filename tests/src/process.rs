//! The binaries under test and reference tools, run as child processes that
//! are stopped on drop. Readiness is read from their stderr, never guessed.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// How long a tool may take to say it is listening.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of a workspace binary (built by `cargo build --bins`), found next to
/// the running executable or one directory up (tests live in `deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!("{name} is missing: run `cargo build --bins` (cargo xtask test does)")
        })
}

/// A running child whose stderr lines are collected.
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Starts `command` with stderr captured.
    pub fn spawn(command: &mut Command) -> anyhow::Result<Self> {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child: Some(child),
            stderr: rx,
            seen: Vec::new(),
        })
    }

    /// Waits for `count` stderr lines containing `needle`.
    pub fn wait_for(&mut self, needle: &str, count: usize) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while self.seen.iter().filter(|l| l.contains(needle)).count() < count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => bail!(
                    "no {needle:?} on stderr; it said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
        Ok(())
    }

    /// The child's stdout, if it was piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(self.pid(), signal).context("kill")
    }

    /// Waits for exit; returns the status and every stderr line.
    pub fn wait(mut self) -> anyhow::Result<(ExitStatus, Vec<String>)> {
        let status = self.child.take().expect("running").wait()?;
        self.seen.extend(self.stderr.iter());
        Ok((status, std::mem::take(&mut self.seen)))
    }

    /// Whether it has exited, without waiting.
    pub fn has_exited(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.as_mut().expect("running").try_wait()?.is_some())
    }

    /// SIGINT, then wait.
    pub fn interrupt(self) -> anyhow::Result<(ExitStatus, Vec<String>)> {
        self.signal(Signal::SIGINT)?;
        self.wait()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The number before `label` in a tool's stderr, e.g. "12 packets captured".
pub fn stat(lines: &[String], label: &str) -> Option<u64> {
    lines
        .iter()
        .find_map(|l| l.strip_suffix(label)?.trim().parse().ok())
}

/// Polls `condition` every few milliseconds until it holds, failing after
/// `timeout` with `what` in the message. For conditions that no event
/// announces, such as "this file holds that marker".
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    const POLL: Duration = Duration::from_millis(5);
    let deadline = std::time::Instant::now() + timeout;
    let (_never_sent, ticks) = mpsc::channel::<()>();
    while !condition()? {
        if std::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting until {what}");
        }
        let _ = ticks.recv_timeout(POLL);
    }
    Ok(())
}

/// Runs `command` to its end, its output going where ours goes; fails,
/// naming it, if it fails.
pub fn run_command(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    anyhow::ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// Runs `command` to its end with nothing on stdin, and fails with its
/// stderr unless it succeeds; `what` names it in the error.
pub fn run_ok(command: &mut Command, what: &str) -> anyhow::Result<std::process::Output> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

/// `pcap-agent ARGS` in `ns`, for runs that must end on their own (bad
/// input): killed after 30 s so that a regression fails instead of hanging.
pub fn agent_run(ns: &crate::netns::Netns, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let agent = binary("pcap-agent");
    ns.command("timeout")
        .args(["--signal=KILL", "30"])
        .arg(&agent)
        .args(args)
        .output()
        .with_context(|| format!("running {}", agent.display()))
}

/// Numeric fields of a `/proc/PID/stat` or `/proc/PID/task/TID/stat` line,
/// by their numbers in proc(5) (from 3 on: field 2, the command name, may
/// hold spaces and parentheses).
pub fn proc_stat<const N: usize>(path: &Path, numbers: [usize; N]) -> anyhow::Result<[u64; N]> {
    let stat =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, rest) = stat
        .rsplit_once(')')
        .with_context(|| format!("no ')' in {}", path.display()))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut values = [0; N];
    for (value, number) in values.iter_mut().zip(numbers) {
        let field = number
            .checked_sub(3)
            .and_then(|i| fields.get(i))
            .with_context(|| format!("no field {number} in {}", path.display()))?;
        *value = field
            .parse()
            .with_context(|| format!("field {number} of {}: {field:?}", path.display()))?;
    }
    Ok(values)
}

/// The scheduling policy (`SCHED_*`, field 41) of every thread of process
/// `pid`.
pub fn scheduling_policies(pid: Pid) -> anyhow::Result<Vec<u64>> {
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    std::fs::read_dir(&tasks)
        .with_context(|| format!("reading {}", tasks.display()))?
        .map(|task| Ok(proc_stat(&task?.path().join("stat"), [41])?[0]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_under_the_default_policy_and_field_2_is_refused() {
        let policies = scheduling_policies(Pid::this()).unwrap();
        assert!(!policies.is_empty());
        assert!(policies.iter().all(|p| *p == nix::libc::SCHED_OTHER as u64));
        let error = proc_stat(Path::new("/proc/self/stat"), [2]).unwrap_err();
        assert!(error.to_string().contains("no field 2"), "{error}");
    }
}
