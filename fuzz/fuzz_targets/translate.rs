//! The cBPF → eBPF translator, fed arbitrary classic programs: it never
//! panics, it refuses exactly what `cbpf::validate` refuses, the verifier
//! accepts every program it builds, and the kernel's verdict
//! (`BPF_PROG_TEST_RUN`) is the user-space interpreter's on every packet,
//! plain and with an out-of-band VLAN tag, with one filter or two chosen
//! by interface (or none, when neither lists the packet's).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pcap_filter::{
    InterfaceFilter, TranslateError,
    cbpf::validate,
    compile::{LINKTYPE_ETHERNET, LINKTYPE_RAW},
    interp,
};
use pcap_fuzz::{
    Packet, Program,
    kernel::{self, Tag},
    with_tag,
};

#[derive(Arbitrary, Debug)]
struct Input {
    first: Program,
    /// A second filter: then `dispatch` picks the one for the packets'
    /// interface.
    second: Option<Program>,
    /// With two filters, 0: the first lists the test-run interface
    /// (loopback, ifindex 1), 1: the second does, 2: neither does.
    dispatch: u8,
    /// The first filter is for raw IP, not Ethernet.
    raw_ip: bool,
    packets: Vec<Run>,
}

#[derive(Arbitrary, Debug)]
struct Run {
    packet: Packet,
    /// `(TPID, TCI)` held out of band.
    tag: Option<(u16, u16)>,
}

/// `BPF_PROG_TEST_RUN` runs every packet on the loopback device.
const LOOPBACK: u32 = 1;

fuzz_target!(|input: Input| {
    let link_type = if input.raw_ip {
        LINKTYPE_RAW
    } else {
        LINKTYPE_ETHERNET
    };
    let dispatch = input.dispatch % 3;
    let (first_ifindexes, second_ifindexes): (&[u32], &[u32]) = match dispatch {
        0 => (&[LOOPBACK], &[7777]),
        1 => (&[7777, 8888], &[LOOPBACK]),
        _ => (&[7777], &[8888]),
    };
    let mut filters = vec![InterfaceFilter {
        program: &input.first.0,
        link_type,
        ifindexes: first_ifindexes,
    }];
    if let Some(second) = &input.second {
        filters.push(InterfaceFilter {
            program: &second.0,
            link_type: LINKTYPE_ETHERNET,
            ifindexes: second_ifindexes,
        });
    }
    let valid = filters
        .iter()
        .map(|f| validate(f.program))
        .position(|r| r.is_err());
    let insns = match kernel::translate(&filters) {
        Ok(insns) => {
            assert_eq!(valid, None, "translated an invalid program");
            insns
        }
        Err(TranslateError::Program { filter, .. }) => {
            assert_eq!(valid, Some(filter), "refused the wrong filter");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let prog = kernel::load(&insns, &filters);
    for run in input.packets.iter().take(4) {
        let data = &run.packet.0;
        let tag = run.tag.map(|(tpid, tci)| Tag { tpid, tci });
        let Some(ours) = kernel::verdict(&prog, data, tag, LOOPBACK) else {
            continue;
        };
        let filter = match (filters.len(), dispatch) {
            (1, _) => Some(&filters[0]),
            (_, 0 | 1) => Some(&filters[dispatch as usize]),
            _ => None,
        };
        let expected = filter.map_or(0, |f| match tag {
            Some(tag) if f.link_type == LINKTYPE_ETHERNET => {
                let frame = with_tag(data, tag.tpid, tag.tci);
                interp::run(f.program, &frame, frame.len() as u32)
            }
            _ => interp::run(f.program, data, data.len() as u32),
        });
        assert_eq!(
            ours,
            expected,
            "kernel and interpreter disagree on {} bytes {data:02x?}, tag {tag:?}",
            data.len()
        );
    }
});
