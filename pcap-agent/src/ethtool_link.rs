//! Asking a driver whether its link is up, as libpcap does for `-D`
//! (`ETHTOOL_GLINK`). The only unsafe code of `-D`.

use std::os::fd::AsRawFd as _;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

const SIOCETHTOOL: nix::libc::Ioctl = 0x8946;
const ETHTOOL_GLINK: u32 = 0x0000_000a;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with `ifr_data`: 16 bytes of name, then a 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: *mut EthtoolValue,
    _rest: [u8; 16],
}

/// What the driver says about the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Connected,
    Disconnected,
    /// The driver cannot tell (`EOPNOTSUPP`), or the question failed.
    NotApplicable,
}

/// Asks the driver of interface `name` whether its link is up.
pub fn link(name: &str) -> Link {
    let Ok(sock) = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return Link::NotApplicable;
    };
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GLINK,
        data: 0,
    };
    let mut request = IfReq {
        name: [0; 16],
        data: &raw mut value,
        _rest: [0; 16],
    };
    let bytes = name.as_bytes();
    if bytes.len() >= request.name.len() {
        return Link::NotApplicable;
    }
    request.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `request` is a valid, NUL-terminated `struct ifreq` whose
    // `ifr_data` points to `value`, a `struct ethtool_value` that outlives
    // the call; SIOCETHTOOL with ETHTOOL_GLINK writes only `value.data`.
    #[expect(unsafe_code, reason = "the SIOCETHTOOL ioctl has no safe wrapper")]
    let result = unsafe { nix::libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut request) };
    match (result, value.data) {
        (0, 0) => Link::Disconnected,
        (0, _) => Link::Connected,
        _ => Link::NotApplicable,
    }
}
