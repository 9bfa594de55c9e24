//! Tests that load generated programs into the kernel and compare their
//! verdicts with tcpdump's. They need root, tcpdump, and the tcpdump
//! test-suite captures in the workspace's `tests/corpus/tcpdump-tests` (or `$PCAP_FILTER_CORPUS`).

use pcap_filter::CbpfInsn;

mod classic;
mod contract;
mod corpus;
mod harness;
mod loads;
mod loops;
mod pcapfile;
mod programs;
mod verifier;
mod vlan;
