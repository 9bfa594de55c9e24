//! Tests that load generated programs into the kernel and compare their
//! verdicts with tcpdump's. They need root, tcpdump, and the tcpdump
//! test-suite captures in `shared/corpus/tcpdump-tests` beside the
//! workspace (or `$PCAP_FILTER_CORPUS`).

mod corpus;
mod harness;
mod pcapfile;
