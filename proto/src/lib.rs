//! The wire contract between pcap-cli, pcap-api and pcap-agent (gRPC), and
//! the TLS set-up all three share.
#![forbid(unsafe_code)]

pub mod tls;

/// Generated from `proto/pcap/v1/pcap.proto`.
pub mod v1 {
    #![expect(
        clippy::pedantic,
        unused_qualifications,
        reason = "generated code is not ours to restyle"
    )]
    tonic::include_proto!("pcap.v1");
}

/// Bumped on every incompatible change to `pcap.v1`. An agent refuses a
/// start request from an API with another level, and says which it serves.
pub const COMPATIBILITY_LEVEL: u32 = 1;
