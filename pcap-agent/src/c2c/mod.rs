//! Operator insight for container-to-container (c2c) debugging, for
//! `pcap-agent capture --c2c` on `silk-vtep` or a cell's underlay interface.
//!
//! * [`packet`]: each packet's VXLAN group-policy tag (from `skb->mark` on
//!   `silk-vtep`, from the VXLAN GBP header on the underlay) and the
//!   5-tuple of the (inner) IPv4 packet.
//! * [`policy`]: tag → source app GUID, from the VXLAN policy agent's
//!   iptables rules (`iptables-save -t filter`).
//! * [`kmsg`]: the kernel's LOG lines (`OK_<tag>_<guid>`,
//!   `DENY_C2C_<handle>`) from `/dev/kmsg`.
//! * [`apps`]: app names by GUID, from Cloud Controller's `GET /v3/apps`
//!   (`cf curl /v3/apps > apps.json`), so that names replace GUIDs.
//! * [`annotate`]: a sink that holds packets for a short window, joins
//!   them to LOG lines by 5-tuple and time, writes the result into each
//!   packet's pcapng comment, and writes Name Resolution Blocks for overlay
//!   IPs.

pub mod annotate;
pub mod apps;
pub mod kmsg;
pub mod packet;
pub mod policy;

pub use annotate::{C2cOptions, C2cSink};
