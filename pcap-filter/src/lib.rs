//! tcpdump filter expressions, run in the kernel.
//!
//! The pipeline has three steps:
//!
//! 1. [`compile`](mod@compile): libpcap compiles an expression into classic BPF exactly
//!    as `tcpdump -r FILE EXPR` does for a file of the same link type.
//! 2. [`translate`]: the classic program becomes part of a
//!    `BPF_PROG_TYPE_SCHED_CLS` program that reads packet bytes only with
//!    `bpf_skb_load_bytes`, sees an out-of-band VLAN tag where libpcap puts
//!    it back, stores the verdict in `__sk_buff.cb[0]` and tail-calls the
//!    capture program when the packet matches. [`ebpf`] holds the
//!    instruction encoding and the assembler it uses.
//! 3. [`sys`]: loading and test-running programs with the raw `bpf(2)`
//!    system call.
//!
//! [`classic_like`] translates the same classic program the way the kernel
//! runs a classic socket filter, as the baseline for benchmarks.
//!
//! [`interp`] runs a classic program in user space as libpcap's
//! `bpf_filter` does: the reference the translator is fuzzed against
//! (`fuzz/`, docs/fuzzing.md). [`libpcap_filter`] is libpcap's own
//! `bpf_filter`, the reference for `interp`.
//!
//! Only [`sys`] and the private libpcap bindings use `unsafe`.
#![deny(unsafe_code, missing_docs)]

pub mod cbpf;
pub mod classic_like;
pub mod compile;
pub mod ebpf;
pub mod interp;
#[expect(unsafe_code, reason = "bindings to libpcap's compiler and interpreter")]
mod libpcap;
pub mod names;
#[expect(unsafe_code, reason = "the bpf(2) system call")]
pub mod sys;
pub mod translate;

pub use cbpf::CbpfInsn;
pub use compile::{CompileError, compile};
pub use libpcap::filter as libpcap_filter;
pub use translate::{InterfaceFilter, TailCall, TranslateError, build_filter_program};
