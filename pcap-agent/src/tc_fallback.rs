//! cls_bpf attachment for kernels without TCX, and recovery after a crash.
//!
//! TCX links die with the process that holds them. cls_bpf filters and the
//! clsact qdisc do not, so every capture in this mode writes down what it
//! attaches, before it attaches it, in a file of its own in
//! `/run/pcap-agent/tc/` (`<boot id>-<pid>-<start time>-<n>`), and holds an
//! exclusive `flock` on that file for as long as it runs. The lock is what
//! says the owner is alive: it works across PID namespaces (under bpm, or
//! `unshare --pid`, every agent may be PID 1) and is released by the kernel
//! however the process ends. A file whose lock can be taken belongs to a
//! capture that is gone; [`recover_stale`], run when `pcap-agent serve`
//! starts and before every capture attaches, removes exactly the filters
//! that capture attached (found by interface, direction and program id, so
//! a filter someone else added at the same priority is never touched).
//!
//! A clsact qdisc that a capture adds is marked with a file `qdisc-<network
//! namespace>-<ifindex>`. Whoever removes the last filter from a marked
//! qdisc (a capture ending, or a recovery) deletes the qdisc and its mark;
//! a qdisc that was there before is never deleted. Changes to qdiscs and
//! filters are serialised among all agents by a lock on
//! `/run/pcap-agent/tc/lock`.

use std::{
    fmt::Write as _,
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use aya::programs::{
    Link as _, SchedClassifier, TcAttachType,
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
};
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;
use tracing::{debug, warn};

use crate::{iface::Interface, rtnl::Rtnl};

const STATE_DIR: &str = "/run/pcap-agent/tc";
/// The lock that serialises qdisc and filter changes among agents.
const LOCK_FILE: &str = "lock";
/// Prefix of the files that mark the clsact qdiscs we added.
const QDISC_MARK: &str = "qdisc-";

#[derive(Debug, Error)]
pub enum TcFallbackError {
    #[error(
        "{0} has an `ingress` qdisc, which has no egress hook: capturing egress there needs \
         TCX (Linux 6.6 or later)"
    )]
    EgressBehindIngressQdisc(String),
    #[error("cannot attach to {direction} of {interface}: {source}")]
    Attach {
        interface: String,
        direction: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("cannot add a clsact qdisc to {interface}: {source}")]
    Qdisc {
        interface: String,
        #[source]
        source: Box<tc::TcError>,
    },
    #[error("cannot record attachments in {path}: {source}")]
    State { path: PathBuf, source: io::Error },
}

fn state_error(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> TcFallbackError {
    let path = path.into();
    move |source| TcFallbackError::State { path, source }
}

/// The name `tc filter show` and logs use for a hook.
pub(crate) fn direction_name(attach_type: TcAttachType) -> &'static str {
    match attach_type {
        TcAttachType::Ingress => "ingress",
        TcAttachType::Egress => "egress",
        TcAttachType::Custom(_) => "custom",
    }
}

/// The hook a state file's direction names: egress for "egress", else
/// ingress.
fn attach_type(direction: &str) -> TcAttachType {
    if direction == "egress" {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    }
}

/// Who we are, as the state files record it.
struct Identity {
    /// `/proc/sys/kernel/random/boot_id`: filters do not outlive a boot.
    boot: String,
    /// The inode of our network namespace: interface names and indexes
    /// mean something only within it.
    netns: u64,
}

impl Identity {
    fn current() -> io::Result<Self> {
        Ok(Self {
            boot: fs::read_to_string("/proc/sys/kernel/random/boot_id")?
                .trim()
                .to_owned(),
            netns: fs::metadata("/proc/self/ns/net")?.ino(),
        })
    }
}

/// Makes [`STATE_DIR`] if it is missing, owned like its parent: on BOSH
/// `/run/pcap-agent` belongs to privileges.file_user, as whom the agent
/// writes, and a root `pcap-agent capture` must not take the directory
/// from it.
fn state_dir() -> Result<(), TcFallbackError> {
    if Path::new(STATE_DIR).is_dir() {
        return Ok(());
    }
    fs::create_dir_all(STATE_DIR).map_err(state_error(STATE_DIR))?;
    if let Some(parent) = Path::new(STATE_DIR).parent()
        && let Ok(owner) = fs::metadata(parent)
    {
        let _ = std::os::unix::fs::chown(STATE_DIR, Some(owner.uid()), Some(owner.gid()));
    }
    Ok(())
}

