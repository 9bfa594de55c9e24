//! cls_bpf attachment for kernels without TCX, and recovery after a crash.
//!
//! TCX links die with the process that holds them. cls_bpf filters and the
//! clsact qdisc do not, so every filter and qdisc we add is written down in
//! `/run/pcap-agent/tc/<pid>` first. The next start removes whatever a dead
//! process wrote down.

use std::{
    fmt::Write as _,
    fs, io,
    path::{Path, PathBuf},
    process::Command,
};

use aya::programs::{
    Link as _, SchedClassifier, TcAttachType,
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
};
use thiserror::Error;
use tracing::{debug, warn};

use crate::{datapath::direction_name, iface::Interface};

const STATE_DIR: &str = "/run/pcap-agent/tc";

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

/// Filters and qdiscs this process added, detached on drop.
pub struct Attachments {
    state_path: PathBuf,
    filters: Vec<SchedClassifierLink>,
    /// Interfaces where we added the clsact qdisc ourselves.
    qdiscs: Vec<String>,
    state: String,
}

impl Attachments {
    /// Starts a record for this process.
    pub fn new() -> Result<Self, TcFallbackError> {
        let state_path = Path::new(STATE_DIR).join(std::process::id().to_string());
        fs::create_dir_all(STATE_DIR).map_err(|source| TcFallbackError::State {
            path: STATE_DIR.into(),
            source,
        })?;
        Ok(Self {
            state_path,
            filters: Vec::new(),
            qdiscs: Vec::new(),
            state: String::new(),
        })
    }

    /// Makes sure `interface` has a clsact qdisc, adding one if needed.
    pub fn prepare(&mut self, interface: &Interface) -> Result<(), TcFallbackError> {
        let name = &interface.name;
        match qdisc_kind(name).as_deref() {
            Some("clsact") => Ok(()),
            Some("ingress") => Err(TcFallbackError::EgressBehindIngressQdisc(name.clone())),
            _ => {
                self.record(&format!("qdisc {name}\n"))?;
                tc::qdisc_add_clsact(name).map_err(|source| TcFallbackError::Qdisc {
                    interface: name.clone(),
                    source: Box::new(source),
                })?;
                self.qdiscs.push(name.clone());
                Ok(())
            }
        }
    }

    /// Attaches `program` to one hook of a prepared interface.
    pub fn attach(
        &mut self,
        interface: &Interface,
        program: &mut SchedClassifier,
        attach_type: TcAttachType,
    ) -> Result<(), TcFallbackError> {
        let name = &interface.name;
        let attach_error = |source| TcFallbackError::Attach {
            interface: name.clone(),
            direction: direction_name(attach_type),
            source: Box::new(source),
        };
        // Priority 0 lets the kernel pick one ahead of existing filters.
        let id = program
            .attach_with_options(
                name,
                attach_type,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .map_err(attach_error)?;
        let link = program.take_link(id).map_err(attach_error)?;
        let priority = link.priority().map_err(attach_error)?;
        let handle = link.handle().map_err(attach_error)?;
        self.filters.push(link);
        self.record(&format!(
            "filter {name} {} {priority} {}\n",
            direction_name(attach_type),
            u32::from(handle)
        ))
    }

    fn record(&mut self, line: &str) -> Result<(), TcFallbackError> {
        self.state.push_str(line);
        fs::write(&self.state_path, &self.state).map_err(|source| TcFallbackError::State {
            path: self.state_path.clone(),
            source,
        })
    }

    /// Removes every filter and qdisc this process added.
    pub fn detach_all(&mut self) {
        for link in self.filters.drain(..) {
            if let Err(e) = link.detach() {
                warn!(error = %e, "detaching a tc filter");
            }
        }
        for interface in self.qdiscs.drain(..) {
            delete_clsact(&interface);
        }
        let _ = fs::remove_file(&self.state_path);
        self.state.clear();
    }
}

impl Drop for Attachments {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Removes the filters and qdiscs recorded by processes that no longer run.
pub fn recover_stale() {
    let Ok(entries) = fs::read_dir(STATE_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let Ok(state) = fs::read_to_string(&path) else {
            continue;
        };
        let mut summary = String::new();
        let mut qdiscs = Vec::new();
        for line in state.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["filter", interface, direction, priority, handle]
                    if detach_recorded(interface, direction, priority, handle) =>
                {
                    let _ = write!(summary, " {interface}/{direction}");
                }
                ["qdisc", interface] => qdiscs.push((*interface).to_owned()),
                _ => {}
            }
        }
        // Qdiscs last: they are only removed once our filters are gone.
        for interface in qdiscs {
            delete_clsact(&interface);
        }
        warn!(
            pid,
            removed = summary,
            "removed tc filters left by a dead pcap-agent"
        );
        let _ = fs::remove_file(&path);
    }
}

/// Detaches a filter as recorded in a state file; false if it was not there.
fn detach_recorded(interface: &str, direction: &str, priority: &str, handle: &str) -> bool {
    let attach_type = if direction == "egress" {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    };
    let (Ok(priority), Ok(handle)) = (priority.parse::<u16>(), handle.parse::<u32>()) else {
        return false;
    };
    SchedClassifierLink::attached(
        interface,
        attach_type,
        priority,
        TcHandle::from(handle),
        None,
    )
    .is_ok_and(|link| link.detach().is_ok())
}

/// The kind of the qdisc at handle ffff: (clsact or ingress), if any.
fn qdisc_kind(interface: &str) -> Option<String> {
    let output = Command::new("tc")
        .args(["qdisc", "show", "dev", interface])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            let (Some("qdisc"), Some(kind), Some("ffff:")) =
                (words.next(), words.next(), words.next())
            else {
                return None;
            };
            Some(kind.to_owned())
        })
}

/// Deletes our clsact qdisc from `interface` unless someone else's filters use it.
fn delete_clsact(interface: &str) {
    let in_use = ["ingress", "egress"].iter().any(|hook| {
        Command::new("tc")
            .args(["filter", "show", "dev", interface, hook])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    if in_use {
        debug!(interface, "clsact qdisc still has filters; leaving it");
        return;
    }
    let _ = Command::new("tc")
        .args(["qdisc", "del", "dev", interface, "clsact"])
        .status();
}
