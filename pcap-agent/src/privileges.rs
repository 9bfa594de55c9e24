//! Least privilege: the Linux capabilities eBPF capture needs, a check that
//! the process holds them, and, for `pcap-agent serve` with
//! `[privileges] keep`, dropping every other capability for good.
//!
//! Capture needs `CAP_BPF` (load the program, create its maps),
//! `CAP_PERFMON` (the verifier accepts the filter programs' variable-offset
//! stack reads only with it) and `CAP_NET_ADMIN` (attach to the
//! traffic-control hooks). [`enforce`] runs before any thread exists, because
//! capabilities belong to a thread and threads inherit them from their
//! creator: after it, every capability not kept is gone from the effective,
//! permitted and bounding sets, the inheritable and ambient sets are empty,
//! and `no_new_privs` is set, so not even an `execve` of a set-uid or
//! file-capability program (c2c insight runs `iptables-save`) can gain more.
//!
//! With `file_user`, files are opened as that user and its group (the
//! file-system uid and gid, and the only supplementary group), while the
//! process stays uid 0: silk's container metadata store belongs to `vcap`
//! with mode 0600, and root without `CAP_DAC_OVERRIDE` could not read it,
//! while `iptables-save`, which `execve` runs with the file-system ids reset to root,
//! gets the kept capabilities from the bounding set without any inheritable
//! or ambient ones.

use std::collections::HashSet;

use caps::{CapSet, Capability, CapsHashSet, errors::CapsError};
use nix::{
    sys::{
        prctl,
        resource::{RLIM_INFINITY, Resource, setrlimit},
    },
    unistd::{User, setfsgid, setfsuid, setgroups},
};
use serde::Deserialize;
use thiserror::Error;
use tracing::info;

/// The names of [`NEEDED`]: `CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN`.
pub fn needed_names() -> String {
    let names: Vec<String> = NEEDED.iter().map(|(cap, _)| cap.to_string()).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// What capture needs, and why (for the error that names a missing one).
pub const NEEDED: [(Capability, &str); 3] = [
    (
        Capability::CAP_BPF,
        "to load its eBPF program and create its maps",
    ),
    (
        Capability::CAP_PERFMON,
        "to have its filter programs verified (variable-offset stack reads)",
    ),
    (
        Capability::CAP_NET_ADMIN,
        "to attach to the traffic-control hooks of interfaces",
    ),
];

/// `[privileges]` of the `serve` configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivilegesConfig {
    /// Capabilities to keep (`"BPF"` or `"CAP_BPF"`); every other one is
    /// dropped at start. Absent: drop nothing, only check [`NEEDED`].
    pub keep: Option<Vec<String>>,
    /// Raise `RLIMIT_MEMLOCK` to unlimited before dropping: kernels before
    /// 5.11 charge eBPF maps to it. Needs `CAP_SYS_RESOURCE` at start only.
    pub raise_memlock_rlimit: bool,
    /// Open files as this user and its group (with `keep` only).
    pub file_user: Option<String>,
}

impl PrivilegesConfig {
    /// The capabilities `keep` names, checked: known names that include all
    /// of [`NEEDED`]. `Err` names the key (`privileges.keep` or
    /// `privileges.file_user`) and what is wrong.
    pub fn keep_set(&self) -> Result<Option<CapsHashSet>, (&'static str, String)> {
        const KEEP: &str = "privileges.keep";
        let Some(names) = &self.keep else {
            if self.file_user.is_some() {
                return Err((
                    "privileges.file_user",
                    "takes effect only with privileges.keep; give keep too".to_owned(),
                ));
            }
            return Ok(None);
        };
        if self
            .file_user
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            return Err((
                "privileges.file_user",
                "is empty: name a user, or leave it out to open files as root".to_owned(),
            ));
        }
        let mut set = CapsHashSet::new();
        for name in names {
            set.insert(parse(name).map_err(|e| (KEEP, e))?);
        }
        for (needed, why) in NEEDED {
            if !set.contains(&needed) {
                return Err((
                    KEEP,
                    format!(
                        "lacks {}, which pcap-agent needs {why}; keep at least BPF, PERFMON \
                         and NET_ADMIN",
                        short(needed)
                    ),
                ));
            }
        }
        Ok(Some(set))
    }
}

