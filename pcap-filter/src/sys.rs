//! The `bpf(2)` system call: loading programs, running them on test input,
//! and the program arrays they tail-call through.
//!
//! The attribute structs follow `union bpf_attr` in `<linux/bpf.h>`, cut
//! after the last field each command needs; the kernel zero-fills the rest.

use std::{
    ffi::{CString, c_long},
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use thiserror::Error;

use crate::ebpf::{Insn, program_bytes};

/// `BPF_PROG_TYPE_SOCKET_FILTER`.
pub const PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `BPF_PROG_TYPE_SCHED_CLS`.
pub const PROG_TYPE_SCHED_CLS: u32 = 3;

/// `BPF_MAP_TYPE_PROG_ARRAY`.
const MAP_TYPE_PROG_ARRAY: u32 = 3;

/// Size of `struct __sk_buff`, the context of socket and TC programs.
pub const SK_BUFF_SIZE: usize = 192;

/// Commands.
const BPF_MAP_CREATE: c_long = 0;
const BPF_MAP_UPDATE_ELEM: c_long = 2;
const BPF_PROG_LOAD: c_long = 5;
const BPF_PROG_TEST_RUN: c_long = 10;

/// `BPF_LOG_STATS`: the verifier logs only its statistics.
const LOG_STATS: u32 = 4;

/// Verifier log sizes to try, in turn, when a load fails.
const LOG_SIZES: [usize; 2] = [1 << 20, 1 << 24];

/// The `BPF_PROG_LOAD` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_TEST_RUN` part of `union bpf_attr` (`attr.test`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The `BPF_MAP_CREATE` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The `BPF_MAP_*_ELEM` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Calls `bpf(cmd, attr, sizeof attr)`.
fn bpf<T>(cmd: c_long, attr: &mut T) -> io::Result<c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of union
    // bpf_attr for `cmd`, and its size is passed; any pointers inside it
    // point at buffers the caller keeps alive for the duration of the call.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a file descriptor the kernel just returned.
fn owned_fd(fd: c_long) -> OwnedFd {
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// How much of the verifier's log a [`LoadError`]'s message shows: the
/// end, where the verifier says why it refused the program. The whole log
/// (up to 16 MiB) is in [`LoadError::log`], for a debug log.
pub const SHOWN_LOG_BYTES: usize = 2048;

/// Why the kernel did not load a program.
///
/// Its message shows at most the last [`SHOWN_LOG_BYTES`] of the verifier's
/// log, so that it fits a log line or a gRPC status.
#[derive(Debug, Error)]
#[error("the kernel rejected the BPF program: {source}{}", log_tail(log))]
pub struct LoadError {
    /// The error `BPF_PROG_LOAD` returned.
    #[source]
    pub source: io::Error,
    /// The verifier's log (log level 1), empty if the load failed before
    /// verification (e.g. for lack of privilege). Up to 16 MiB.
    pub log: String,
}

/// The end of a verifier log, at most [`SHOWN_LOG_BYTES`] from a line
/// start, after a newline; with a note of how much was left out. Empty for
/// an empty log. This is what [`LoadError`]'s message shows.
pub fn log_tail(log: &str) -> String {
    let log = log.trim_end();
    if log.is_empty() {
        return String::new();
    }
    if log.len() <= SHOWN_LOG_BYTES {
        return format!("\n{log}");
    }
    let mut start = log.len() - SHOWN_LOG_BYTES;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    if let Some(newline) = log[start..].find('\n') {
        start += newline + 1;
    }
    format!(
        "\n[the verifier's log is {} bytes; its last {} follow]\n{}",
        log.len(),
        log.len() - start,
        &log[start..]
    )
}

/// Loads a program of `prog_type` (e.g. [`PROG_TYPE_SCHED_CLS`]).
///
/// `name` is truncated to 15 bytes; `license` is e.g. `"GPL"`. On failure
/// the load is retried with a verifier log, which the error carries.
pub fn prog_load(
    prog_type: u32,
    insns: &[Insn],
    license: &str,
    name: &str,
) -> Result<OwnedFd, LoadError> {
    let code = program_bytes(insns);
    let license = c_license(license)?;
    let mut attr = load_attr(prog_type, &code, &license, name);
    let first = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => return Ok(owned_fd(fd)),
        Err(e) => e,
    };
    // EPERM: no privilege, so no verification either. (The verifier's own
    // refusals are EACCES or EINVAL.)
    if first.raw_os_error() == Some(libc::EPERM) {
        return Err(LoadError {
            source: first,
            log: String::new(),
        });
    }
    let mut failure = LoadError {
        source: first,
        log: String::new(),
    };
    for size in LOG_SIZES {
        let mut log = vec![0u8; size];
        attr.log_level = 1;
        attr.log_size = size as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
        match bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => return Ok(owned_fd(fd)),
            Err(source) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let full = source.raw_os_error() != Some(libc::ENOSPC);
                failure = LoadError {
                    source,
                    log: String::from_utf8_lossy(&log[..end]).into_owned(),
                };
                if full {
                    break;
                }
            }
        }
    }
    Err(failure)
}

