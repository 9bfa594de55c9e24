//! tcpdump filter expressions compiled to classic BPF by libpcap.
//!
//! [`compile`] gives the program `tcpdump -d -r FILE EXPR` prints for a
//! file of the same link type whose snapshot length is [`SNAPLEN`]: the
//! optimizer is on and the netmask is 0, as tcpdump sets it when it reads
//! a file (so `ip broadcast` matches 0.0.0.0 and 255.255.255.255, where a
//! netmask of `PCAP_NETMASK_UNKNOWN` would be an error).

use std::ffi::{CString, c_int};

use thiserror::Error;

use crate::{
    cbpf::CbpfInsn,
    libpcap,
    names::{self, Name},
};

/// What an accepting program returns (`ret #262144`): tcpdump's default
/// snapshot length, and the largest the capture supports.
pub const SNAPLEN: u32 = 262_144;

/// `LINKTYPE_ETHERNET`: Ethernet frames.
pub const LINKTYPE_ETHERNET: u16 = 1;

/// `LINKTYPE_RAW`: IPv4 or IPv6 packets without a link-layer header.
pub const LINKTYPE_RAW: u16 = 101;

/// The netmask tcpdump passes to `pcap_compile` when it reads a file.
const TCPDUMP_FILE_NETMASK: u32 = 0;

/// `DLT_RAW` on Linux, which libpcap uses for `LINKTYPE_RAW`.
const DLT_RAW: c_int = 12;

/// Why an expression did not compile.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CompileError {
    /// libpcap rejected the expression. The message is libpcap's, as tcpdump
    /// prints it after `tcpdump: `, e.g. `can't parse filter expression:
    /// syntax error` or `unknown host 'nosuchhost.invalid'`.
    #[error("{0}")]
    Expression(String),
    /// The expression contains a NUL byte, which libpcap cannot see past.
    #[error("the filter expression contains a NUL byte")]
    Nul,
    /// libpcap does not know the link type.
    #[error("libpcap cannot compile filters for link type {0}")]
    LinkType(u16),
    /// The expression names a host or network that libpcap would resolve
    /// (see [`names`]); nothing was looked up.
    #[error("{0}")]
    Name(Name),
}

/// Compiles a tcpdump filter expression for packets of `link_type` (a
/// `LINKTYPE_` value as in pcap files: [`LINKTYPE_ETHERNET`],
/// [`LINKTYPE_RAW`], ...).
///
/// Accepting paths return [`SNAPLEN`]. An empty (or blank) expression
/// compiles, as in libpcap, to the one instruction `ret #262144`: accept
/// everything.
///
/// Host, Ethernet host and network names are refused before libpcap sees
/// the expression ([`CompileError::Name`]): compiling never resolves a
/// name. Port and protocol names still work (`/etc/services`,
/// `/etc/protocols`).
///
/// Calls may run in parallel: libpcap's compiler is thread-safe since 1.8.
pub fn compile(expression: &str, link_type: u16) -> Result<Vec<CbpfInsn>, CompileError> {
    if let Some(name) = names::find_name(expression) {
        return Err(CompileError::Name(name));
    }
    let expression = CString::new(expression).map_err(|_| CompileError::Nul)?;
    libpcap::compile(
        &expression,
        dlt(link_type),
        SNAPLEN as c_int,
        true,
        TCPDUMP_FILE_NETMASK,
    )
    .map_err(|failure| match failure {
        libpcap::Failure::OpenDead => CompileError::LinkType(link_type),
        libpcap::Failure::Compile(message) => CompileError::Expression(message),
    })
}

/// The `DLT_` value libpcap uses for a `LINKTYPE_` value. They are the same
/// number except for a few old types; of those we need only `LINKTYPE_RAW`.
fn dlt(link_type: u16) -> c_int {
    match link_type {
        LINKTYPE_RAW => DLT_RAW,
        other => c_int::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(expression: &str, link_type: u16) -> Vec<String> {
        compile(expression, link_type)
            .expect("compiles")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn compiles_like_tcpdump_ddd() {
        // tcpdump -ddd -r FILE tcp, for an Ethernet file with snaplen 262144.
        assert_eq!(
            listing("tcp", LINKTYPE_ETHERNET),
            [
                "40 0 0 12",
                "21 0 2 2048",
                "48 0 0 23",
                "21 6 7 6",
                "21 0 6 34525",
                "48 0 0 20",
                "21 3 0 6",
                "21 0 3 44",
                "48 0 0 54",
                "21 0 1 6",
                "6 0 0 262144",
                "6 0 0 0",
            ]
        );
    }

    #[test]
    fn raw_ip_has_no_link_header() {
        // ip version check on the first byte, no ethertype.
        let program = compile("ip", LINKTYPE_RAW).expect("compiles");
        assert_eq!(program[0], CbpfInsn::stmt(0x30, 0));
    }

    #[test]
    fn empty_expression_accepts_everything() {
        assert_eq!(listing("", LINKTYPE_ETHERNET), ["6 0 0 262144"]);
    }

    #[test]
    fn broadcast_uses_tcpdumps_file_netmask() {
        assert!(compile("ip broadcast", LINKTYPE_ETHERNET).is_ok());
    }

    #[test]
    fn errors_read_like_tcpdump() {
        assert_eq!(
            compile("tcp port", LINKTYPE_ETHERNET),
            Err(CompileError::Expression(
                "can't parse filter expression: syntax error".into()
            ))
        );
        assert_eq!(
            compile("port 99999", LINKTYPE_ETHERNET)
                .unwrap_err()
                .to_string(),
            "illegal port number 99999 > 65535"
        );
        assert_eq!(compile("ip\0", 1), Err(CompileError::Nul));
    }

    #[test]
    fn names_are_refused_and_ports_kept() {
        assert_eq!(
            compile("host nosuchhost.invalid", LINKTYPE_ETHERNET)
                .unwrap_err()
                .to_string(),
            "host names are not resolved: use an IP address instead of \"nosuchhost.invalid\""
        );
        // `port http` is tcpdump's `port 80`.
        assert_eq!(
            listing("tcp port http", LINKTYPE_ETHERNET),
            listing("tcp port 80", LINKTYPE_ETHERNET)
        );
        assert_eq!(
            listing("ip proto \\udp", LINKTYPE_ETHERNET),
            listing("ip proto 17", LINKTYPE_ETHERNET)
        );
    }

    #[test]
    fn compiles_in_parallel() {
        let threads: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || {
                    for port in 0..50 {
                        let expression =
                            format!("tcp port {} or udp port {}", i * 100 + port, port);
                        compile(&expression, LINKTYPE_ETHERNET).expect("compiles");
                    }
                    listing("tcp port 80", LINKTYPE_ETHERNET)
                })
            })
            .collect();
        let expected = listing("tcp port 80", LINKTYPE_ETHERNET);
        for thread in threads {
            assert_eq!(thread.join().expect("no panic"), expected);
        }
    }
}