#[derive(Debug, Error)]
pub enum PrivilegeError {
    /// Names every missing capability and what the process has.
    #[error("{0}")]
    Missing(String),
    #[error("the kernel does not know {0}: pcap-agent needs Linux 5.8 or later")]
    UnknownToKernel(Capability),
    #[error("{0}: {1}")]
    Config(&'static str, String),
    #[error("cannot {step}: {source}")]
    Caps {
        step: &'static str,
        #[source]
        source: CapsError,
    },
    #[error(
        "cannot drop {0} from the bounding set without CAP_SETPCAP: start pcap-agent as root \
         (the BOSH job's ctl script does) or remove [privileges] keep"
    )]
    NoSetpcap(String),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] nix::Error),
    #[error(
        "privileges.raise_memlock_rlimit: cannot raise RLIMIT_MEMLOCK to unlimited \
         (that needs CAP_SYS_RESOURCE at start): {0}"
    )]
    Memlock(#[source] nix::Error),
    #[error(
        "capabilities are per thread, and this process already has {0} threads: \
         drop them before starting any"
    )]
    Threads(usize),
    #[error("privileges.file_user: there is no user {0:?} on this machine")]
    NoUser(String),
    #[error("privileges.file_user: cannot look up {0:?}: {1}")]
    LookUp(String, #[source] nix::Error),
    #[error("privileges.file_user: cannot set the supplementary groups: {0}")]
    Groups(#[source] nix::Error),
    #[error("after dropping, the {set} set holds {actual}, not {expected}")]
    Verify {
        set: &'static str,
        actual: String,
        expected: String,
    },
}

/// For `serve`: with `keep`, [`restrict`] to it; without, [`check_effective`].
/// Call it before starting any thread.
pub fn enforce(config: &PrivilegesConfig) -> Result<(), PrivilegeError> {
    match config
        .keep_set()
        .map_err(|(key, message)| PrivilegeError::Config(key, message))?
    {
        None => check_effective(&CapsHashSet::new()),
        Some(keep) => {
            restrict(
                &keep,
                config.raise_memlock_rlimit,
                config.file_user.as_deref(),
            )?;
            info!(
                kept = names(&keep),
                "dropped every other capability; no_new_privs is set"
            );
            Ok(())
        }
    }
}

/// Fails unless the effective set holds [`NEEDED`] and `also`, with a
/// message naming each missing capability and why it is needed.
pub fn check_effective(also: &CapsHashSet) -> Result<(), PrivilegeError> {
    let supported = caps::runtime::thread_all_supported();
    for (needed, _) in NEEDED {
        if !supported.contains(&needed) {
            return Err(PrivilegeError::UnknownToKernel(needed));
        }
    }
    let effective = read(CapSet::Effective)?;
    match missing_message(&effective, also) {
        None => Ok(()),
        Some(message) => Err(PrivilegeError::Missing(message)),
    }
}

/// The error for an `effective` set that lacks some of [`NEEDED`] and
/// `also`, or `None` when it holds them all.
fn missing_message(effective: &CapsHashSet, also: &CapsHashSet) -> Option<String> {
    let mut missing = Vec::new();
    for (needed, why) in NEEDED {
        if !effective.contains(&needed) {
            missing.push(format!("{needed} {why}"));
        }
    }
    let mut extra: Vec<_> = also
        .iter()
        .filter(|c| !effective.contains(c) && !NEEDED.iter().any(|(n, _)| n == *c))
        .collect();
    extra.sort_by_key(|c| c.index());
    for c in extra {
        missing.push(format!("{c} as [privileges] keep lists it"));
    }
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "pcap-agent needs {}; it has: {}. Start it as root, or with these \
         capabilities in its effective set",
        missing.join(", and "),
        names(effective)
    ))
}