/// Loads like [`prog_load`], and returns the verifier's statistics as it
/// writes them (log level `BPF_LOG_STATS`): "processed N insns (limit
/// 1000000) max_states_per_insn ...", what verifying the program cost.
pub fn prog_load_with_stats(
    prog_type: u32,
    insns: &[Insn],
    license: &str,
    name: &str,
) -> Result<(OwnedFd, String), LoadError> {
    let code = program_bytes(insns);
    let c_license = c_license(license)?;
    let mut attr = load_attr(prog_type, &code, &c_license, name);
    let mut log = vec![0u8; 1 << 16];
    attr.log_level = LOG_STATS;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Ok((
                owned_fd(fd),
                String::from_utf8_lossy(&log[..end]).into_owned(),
            ))
        }
        // Load again for the error with its whole log.
        Err(_) => prog_load(prog_type, insns, license, name).map(|fd| (fd, String::new())),
    }
}

/// `license` for the kernel.
fn c_license(license: &str) -> Result<CString, LoadError> {
    CString::new(license).map_err(|_| LoadError {
        source: io::Error::from(io::ErrorKind::InvalidInput),
        log: "license contains a NUL byte".into(),
    })
}

/// The `BPF_PROG_LOAD` attributes for `code`, without a log; `code` and
/// `license` must outlive the call.
fn load_attr(prog_type: u32, code: &[u8], license: &CString, name: &str) -> ProgLoadAttr {
    let mut prog_name = [0u8; 16];
    for (to, from) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *to = from;
    }
    ProgLoadAttr {
        prog_type,
        insn_cnt: (code.len() / 8) as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        ..ProgLoadAttr::default()
    }
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The program's return value (-1 reads as `u32::MAX`).
    pub retval: u32,
    /// Mean run time per repetition, in nanoseconds.
    pub duration_ns: u32,
    /// The context after the run (`struct __sk_buff`), if one was passed in.
    pub ctx_out: Vec<u8>,
    /// The packet after the run.
    pub data_out: Vec<u8>,
}