/// Holds the lock on [`LOCK_FILE`] until dropped.
struct AgentsLock(#[expect(dead_code, reason = "held for its Drop")] Flock<File>);

impl AgentsLock {
    /// Waits for the other agents' qdisc and filter changes.
    fn take() -> Result<Self, TcFallbackError> {
        state_dir()?;
        let path = Path::new(STATE_DIR).join(LOCK_FILE);
        // flock needs no write access: a lock file made by an agent running
        // as root can be taken by one whose file-system user is
        // privileges.file_user, and the other way round.
        let file = match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o644)
                .open(&path),
            opened => opened,
        }
        .map_err(state_error(&path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(Self)
            .map_err(|(_, errno)| state_error(&path)(errno.into()))
    }
}

/// Filters and qdiscs one capture attached, detached on drop.
pub struct Attachments {
    state_path: PathBuf,
    /// The capture's state file, locked for as long as the capture runs.
    state: Flock<File>,
    identity: Identity,
    /// The filters, with the index of their interface.
    filters: Vec<(u32, SchedClassifierLink)>,
    /// Interfaces we attached to (name, ifindex), for the qdisc clean-up.
    interfaces: Vec<(String, u32)>,
    /// Holds [`AgentsLock`] from [`Self::begin`] until [`Self::end`].
    changing: Option<AgentsLock>,
}

impl Attachments {
    /// Starts a record for one capture: a new, locked state file.
    pub fn new() -> Result<Self, TcFallbackError> {
        state_dir()?;
        let identity = Identity::current().map_err(state_error("/proc"))?;
        let pid = std::process::id();
        let start = start_time().unwrap_or_default();
        for n in 0.. {
            let name = format!("{}-{pid}-{start}-{n}", identity.boot);
            let state_path = Path::new(STATE_DIR).join(&name);
            // Created and locked under a name recovery does not read, then
            // renamed: no one ever sees the file unlocked.
            let creating = Path::new(STATE_DIR).join(format!(".{name}"));
            // Readable by every agent (root, or privileges.file_user), for recovery.
            let file = match OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o644)
                .open(&creating)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(state_error(creating)(e)),
            };
            let mut state = Flock::lock(file, FlockArg::LockExclusiveNonblock)
                .map_err(|(_, errno)| state_error(&creating)(errno.into()))?;
            writeln!(state, "boot {}\nnetns {}", identity.boot, identity.netns)
                .map_err(state_error(&creating))?;
            if state_path.exists() {
                let _ = fs::remove_file(&creating);
                continue;
            }
            fs::rename(&creating, &state_path).map_err(state_error(&state_path))?;
            return Ok(Self {
                state_path,
                state,
                identity,
                filters: Vec::new(),
                interfaces: Vec::new(),
                changing: None,
            });
        }
        unreachable!("some file name is free")
    }

    /// Waits until no other agent changes qdiscs or filters, until [`Self::end`].
    pub fn begin(&mut self) -> Result<(), TcFallbackError> {
        if self.changing.is_none() {
            self.changing = Some(AgentsLock::take()?);
        }
        Ok(())
    }

    /// Lets other agents change qdiscs and filters again.
    pub fn end(&mut self) {
        self.changing = None;
    }

    /// Makes sure `interface` has a clsact qdisc, adding (and marking) one
    /// if needed.
    pub fn prepare(&mut self, interface: &Interface) -> Result<(), TcFallbackError> {
        let name = &interface.name;
        if !self
            .interfaces
            .iter()
            .any(|(_, index)| *index == interface.index)
        {
            self.interfaces.push((name.clone(), interface.index));
        }
        match qdisc_kind(interface.index).as_deref() {
            Some("clsact") => Ok(()),
            Some("ingress") => Err(TcFallbackError::EgressBehindIngressQdisc(name.clone())),
            _ => {
                let mark = qdisc_mark(self.identity.netns, interface.index);
                fs::write(&mark, format!("{} {name}\n", self.identity.boot))
                    .map_err(state_error(&mark))?;
                tc::qdisc_add_clsact(name).map_err(|source| {
                    let _ = fs::remove_file(&mark);
                    TcFallbackError::Qdisc {
                        interface: name.clone(),
                        source: Box::new(source),
                    }
                })
            }
        }
    }

    /// Attaches `program` to one hook of a prepared interface, after
    /// recording it.
    pub fn attach(
        &mut self,
        interface: &Interface,
        program: &mut SchedClassifier,
        attach_type: TcAttachType,
    ) -> Result<(), TcFallbackError> {
        let name = &interface.name;
        let direction = direction_name(attach_type);
        let attach_error = |source| TcFallbackError::Attach {
            interface: name.clone(),
            direction,
            source: Box::new(source),
        };
        let id = program.info().map_err(attach_error)?.id();
        self.record(&format!(
            "attach {name} {} {direction} {id}\n",
            interface.index
        ))?;
        // Priority 0 lets the kernel pick one ahead of existing filters.
        let link_id = program
            .attach_with_options(
                name,
                attach_type,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .map_err(attach_error)?;
        let link = program.take_link(link_id).map_err(attach_error)?;
        self.filters.push((interface.index, link));
        Ok(())
    }

    /// Forgets what was attached to interface `index`, which is gone: its
    /// filters and its qdisc went with it (and its mark goes now).
    pub fn forget(&mut self, index: u32) {
        for (_, link) in self.filters.extract_if(.., |(i, _)| *i == index) {
            // Dropping it would ask the kernel to detach it, from an index
            // that another interface may have by now.
            std::mem::forget(link);
        }
        self.interfaces.retain(|(_, i)| *i != index);
        let _ = fs::remove_file(qdisc_mark(self.identity.netns, index));
    }

    fn record(&mut self, line: &str) -> Result<(), TcFallbackError> {
        self.state
            .write_all(line.as_bytes())
            .map_err(state_error(&self.state_path))
    }

    /// Removes every filter this capture added, and the marked qdiscs no
    /// filter uses any more.
    pub fn detach_all(&mut self) {
        if self.filters.is_empty() && self.interfaces.is_empty() {
            self.changing = None;
            let _ = fs::remove_file(&self.state_path);
            return;
        }
        let lock = match self.changing.take() {
            Some(lock) => Ok(lock),
            None => AgentsLock::take(),
        };
        if let Err(e) = &lock {
            warn!(error = %e, "detaching tc filters without the agents' lock");
        }
        for (_, link) in self.filters.drain(..) {
            if let Err(e) = link.detach() {
                warn!(error = %e, "detaching a tc filter");
            }
        }
        for (interface, index) in self.interfaces.drain(..) {
            remove_unused_qdisc(&interface, index, self.identity.netns);
        }
        let _ = fs::remove_file(&self.state_path);
        drop(lock);
    }
}