/// Keeps exactly `keep` in the effective, permitted and bounding sets,
/// empties the inheritable and ambient sets and sets `no_new_privs`, then
/// reads every set back to make sure. With `raise_memlock`, first raises
/// `RLIMIT_MEMLOCK` to unlimited; with `file_user`, first makes that user
/// and its group the file-system ids and the only supplementary group.
pub fn restrict(
    keep: &CapsHashSet,
    raise_memlock: bool,
    file_user: Option<&str>,
) -> Result<(), PrivilegeError> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count);
    if threads > 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    check_effective(keep)?;
    if raise_memlock {
        setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY)
            .map_err(PrivilegeError::Memlock)?;
    }
    // While CAP_SETUID and CAP_SETGID are still held.
    let file_ids = file_user.map(switch_file_ids).transpose()?;
    let bounding = read(CapSet::Bounding)?;
    let mut drop: Vec<Capability> = bounding.difference(keep).copied().collect();
    drop.sort_by_key(Capability::index);
    if !drop.is_empty() && !read(CapSet::Effective)?.contains(&Capability::CAP_SETPCAP) {
        return Err(PrivilegeError::NoSetpcap(list(&drop)));
    }
    for cap in drop {
        caps::drop(None, CapSet::Bounding, cap).map_err(|source| PrivilegeError::Caps {
            step: "drop a capability from the bounding set",
            source,
        })?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|source| PrivilegeError::Caps {
        step: "clear the ambient set",
        source,
    })?;
    let empty = CapsHashSet::new();
    let steps: [(&str, CapSet, &CapsHashSet); 3] = [
        ("clear the inheritable set", CapSet::Inheritable, &empty),
        // Effective first: it must stay within the permitted set.
        ("reduce the effective set", CapSet::Effective, keep),
        ("reduce the permitted set", CapSet::Permitted, keep),
    ];
    for (step, set, value) in steps {
        caps::set(None, set, value).map_err(|source| PrivilegeError::Caps { step, source })?;
    }
    prctl::set_no_new_privs().map_err(PrivilegeError::NoNewPrivs)?;
    verify(keep, file_ids)
}

/// The file-system uid and gid (and the groups) of `name`, for this thread
/// and the threads it starts from now on.
fn switch_file_ids(name: &str) -> Result<(u32, u32), PrivilegeError> {
    let user = User::from_name(name)
        .map_err(|e| PrivilegeError::LookUp(name.to_owned(), e))?
        .ok_or_else(|| PrivilegeError::NoUser(name.to_owned()))?;
    setgroups(&[user.gid]).map_err(PrivilegeError::Groups)?;
    // Neither call reports failure; `verify` reads the ids back.
    setfsgid(user.gid);
    setfsuid(user.uid);
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// Reads every set back: exactly `keep` where kept, nothing elsewhere; and
/// the file-system ids and groups when `file_ids` is given.
fn verify(keep: &CapsHashSet, file_ids: Option<(u32, u32)>) -> Result<(), PrivilegeError> {
    let empty = CapsHashSet::new();
    for (name, set, expected) in [
        ("effective", CapSet::Effective, keep),
        ("permitted", CapSet::Permitted, keep),
        ("bounding", CapSet::Bounding, keep),
        ("inheritable", CapSet::Inheritable, &empty),
        ("ambient", CapSet::Ambient, &empty),
    ] {
        let actual = read(set)?;
        if &actual != expected {
            return Err(PrivilegeError::Verify {
                set: name,
                actual: names(&actual),
                expected: names(expected),
            });
        }
    }
    if !prctl::get_no_new_privs().map_err(PrivilegeError::NoNewPrivs)? {
        return Err(PrivilegeError::Verify {
            set: "no_new_privs",
            actual: "0".to_owned(),
            expected: "1".to_owned(),
        });
    }
    if let Some((uid, gid)) = file_ids {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
        for (field, expected) in [
            ("Uid", format!("0\t0\t0\t{uid}")),
            ("Gid", format!("0\t0\t0\t{gid}")),
            ("Groups", format!("{gid} ")),
        ] {
            let actual = status
                .lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(":\t"))
                .unwrap_or_default();
            if actual.trim_end() != expected.trim_end() {
                return Err(PrivilegeError::Verify {
                    set: field,
                    actual: actual.to_owned(),
                    expected,
                });
            }
        }
    }
    Ok(())
}

fn read(set: CapSet) -> Result<CapsHashSet, PrivilegeError> {
    caps::read(None, set).map_err(|source| PrivilegeError::Caps {
        step: "read this process's capabilities",
        source,
    })
}

