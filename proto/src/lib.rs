//! The wire contract between pcap-cli, pcap-api and pcap-agent (gRPC), and
//! the TLS set-up all three share.
#![forbid(unsafe_code)]

pub mod buffered;
#[cfg(feature = "clap")]
pub mod flags;
pub mod metrics;
pub mod options;
pub mod packets;
pub mod tls;

/// Generated from `proto/pcap/v1/pcap.proto`.
pub mod v1 {
    #![expect(
        clippy::pedantic,
        // StartCapture (with CaptureOptions.direction) is 208 bytes, beside
        // StopCapture's 0, in the request enums: one request per capture.
        clippy::large_enum_variant,
        clippy::allow_attributes,
        clippy::allow_attributes_without_reason,
        unused_qualifications,
        reason = "generated code is not ours to restyle"
    )]
    tonic::include_proto!("pcap.v1");
}

/// An error and its causes, joined with ": ", each said once: a cause whose
/// text the message already holds is left out (as anyhow's `{:#}`, without
/// the repetition of libraries that print their source in their message).
/// The one place the API, the agents and the CLI turn an error into a line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Wall-clock time in nanoseconds since the Unix epoch, as the wire's `*_ns`
/// fields carry it (0 before 1970, `u64::MAX` after 2554).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Bumped on every incompatible change to `pcap.v1`. An agent refuses a
/// start request from an API with another level, and says which it serves.
/// Level 2: packets travel as pcapng Enhanced Packet Blocks (`Packets`).
pub const COMPATIBILITY_LEVEL: u32 = 2;

pub use options::{MAX_FILTER_BYTES, filter_too_long};

#[cfg(test)]
mod tests {
    use std::{fmt, io};

    use super::error_chain;

    /// An error with a message and an optional cause, as libraries nest them.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn std::error::Error + 'static>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn causes_are_joined_and_each_said_once() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let refused_text = refused.to_string();
        let connect = Layer("cannot connect", Some(Box::new(refused)));
        let request = Layer("error sending request", Some(Box::new(connect)));
        assert_eq!(
            error_chain(&request),
            format!("error sending request: cannot connect: {refused_text}")
        );

        // A library that prints its cause in its own message: the cause is
        // not said twice.
        let inner = Layer("bad certificate", None);
        let outer = Layer("TLS handshake: bad certificate", Some(Box::new(inner)));
        assert_eq!(error_chain(&outer), "TLS handshake: bad certificate");

        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