impl Drop for Attachments {
    fn drop(&mut self) {
        self.detach_all();
        // The state file's lock goes with `state`.
    }
}

/// Removes the filters and qdiscs of captures that no longer run: every
/// state file whose lock can be taken.
pub fn recover_stale() {
    let Ok(entries) = fs::read_dir(STATE_DIR) else {
        return;
    };
    let mut stale: Vec<(PathBuf, Flock<File>)> = Vec::new();
    let mut marks = false;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        marks |= name.starts_with(QDISC_MARK);
        if name == LOCK_FILE || name.starts_with(QDISC_MARK) {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        // Held: its capture is alive (in this process or any other).
        let Ok(locked) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        stale.push((path, locked));
    }
    if stale.is_empty() && !marks {
        return;
    }
    let identity = match Identity::current() {
        Ok(identity) => identity,
        Err(e) => {
            warn!(error = %e, "cannot recover tc filters of dead captures");
            return;
        }
    };
    let Ok(_lock) = AgentsLock::take() else {
        return;
    };
    for (path, mut file) in stale {
        // Removed by another recovery since we listed it.
        if file.metadata().is_ok_and(|m| m.nlink() == 0) {
            continue;
        }
        let mut text = String::new();
        if file.read_to_string(&mut text).is_err() {
            continue;
        }
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            // Died while creating its file: it attached nothing.
            let _ = fs::remove_file(&path);
            continue;
        }
        let state = State::parse(&text);
        if state.boot.is_none() && recover_legacy(&path, &text) {
            continue;
        }
        if state.boot.as_deref() != Some(identity.boot.as_str()) {
            // From before a reboot: its filters went with it.
            let _ = fs::remove_file(&path);
            continue;
        }
        if state.netns != Some(identity.netns) {
            debug!(path = %path.display(), "tc state of another network namespace");
            continue;
        }
        let mut removed = String::new();
        let mut interfaces: Vec<(&str, u32)> = Vec::new();
        for attach in &state.attached {
            if Interface::lookup(attach.interface).map(|i| i.index).ok() != Some(attach.index) {
                continue; // The interface is gone, and its filters with it.
            }
            let count = remove_filters_of(
                attach.interface,
                attach.index,
                attach.direction,
                attach.program,
            );
            if count > 0 {
                let _ = write!(removed, " {}/{}", attach.interface, attach.direction);
            }
            if !interfaces.contains(&(attach.interface, attach.index)) {
                interfaces.push((attach.interface, attach.index));
            }
        }
        for (interface, index) in interfaces {
            remove_unused_qdisc(interface, index, identity.netns);
        }
        let _ = fs::remove_file(&path);
        warn!(
            state = %path.display(),
            removed = removed.trim_start(),
            "removed tc filters left by a pcap-agent capture that no longer runs"
        );
    }
    remove_orphaned_qdiscs(&identity);
}