/// Runs a loaded program `repeat` times (0 counts as 1) on `data`.
///
/// For socket and TC programs the data must be at least 14 bytes and at
/// most a page less the kernel's headroom and tailroom (3,520 to 3,776
/// bytes, depending on the kernel); TC programs see all of it, socket
/// filters what follows the first 14 bytes. `ctx_in` is a
/// `struct __sk_buff` ([`SK_BUFF_SIZE`] bytes) in which the kernel accepts
/// nonzero values only in `mark`, `priority`, `ingress_ifindex`, `ifindex`
/// (of an existing device), `cb`, `tstamp`, `wire_len`, `gso_segs`,
/// `gso_size` and `hwtstamp`.
pub fn prog_test_run(
    prog_fd: BorrowedFd<'_>,
    data: &[u8],
    ctx_in: Option<&[u8]>,
    repeat: u32,
) -> io::Result<TestRunOutput> {
    let mut data_out = vec![0u8; data.len() + 256];
    let mut ctx_out = vec![0u8; ctx_in.map_or(0, <[u8]>::len)];
    let mut attr = TestRunAttr {
        prog_fd: prog_fd.as_raw_fd() as u32,
        data_size_in: data.len() as u32,
        data_size_out: data_out.len() as u32,
        data_in: data.as_ptr() as u64,
        data_out: data_out.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    if let Some(ctx) = ctx_in {
        attr.ctx_size_in = ctx.len() as u32;
        attr.ctx_in = ctx.as_ptr() as u64;
        attr.ctx_size_out = ctx_out.len() as u32;
        attr.ctx_out = ctx_out.as_mut_ptr() as u64;
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    data_out.truncate(attr.data_size_out as usize);
    ctx_out.truncate(attr.ctx_size_out as usize);
    Ok(TestRunOutput {
        retval: attr.retval,
        duration_ns: attr.duration,
        ctx_out,
        data_out,
    })
}

/// Creates a `BPF_MAP_TYPE_PROG_ARRAY` with `max_entries` slots.
pub fn map_create_prog_array(max_entries: u32) -> io::Result<OwnedFd> {
    let mut map_name = [0u8; 16];
    map_name[..9].copy_from_slice(b"pcap_next");
    let mut attr = MapCreateAttr {
        map_type: MAP_TYPE_PROG_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries,
        map_name,
        ..MapCreateAttr::default()
    };
    bpf(BPF_MAP_CREATE, &mut attr).map(owned_fd)
}

/// Puts the program `value_fd` into slot `key` of the program array `map_fd`.
pub fn map_update(map_fd: BorrowedFd<'_>, key: u32, value_fd: BorrowedFd<'_>) -> io::Result<()> {
    let value = value_fd.as_raw_fd() as u32;
    let mut attr = MapElemAttr {
        map_fd: map_fd.as_raw_fd() as u32,
        key: std::ptr::from_ref(&key) as u64,
        value: std::ptr::from_ref(&value) as u64,
        ..MapElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn messages_show_the_end_of_long_logs() {
        let error = |log: String| {
            LoadError {
                source: io::Error::from_raw_os_error(libc::EACCES),
                log,
            }
            .to_string()
        };
        assert_eq!(
            error("0: R1=ctx\nbad access\n".into()),
            "the kernel rejected the BPF program: Permission denied (os error 13)\n0: R1=ctx\nbad access"
        );
        let mut long = String::new();
        for i in 0..200_000 {
            long.push_str(&i.to_string());
            long.push_str(
                ": (b7) r0 = 0
",
            );
        }
        let message = error(format!(
            "{long}invalid bpf_context access off=9999 size=8\n"
        ));
        assert!(message.len() < SHOWN_LOG_BYTES + 200, "{}", message.len());
        assert!(message.ends_with("\ninvalid bpf_context access off=9999 size=8"));
        assert!(message.contains("[the verifier's log is "), "{message}");
        // Starts at a line, and never splits a character.
        let shown = message.split_once("follow]\n").unwrap().1;
        assert!(shown.lines().next().unwrap().contains(": (b7) r0 = 0"));
        assert!(error("é".repeat(3000)).ends_with('é'));
        assert_eq!(
            error(String::new()),
            "the kernel rejected the BPF program: Permission denied (os error 13)"
        );
    }

    /// Offsets from `offsetof(union bpf_attr, ...)` in `<linux/bpf.h>`.
    #[test]
    fn layouts_match_the_uapi_header() {
        assert_eq!(offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(ProgLoadAttr, kern_version), 40);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, prog_ifindex), 64);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(offset_of!(TestRunAttr, ctx_size_in), 40);
        assert_eq!(offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(offset_of!(TestRunAttr, flags), 64);
        assert_eq!(offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(size_of::<TestRunAttr>(), 80);
        assert_eq!(offset_of!(MapCreateAttr, numa_node), 24);
        assert_eq!(offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(offset_of!(MapElemAttr, key), 8);
        assert_eq!(offset_of!(MapElemAttr, value), 16);
        assert_eq!(offset_of!(MapElemAttr, flags), 24);
    }
}
