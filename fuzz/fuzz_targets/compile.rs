//! Expression compilation, fed arbitrary strings of up to
//! `pcap_proto::MAX_FILTER_BYTES` (the longest expression the API and the
//! agent accept): `pcap_filter::compile` never panics, never
//! hangs (libFuzzer's `-timeout`), never makes libpcap look a name up
//! (the resolver functions are stand-ins that count calls), and what it
//! compiles is valid classic BPF that translates, loads, and agrees with
//! the user-space interpreter on the packets that follow the expression,
//! and with libpcap too unless it loops (`protochain`: libpcap's loop has
//! no bound, and an AH header that points at itself never ends it).
//!
//! Input: a flags byte (bit 0: raw IP instead of Ethernet), the
//! expression up to the first NUL byte, then packets.
#![no_main]

use std::sync::atomic::Ordering;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pcap_filter::{
    InterfaceFilter,
    cbpf::{has_backward_jumps, validate},
    compile::{self, CompileError, LINKTYPE_ETHERNET, LINKTYPE_RAW},
    interp,
};
use pcap_fuzz::{
    Packet,
    kernel::{self, Tag},
    libpcap::{self, NAME_LOOKUPS},
    with_tag,
};
use pcap_proto::MAX_FILTER_BYTES;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (expression, packets) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    if expression.len() > MAX_FILTER_BYTES {
        return;
    }
    let Ok(expression) = std::str::from_utf8(expression) else {
        return;
    };
    let link_type = if flags & 1 == 0 {
        LINKTYPE_ETHERNET
    } else {
        LINKTYPE_RAW
    };
    let before = NAME_LOOKUPS.load(Ordering::SeqCst);
    let compiled = compile(expression, link_type);
    assert_eq!(
        NAME_LOOKUPS.load(Ordering::SeqCst),
        before,
        "libpcap looked a name up while compiling {expression:?} ({compiled:?})"
    );
    let program = match compiled {
        Ok(program) => program,
        Err(CompileError::Expression(message)) => {
            assert!(!message.is_empty(), "an empty error for {expression:?}");
            return;
        }
        Err(CompileError::Nul) => unreachable!("no NUL in the expression"),
        Err(_) => return,
    };
    if let Err(e) = validate(&program) {
        panic!("libpcap compiled {expression:?} to a program we refuse: {e}");
    }
    let loops = has_backward_jumps(&program);
    let filters = [InterfaceFilter {
        program: &program,
        link_type,
        ifindexes: &[],
    }];
    let insns = kernel::translate(&filters)
        .unwrap_or_else(|e| panic!("{expression:?} does not translate: {e}"));
    let prog = kernel::load(&insns, &expression);
    let mut u = Unstructured::new(packets);
    for _ in 0..4 {
        let (Ok(packet), Ok(tag)) = (
            Packet::arbitrary(&mut u),
            Option::<(u16, u16)>::arbitrary(&mut u),
        ) else {
            break;
        };
        let data = &packet.0;
        let tag = tag.map(|(tpid, tci)| Tag { tpid, tci });
        let frame = match tag {
            Some(tag) if link_type == LINKTYPE_ETHERNET => with_tag(data, tag.tpid, tag.tci),
            _ => data.clone(),
        };
        let wirelen = frame.len() as u32;
        let expected = interp::run(&program, &frame, wirelen);
        if !loops {
            assert_eq!(
                expected,
                libpcap::filter(&program, &frame, wirelen),
                "{expression:?}: interpreter and libpcap disagree on {frame:02x?}"
            );
        }
        if let Some(ours) = kernel::verdict(&prog, data, tag, 0) {
            assert_eq!(
                ours, expected,
                "{expression:?}: kernel and interpreter disagree on {data:02x?}, tag {tag:?}"
            );
        }
    }
});

fn compile(expression: &str, link_type: u16) -> Result<Vec<pcap_filter::CbpfInsn>, CompileError> {
    compile::compile(expression, link_type)
}