/// A state file of an agent before this format, `/run/pcap-agent/tc/<pid>`
/// with `filter IFACE DIRECTION PRIORITY HANDLE` and `qdisc IFACE` lines:
/// removed as that agent would have, once no process has that PID. Returns
/// whether `path` was such a file.
fn recover_legacy(path: &Path, text: &str) -> bool {
    let Some(pid) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return false;
    };
    if Path::new(&format!("/proc/{pid}")).exists() {
        return true;
    }
    let mut qdiscs = Vec::new();
    for line in text.lines() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["filter", interface, direction, priority, handle] => {
                if let (Ok(priority), Ok(handle)) = (priority.parse(), handle.parse::<u32>())
                    && let Ok(link) = SchedClassifierLink::attached(
                        interface,
                        attach_type(direction),
                        priority,
                        TcHandle::from(handle),
                        None,
                    )
                {
                    let _ = link.detach();
                }
            }
            ["qdisc", interface] => qdiscs.push(interface),
            _ => {}
        }
    }
    for interface in qdiscs {
        if let Ok(interface) = Interface::lookup(interface) {
            delete_clsact_if_unused(interface.index);
        }
    }
    let _ = fs::remove_file(path);
    warn!(state = %path.display(), "removed tc filters left by an older pcap-agent");
    true
}

/// What a state file records.
#[derive(Debug, Default, PartialEq, Eq)]
struct State<'a> {
    boot: Option<String>,
    netns: Option<u64>,
    attached: Vec<Attached<'a>>,
}

/// One `attach` line: a program attached (or about to be) to a hook.
#[derive(Debug, PartialEq, Eq)]
struct Attached<'a> {
    interface: &'a str,
    index: u32,
    direction: &'a str,
    program: u32,
}

impl<'a> State<'a> {
    fn parse(text: &'a str) -> Self {
        let mut state = State::default();
        for line in text.lines() {
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["boot", boot] => state.boot = Some(boot.to_owned()),
                ["netns", netns] => state.netns = netns.parse().ok(),
                [
                    "attach",
                    interface,
                    index,
                    direction @ ("ingress" | "egress"),
                    program,
                ] => {
                    if let (Ok(index), Ok(program)) = (index.parse(), program.parse()) {
                        state.attached.push(Attached {
                            interface,
                            index,
                            direction,
                            program,
                        });
                    }
                }
                _ => {}
            }
        }
        state
    }
}

