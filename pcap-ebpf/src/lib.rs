#![no_std]
// This file exists so that pcap-agent can name this crate as a build
// dependency; the program itself is the `pcap-ebpf` binary.
