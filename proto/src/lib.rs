//! The wire contract between pcap-cli, pcap-api and pcap-agent (gRPC). Filled
//! in by the distributed-capture issue.
#![forbid(unsafe_code)]
