//! libpcap's interpreter, `bpf_filter` (pcap-filter's binding, the
//! reference for `pcap_filter::interp`), and stand-ins for the resolver
//! functions libpcap calls. All of this crate's `unsafe` is here.

use std::{
    ffi::{c_char, c_int, c_void},
    ptr,
    sync::atomic::{AtomicU32, Ordering},
};

/// Runs a program with libpcap's `bpf_filter`; the program must pass
/// `pcap_filter::cbpf::validate` (it panics otherwise).
pub use pcap_filter::libpcap_filter as filter;

/// Name lookups libpcap attempted, counted by the resolver functions
/// below. The fuzz binaries define these C functions themselves, so that
/// libpcap's calls reach them instead of the C library's (the executable
/// comes first in the dynamic linker's search; `build.rs` exports them):
/// no lookup leaves the process, and a compile that tried one is caught.
pub static NAME_LOOKUPS: AtomicU32 = AtomicU32::new(0);

/// glibc's `EAI_NONAME`.
const EAI_NONAME: c_int = -2;

fn looked_up() {
    NAME_LOOKUPS.fetch_add(1, Ordering::SeqCst);
}

/// glibc's `AI_NUMERICHOST`: parse an address, never look a name up.
const AI_NUMERICHOST: c_int = 4;

/// glibc's `RTLD_NEXT`.
const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;

/// `struct addrinfo` (glibc, x86_64).
#[repr(C)]
#[expect(clippy::struct_field_names, reason = "the C names")]
#[derive(Clone, Copy)]
pub struct AddrInfo {
    ai_flags: c_int,
    ai_family: c_int,
    ai_socktype: c_int,
    ai_protocol: c_int,
    ai_addrlen: u32,
    ai_addr: *mut c_void,
    ai_canonname: *mut c_char,
    ai_next: *mut AddrInfo,
}

unsafe extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

type GetAddrInfo =
    unsafe extern "C" fn(*const c_char, *const c_char, *const AddrInfo, *mut *mut c_void) -> c_int;

/// `getaddrinfo(3)`. libpcap also parses addresses with it (IPv6
/// literals, with and without `AI_NUMERICHOST`; `getaddrinfo(NULL, port)`
/// for service names): a call without a host, with `AI_NUMERICHOST`, or
/// that the C library answers with `AI_NUMERICHOST` added (an address)
/// gets the C library's answer. Anything else would be a name lookup,
/// which finds nothing and is counted.
///
/// # Safety
///
/// As for the C library's `getaddrinfo`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const AddrInfo,
    res: *mut *mut c_void,
) -> c_int {
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name finds the C
    // library's getaddrinfo, whose type is GetAddrInfo.
    let real: GetAddrInfo = unsafe {
        let real = dlsym(RTLD_NEXT, c"getaddrinfo".as_ptr());
        assert!(!real.is_null(), "no getaddrinfo in the C library");
        std::mem::transmute::<*mut c_void, GetAddrInfo>(real)
    };
    // SAFETY: non-NULL hints point at a struct addrinfo.
    if node.is_null() || (!hints.is_null() && unsafe { (*hints).ai_flags } & AI_NUMERICHOST != 0) {
        // No host, or only an address: never a lookup.
        // SAFETY: the arguments are passed on as they came.
        return unsafe { real(node, service, hints, res) };
    }
    let mut numeric = if hints.is_null() {
        AddrInfo {
            ai_flags: 0,
            ai_family: 0,
            ai_socktype: 0,
            ai_protocol: 0,
            ai_addrlen: 0,
            ai_addr: ptr::null_mut(),
            ai_canonname: ptr::null_mut(),
            ai_next: ptr::null_mut(),
        }
    } else {
        // SAFETY: non-NULL hints point at a struct addrinfo.
        unsafe { *hints }
    };
    numeric.ai_flags |= AI_NUMERICHOST;
    // SAFETY: as above, with hints that are a valid struct addrinfo.
    let status = unsafe { real(node, service, &raw const numeric, res) };
    if status == EAI_NONAME {
        looked_up();
    }
    status
}

/// `gethostbyname(3)`. Finds nothing.
#[unsafe(no_mangle)]
pub extern "C" fn gethostbyname(_name: *const c_char) -> *mut c_void {
    looked_up();
    ptr::null_mut()
}

/// `getnetbyname(3)`. Finds nothing.
#[unsafe(no_mangle)]
pub extern "C" fn getnetbyname(_name: *const c_char) -> *mut c_void {
    looked_up();
    ptr::null_mut()
}

/// glibc's `getnetbyname_r`: `net NAME`. Finds nothing.
///
/// # Safety
///
/// `result` is NULL or writable, as glibc requires.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getnetbyname_r(
    _name: *const c_char,
    _result_buf: *mut c_void,
    _buf: *mut c_char,
    _buflen: usize,
    result: *mut *mut c_void,
    _h_errnop: *mut c_int,
) -> c_int {
    looked_up();
    if !result.is_null() {
        // SAFETY: the caller passes a writable pointer for the result.
        unsafe { *result = ptr::null_mut() };
    }
    0
}

/// `ether_hostton(3)`: `ether host NAME` (`/etc/ethers`). Finds nothing.
#[unsafe(no_mangle)]
pub extern "C" fn ether_hostton(_hostname: *const c_char, _addr: *mut c_void) -> c_int {
    looked_up();
    -1
}
