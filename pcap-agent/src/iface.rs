//! Interfaces a capture can attach to: name, index and link type.

use std::{fs, io};

use pcap_format::linktype::{LINKTYPE_ETHERNET, LINKTYPE_RAW};
use thiserror::Error;

// `ARPHRD_*` values from `<linux/if_arp.h>` that we know how to capture.
/// Ethernet, veth, bridges: captured as Ethernet.
const ARPHRD_ETHER: u32 = 1;
/// `lo`, whose frames carry an all-zero Ethernet header: captured as
/// Ethernet.
pub const ARPHRD_LOOPBACK: u32 = 772;
/// No link-layer header at all (tun, WireGuard): captured as raw IP.
const ARPHRD_NONE: u32 = 0xfffe;
/// Raw IP devices (some cellular modems): captured as raw IP.
const ARPHRD_RAWIP: u32 = 519;
/// IPIP tunnels (`tunl0`): captured as raw IP.
const ARPHRD_TUNNEL: u32 = 768;
/// IP-in-IPv6 tunnels (`ip6tnl0`): captured as raw IP.
const ARPHRD_TUNNEL6: u32 = 769;

#[derive(Debug, Error)]
pub enum InterfaceError {
    #[error("interface {0:?} does not exist (list interfaces with `ip link`)")]
    NotFound(String),
    #[error(
        "interface {name:?} has hardware type {arphrd}, which pcap cannot capture yet \
         (supported: Ethernet, loopback, raw IP)"
    )]
    UnsupportedType { name: String, arphrd: u32 },
    #[error("interface name {0:?} is not valid: names are 1 to 15 bytes without '/' or spaces")]
    InvalidName(String),
    #[error("cannot read {path}: {source}")]
    Sysfs { path: String, source: io::Error },
}

/// A network interface resolved for capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    /// The pcap link type of what the TC hook sees on this interface.
    pub link_type: u16,
    /// Its `ARPHRD_*` hardware type (`sll2_hatype` in `-i any` captures).
    pub hardware_type: u32,
}

/// The name of tcpdump's pseudo-interface for every interface of the
/// network namespace (`-i any`).
pub const ANY: &str = "any";

impl Interface {
    /// Resolves `name` in the current network namespace.
    pub fn lookup(name: &str) -> Result<Self, InterfaceError> {
        let valid = (1..16).contains(&name.len())
            && !name.contains(['/', ' ', '\t', '\n'])
            && name != "."
            && name != "..";
        if !valid {
            return Err(InterfaceError::InvalidName(name.to_owned()));
        }
        let index = nix::net::if_::if_nametoindex(name)
            .map_err(|_| InterfaceError::NotFound(name.to_owned()))?;
        let path = format!("/sys/class/net/{name}/type");
        let arphrd = fs::read_to_string(&path)
            .map_err(|source| InterfaceError::Sysfs {
                path: path.clone(),
                source,
            })?
            .trim()
            .parse::<u32>()
            .map_err(|e| InterfaceError::Sysfs {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?;
        Self::new(name, index, arphrd)
    }

    /// The interface `name` with index `index` and hardware type `arphrd`
    /// (as route netlink tells them), if pcap can capture that type.
    pub fn new(name: &str, index: u32, arphrd: u32) -> Result<Self, InterfaceError> {
        let link_type = match arphrd {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => LINKTYPE_ETHERNET,
            // As libpcap: devices without a link-layer header carry raw IP.
            ARPHRD_NONE | ARPHRD_RAWIP | ARPHRD_TUNNEL | ARPHRD_TUNNEL6 => LINKTYPE_RAW,
            _ => {
                return Err(InterfaceError::UnsupportedType {
                    name: name.to_owned(),
                    arphrd,
                });
            }
        };
        Ok(Self {
            name: name.to_owned(),
            index,
            link_type,
            hardware_type: arphrd,
        })
    }

    /// Whether this is a loopback interface.
    pub fn is_loopback(&self) -> bool {
        self.hardware_type == ARPHRD_LOOPBACK
    }
}

/// Name of a link type as tcpdump prints it in "listening on" lines.
pub fn link_type_name(link_type: u16) -> &'static str {
    match link_type {
        LINKTYPE_ETHERNET => "EN10MB (Ethernet)",
        LINKTYPE_RAW => "RAW (Raw IP)",
        pcap_format::linktype::LINKTYPE_LINUX_SLL2 => "LINUX_SLL2 (Linux cooked v2)",
        _ => "unknown",
    }
}
