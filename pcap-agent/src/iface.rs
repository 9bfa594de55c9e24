//! Interfaces a capture can attach to: name, index and link type.

use std::{fs, io};

pub use netlink_packet_route::link::LinkLayerType;
use pcap_format::linktype::{LINKTYPE_ETHERNET, LINKTYPE_RAW};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InterfaceError {
    #[error("interface {0:?} does not exist (list interfaces with `ip link`)")]
    NotFound(String),
    #[error(
        "interface {name:?} has hardware type {hardware_type} ({}), which pcap cannot \
         capture yet (supported: Ethernet, loopback, raw IP)",
        u16::from(*hardware_type)
    )]
    UnsupportedType {
        name: String,
        hardware_type: LinkLayerType,
    },
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
    pub hardware_type: LinkLayerType,
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
        let hardware_type = fs::read_to_string(&path)
            .map_err(|source| InterfaceError::Sysfs {
                path: path.clone(),
                source,
            })?
            .trim()
            .parse::<u16>()
            .map_err(|e| InterfaceError::Sysfs {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?;
        Self::new(name, index, LinkLayerType::from(hardware_type))
    }

    /// The interface `name` with index `index` and hardware type
    /// `hardware_type` (as route netlink tells them), if pcap can capture
    /// that type.
    pub fn new(
        name: &str,
        index: u32,
        hardware_type: LinkLayerType,
    ) -> Result<Self, InterfaceError> {
        let link_type = match hardware_type {
            // Ethernet, veth and bridges; and `lo`, whose frames carry an
            // all-zero Ethernet header.
            LinkLayerType::Ether | LinkLayerType::Loopback => LINKTYPE_ETHERNET,
            // As libpcap: devices without a link-layer header (tun,
            // WireGuard, raw-IP modems, IPIP and IP-in-IPv6 tunnels) carry
            // raw IP.
            LinkLayerType::None
            | LinkLayerType::Rawip
            | LinkLayerType::Tunnel
            | LinkLayerType::Tunnel6 => LINKTYPE_RAW,
            _ => {
                return Err(InterfaceError::UnsupportedType {
                    name: name.to_owned(),
                    hardware_type,
                });
            }
        };
        Ok(Self {
            name: name.to_owned(),
            index,
            link_type,
            hardware_type,
        })
    }

    /// Whether this is a loopback interface.
    pub fn is_loopback(&self) -> bool {
        self.hardware_type == LinkLayerType::Loopback
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_types_follow_the_hardware_type_as_libpcap_does() {
        let link_type = |hardware_type| Interface::new("x", 2, hardware_type).map(|i| i.link_type);
        assert_eq!(
            link_type(LinkLayerType::Ether).ok(),
            Some(LINKTYPE_ETHERNET)
        );
        assert_eq!(
            link_type(LinkLayerType::Loopback).ok(),
            Some(LINKTYPE_ETHERNET)
        );
        assert_eq!(link_type(LinkLayerType::None).ok(), Some(LINKTYPE_RAW));
        assert_eq!(link_type(LinkLayerType::Tunnel6).ok(), Some(LINKTYPE_RAW));
        let refused = Interface::new("gre1", 3, LinkLayerType::from(778))
            .expect_err("GRE is not captured")
            .to_string();
        assert_eq!(
            refused,
            "interface \"gre1\" has hardware type IPGRE (778), which pcap cannot capture yet \
             (supported: Ethernet, loopback, raw IP)"
        );
    }
}
