//! The four libpcap functions the compiler needs. All of the crate's
//! libpcap `unsafe` is here.

use std::{
    ffi::{CStr, CString, c_char, c_int, c_uint},
    ptr::{self, NonNull},
    sync::{LazyLock, Mutex, MutexGuard},
};

use crate::cbpf::CbpfInsn;

/// `pcap_t`, opaque.
#[repr(C)]
struct PcapT {
    _private: [u8; 0],
}

/// `struct bpf_program` from `<pcap/bpf.h>`; [`CbpfInsn`] is its
/// `struct bpf_insn`.
#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut CbpfInsn,
}

#[link(name = "pcap")]
unsafe extern "C" {
    fn pcap_open_dead(linktype: c_int, snaplen: c_int) -> *mut PcapT;
    fn pcap_compile(
        p: *mut PcapT,
        fp: *mut BpfProgram,
        expression: *const c_char,
        optimize: c_int,
        netmask: u32,
    ) -> c_int;
    fn pcap_geterr(p: *mut PcapT) -> *mut c_char;
    fn pcap_freecode(fp: *mut BpfProgram);
    fn pcap_close(p: *mut PcapT);
    fn pcap_lib_version() -> *const c_char;
}

/// Serialises calls into the compiler of a libpcap older than 1.8, which
/// kept the parser's state in globals. From 1.8 on (`CHANGES`: "pcap_compile()
/// in 1.8.0 and later is newly thread-safe") each call has its own scanner
/// and compiler state, and the lookups of port and protocol names use
/// `getaddrinfo(NULL, ...)` and `getprotobyname_r`, so compiles run in
/// parallel and one slow compile holds up no other.
static OLD_COMPILER: Mutex<()> = Mutex::new(());

/// Whether the libpcap we run with is older than 1.8.
static SERIALISE: LazyLock<bool> = LazyLock::new(|| {
    // SAFETY: pcap_lib_version returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(pcap_lib_version()) };
    !thread_safe(&version.to_string_lossy())
});

/// Whether `pcap_lib_version()`'s text ("libpcap version 1.10.3 ...")
/// names 1.8 or later; false when it cannot be read.
fn thread_safe(version: &str) -> bool {
    let numbers = version
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()));
    let mut parts = numbers
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 8),
        _ => false,
    }
}

/// Why [`compile`] failed.
pub enum Failure {
    /// `pcap_open_dead` returned NULL.
    OpenDead,
    /// `pcap_compile` failed with this message from `pcap_geterr`.
    Compile(String),
}

/// A `pcap_t` from `pcap_open_dead`, closed on drop.
struct Dead(NonNull<PcapT>);

impl Drop for Dead {
    fn drop(&mut self) {
        // SAFETY: the handle came from pcap_open_dead and is closed once.
        unsafe { pcap_close(self.0.as_ptr()) };
    }
}

/// Compiles `expression` with `pcap_compile` on a dead handle of link type
/// `dlt` (a `DLT_` value) and snapshot length `snaplen`.
pub fn compile(
    expression: &CString,
    dlt: c_int,
    snaplen: c_int,
    optimize: bool,
    netmask: u32,
) -> Result<Vec<CbpfInsn>, Failure> {
    let _guard: Option<MutexGuard<'_, ()>> = SERIALISE.then(|| {
        OLD_COMPILER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    });
    // SAFETY: pcap_open_dead takes plain integers and returns a new handle or NULL.
    let handle = NonNull::new(unsafe { pcap_open_dead(dlt, snaplen) }).ok_or(Failure::OpenDead)?;
    let dead = Dead(handle);
    let mut program = BpfProgram {
        bf_len: 0,
        bf_insns: ptr::null_mut(),
    };
    // SAFETY: the handle is valid, `program` is a writable bpf_program, and
    // the expression is NUL-terminated and outlives the call.
    let status = unsafe {
        pcap_compile(
            dead.0.as_ptr(),
            &raw mut program,
            expression.as_ptr(),
            c_int::from(optimize),
            netmask,
        )
    };
    if status != 0 {
        // SAFETY: pcap_geterr returns the handle's NUL-terminated error
        // buffer, valid until the handle is closed; we copy it before that.
        let message = unsafe { CStr::from_ptr(pcap_geterr(dead.0.as_ptr())) };
        return Err(Failure::Compile(message.to_string_lossy().into_owned()));
    }
    let insns = if program.bf_insns.is_null() {
        Vec::new()
    } else {
        // SAFETY: on success bf_insns points at bf_len instructions that
        // stay valid until pcap_freecode.
        unsafe { std::slice::from_raw_parts(program.bf_insns, program.bf_len as usize) }.to_vec()
    };
    // SAFETY: `program` was filled by a successful pcap_compile and is freed once.
    unsafe { pcap_freecode(&raw mut program) };
    Ok(insns)
}

#[link(name = "pcap")]
unsafe extern "C" {
    fn bpf_filter(pc: *const CbpfInsn, p: *const u8, wirelen: c_uint, buflen: c_uint) -> c_uint;
}

/// libpcap's interpreter, `bpf_filter`: the reference for [`crate::interp`]
/// (its tests and the fuzz targets). `program` must pass
/// [`crate::cbpf::validate`]: libpcap aborts on an unknown opcode and
/// trusts the program to stay inside itself.
///
/// # Panics
///
/// When `program` does not pass [`crate::cbpf::validate`].
pub fn filter(program: &[CbpfInsn], packet: &[u8], wirelen: u32) -> u32 {
    assert!(
        crate::cbpf::validate(program).is_ok(),
        "only valid programs go to libpcap"
    );
    // SAFETY: `program` is valid (checked above: known opcodes, jumps
    // inside it, a final return) and laid out as libpcap's instructions;
    // bpf_filter reads at most `buflen` bytes of `packet`; both live across
    // the call.
    unsafe {
        bpf_filter(
            program.as_ptr(),
            packet.as_ptr(),
            wirelen,
            packet.len() as c_uint,
        )
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn reads_the_version() {
        assert!(thread_safe("libpcap version 1.10.3 (with TPACKET_V3)"));
        assert!(thread_safe("libpcap version 1.8.0"));
        assert!(!thread_safe("libpcap version 1.7.4"));
        assert!(!thread_safe("something else"));
        assert!(!*SERIALISE, "Debian 12's libpcap 1.10 compiles in parallel");
    }
}