/// `"BPF"`, `"bpf"` or `"CAP_BPF"`.
fn parse(name: &str) -> Result<Capability, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    format!("CAP_{bare}").parse().map_err(|_| {
        format!("{name:?} is not a capability name (for example \"BPF\" or \"NET_ADMIN\")")
    })
}

/// `BPF` for `CAP_BPF`.
fn short(cap: Capability) -> String {
    let name = cap.to_string();
    name.strip_prefix("CAP_").unwrap_or(&name).to_owned()
}

/// `CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF`, in the kernel's order.
fn names(set: &HashSet<Capability>) -> String {
    let mut sorted: Vec<Capability> = set.iter().copied().collect();
    sorted.sort_by_key(Capability::index);
    if sorted.is_empty() {
        return "none".to_owned();
    }
    list(&sorted)
}

fn list(caps: &[Capability]) -> String {
    caps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keep: &[&str]) -> PrivilegesConfig {
        PrivilegesConfig {
            keep: Some(keep.iter().map(|s| (*s).to_owned()).collect()),
            raise_memlock_rlimit: false,
            file_user: None,
        }
    }

    #[test]
    fn needed_names_read_as_a_sentence() {
        assert_eq!(needed_names(), "CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN");
    }

    #[test]
    fn names_are_accepted_with_or_without_the_prefix() {
        let set = config(&["BPF", "cap_perfmon", "CAP_NET_ADMIN", "sys_resource"])
            .keep_set()
            .unwrap()
            .unwrap();
        assert_eq!(
            names(&set),
            "CAP_NET_ADMIN, CAP_SYS_RESOURCE, CAP_PERFMON, CAP_BPF"
        );
        assert_eq!(PrivilegesConfig::default().keep_set(), Ok(None));
    }

    #[test]
    fn unknown_names_and_missing_needs_are_refused_naming_them() {
        let err = config(&["BPF", "PERFMON", "NET_ADMIN", "FLY"])
            .keep_set()
            .unwrap_err();
        assert_eq!(err.0, "privileges.keep");
        assert!(
            err.1.contains("\"FLY\" is not a capability name"),
            "{err:?}"
        );
        let err = config(&["BPF", "NET_ADMIN"]).keep_set().unwrap_err();
        assert!(
            err.1.starts_with("lacks PERFMON, which pcap-agent needs"),
            "{err:?}"
        );
        let mut with_user = config(&["BPF", "PERFMON", "NET_ADMIN"]);
        with_user.file_user = Some(" ".to_owned());
        assert_eq!(with_user.keep_set().unwrap_err().0, "privileges.file_user");
        with_user.keep = None;
        with_user.file_user = Some("vcap".to_owned());
        assert_eq!(with_user.keep_set().unwrap_err().0, "privileges.file_user");
    }

    #[test]
    fn a_missing_capability_is_named_with_its_purpose_and_what_is_held() {
        let set = |caps: &[Capability]| caps.iter().copied().collect::<CapsHashSet>();
        let all = set(&[
            Capability::CAP_BPF,
            Capability::CAP_PERFMON,
            Capability::CAP_NET_ADMIN,
        ]);
        assert_eq!(missing_message(&all, &all), None);
        let message = missing_message(
            &set(&[Capability::CAP_NET_ADMIN, Capability::CAP_PERFMON]),
            &CapsHashSet::new(),
        )
        .unwrap();
        assert!(
            message.starts_with(
                "pcap-agent needs CAP_BPF to load its eBPF program and create its maps; \
                 it has: CAP_NET_ADMIN, CAP_PERFMON."
            ),
            "{message}"
        );
        let message =
            missing_message(&CapsHashSet::new(), &set(&[Capability::CAP_SYS_RESOURCE])).unwrap();
        assert!(message.contains("CAP_BPF to load"), "{message}");
        assert!(message.contains(", and CAP_PERFMON to have"), "{message}");
        assert!(
            message.contains(", and CAP_NET_ADMIN to attach"),
            "{message}"
        );
        assert!(
            message.contains(", and CAP_SYS_RESOURCE as [privileges] keep lists it; it has: none."),
            "{message}"
        );
    }
}