/// Detaches the filters on one hook of `interface` that run `program`;
/// returns how many.
fn remove_filters_of(interface: &str, index: u32, direction: &str, program: u32) -> usize {
    let attach_type = attach_type(direction);
    let filters = Rtnl::open().and_then(|mut rtnl| rtnl.filters(index, attach_type));
    let filters = match filters {
        Ok(filters) => filters,
        Err(e) => {
            warn!(interface, direction, error = %e, "cannot list tc filters");
            return 0;
        }
    };
    filters
        .into_iter()
        .flatten()
        .filter(|f| f.program == Some(program))
        .filter(|f| {
            SchedClassifierLink::attached(
                interface,
                attach_type,
                f.priority,
                TcHandle::from(f.handle),
                None,
            )
            .is_ok_and(|link| link.detach().is_ok())
        })
        .count()
}

fn qdisc_mark(netns: u64, index: u32) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{QDISC_MARK}{netns}-{index}"))
}

/// Deletes the clsact qdisc of `interface` if one of us added it (it is
/// marked) and no filter uses it any more; forgets the mark of an interface
/// that is gone. Call with [`AgentsLock`] held.
fn remove_unused_qdisc(interface: &str, index: u32, netns: u64) {
    let mark = qdisc_mark(netns, index);
    if !mark.exists() {
        return;
    }
    if Interface::lookup(interface).map(|i| i.index).ok() != Some(index) {
        // The qdisc went with its interface.
        let _ = fs::remove_file(mark);
        return;
    }
    if delete_clsact_if_unused(index) {
        let _ = fs::remove_file(mark);
    } else {
        debug!(interface, "clsact qdisc still has filters; leaving it");
    }
}

/// Deletes the clsact qdisc of interface `index` unless a filter (of any
/// kind) is left on either of its hooks; returns false, deleting nothing,
/// when one is or the filters cannot be listed.
fn delete_clsact_if_unused(index: u32) -> bool {
    let Ok(mut rtnl) = Rtnl::open() else {
        return false;
    };
    let in_use = [TcAttachType::Ingress, TcAttachType::Egress]
        .into_iter()
        .any(|hook| !rtnl.filters(index, hook).is_ok_and(|f| f.is_empty()));
    if in_use {
        return false;
    }
    if let Err(e) = rtnl.delete_clsact(index) {
        debug!(index, error = %e, "deleting the clsact qdisc");
    }
    true
}

/// Marked qdiscs of this network namespace whose capture died before it
/// recorded an attachment (or whose interface is gone). Call with
/// [`AgentsLock`] held.
fn remove_orphaned_qdiscs(identity: &Identity) {
    let Ok(entries) = fs::read_dir(STATE_DIR) else {
        return;
    };
    let prefix = format!("{QDISC_MARK}{}-", identity.netns);
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(index) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut words = text.split_whitespace();
        let (Some(boot), Some(interface)) = (words.next(), words.next()) else {
            let _ = fs::remove_file(&path);
            continue;
        };
        let same =
            boot == identity.boot && Interface::lookup(interface).is_ok_and(|i| i.index == index);
        if same {
            remove_unused_qdisc(interface, index, identity.netns);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

/// The kind of the qdisc at handle ffff: (clsact or ingress), if any.
fn qdisc_kind(index: u32) -> Option<String> {
    match Rtnl::open().and_then(|mut rtnl| rtnl.ingress_qdisc_kind(index)) {
        Ok(kind) => kind,
        Err(e) => {
            warn!(index, error = %e, "cannot list qdiscs");
            None
        }
    }
}

/// This process's start time, in clock ticks after boot (field 22 of
/// `/proc/self/stat`): with the PID, it names the process within a boot.
fn start_time() -> Option<u64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_state_files() {
        let state = State::parse(
            "boot 1234-abcd\nnetns 4026531840\nattach veth0 7 ingress 356265\n\
             attach veth0 7 egress 356266\nattach veth0 x egress 1\nnonsense\n",
        );
        assert_eq!(state.boot.as_deref(), Some("1234-abcd"));
        assert_eq!(state.netns, Some(4_026_531_840));
        assert_eq!(
            state.attached,
            [
                Attached {
                    interface: "veth0",
                    index: 7,
                    direction: "ingress",
                    program: 356_265
                },
                Attached {
                    interface: "veth0",
                    index: 7,
                    direction: "egress",
                    program: 356_266
                },
            ]
        );
    }

    #[test]
    fn reads_the_start_time() {
        assert!(start_time().is_some_and(|t| t > 0));
    }
}
