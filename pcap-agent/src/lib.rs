//! pcap-agent: eBPF packet capture on a host.
//!
//! Data flows from the kernel program ([`datapath`]) through its ring buffer
//! to a [`capture`] loop that writes an [`output`], or, under [`serve`], to
//! the response stream of a gRPC call from pcap-api.
#![forbid(unsafe_code)]

pub mod c2c;
pub mod capture;
pub mod clock;
pub mod datapath;
pub mod filter;
pub mod iface;
pub mod output;
pub mod privileges;
pub mod rtnl;
pub mod serve;
pub mod silk;
pub mod tc_fallback;
