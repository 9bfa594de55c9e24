//! The user-space classic BPF interpreter against libpcap's own
//! `bpf_filter`: the same result for every valid program on every packet
//! and wire length; and no panic on any program at all.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pcap_filter::{
    CbpfInsn,
    cbpf::{MEMWORDS, class, has_backward_jumps, validate},
    interp,
};
use pcap_fuzz::{Packet, Program, libpcap};

#[derive(Arbitrary, Debug)]
struct Input {
    program: Program,
    packets: Vec<(Packet, u32)>,
}

fuzz_target!(|input: Input| {
    let program = &input.program.0;
    // libpcap's loops have no bound (ours stop after
    // cbpf::MAX_BACKWARD_JUMPS): compare only programs without one.
    let valid = validate(program).is_ok() && !has_backward_jumps(program);
    // libpcap before 1.11 leaves M[] uninitialised; ours starts it as 0,
    // as libpcap 1.11 does. Give libpcap's run 16 stores of A (0) first.
    let zeroed: Vec<CbpfInsn> = (0..MEMWORDS)
        .map(|k| CbpfInsn::stmt(class::ST, k))
        .chain(program.iter().copied())
        .collect();
    // Other programs may loop up to the bound: one run is enough to see
    // that it does not panic.
    let runs = if valid { 8 } else { 1 };
    for (packet, wirelen) in input.packets.iter().take(runs) {
        let packet = &packet.0;
        let ours = interp::run(program, packet, *wirelen);
        if valid {
            let theirs = libpcap::filter(&zeroed, packet, *wirelen);
            assert_eq!(
                ours, theirs,
                "{program:?} on {packet:02x?}, wire length {wirelen}"
            );
        }
    }
});
