//! Packet loads of every size at every offset and alignment, constant and
//! at `X + k`, inside the stack window, across its end and past the
//! packet's, against what libpcap's interpreter reads.

use pcap_filter::{CbpfInsn, translate::VlanSource};

use crate::harness::{Loaded, Tag, require_root};

/// Packet lengths around the window's sizes (a load's end, 78, 128).
const LENGTHS: &[usize] = &[14, 15, 25, 54, 60, 77, 78, 79, 100, 127, 128, 129, 131, 200];

/// `ld`, `ldh`, `ldb` of one addressing mode, with their sizes.
fn sizes(mode: u16) -> [(u16, usize); 3] {
    [(mode, 4), (mode | 0x08, 2), (mode | 0x10, 1)]
}

/// Distinct, nonzero bytes, with X's value first.
fn packet(len: usize, x: u8) -> Vec<u8> {
    let mut data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8 | 1).collect();
    data[0] = x;
    data
}

/// What the classic program sees: the packet, with the tag after the MACs.
fn seen(data: &[u8], tag: Option<Tag>) -> Vec<u8> {
    let Some(tag) = tag else {
        return data.to_vec();
    };
    let mut frame = data[..12].to_vec();
    frame.extend_from_slice(&tag.tpid.to_be_bytes());
    frame.extend_from_slice(&tag.tci.to_be_bytes());
    frame.extend_from_slice(&data[12..]);
    frame
}

/// `n` bytes at `at` as a big-endian number, 0 when past the end (the
/// filter then returns 0, as `ret a` of a 0 does).
fn expected(frame: &[u8], at: usize, n: usize) -> u32 {
    frame.get(at..at + n).map_or(0, |bytes| {
        bytes.iter().fold(0, |v, &b| v << 8 | u32::from(b))
    })
}

/// The program on the plain path (raw IP: no VLAN path at all) and on the
/// VLAN path (Ethernet with a tag held out of band).
fn check(program: &[CbpfInsn], x_values: &[u8], expect: impl Fn(&[u8]) -> u32, what: &str) {
    let raw = Loaded::raw(program);
    let ethernet = Loaded::ethernet(program, VlanSource::ControlBlock);
    let tag = Tag {
        tpid: 0x8100,
        tci: 0x2345,
    };
    for &len in LENGTHS {
        for &x in x_values {
            let data = packet(len, x);
            assert_eq!(
                raw.verdict(&data, None),
                expect(&seen(&data, None)),
                "{what}, x = {x}, {len} bytes"
            );
            assert_eq!(
                ethernet.verdict(&data, Some(tag)),
                expect(&seen(&data, Some(tag))),
                "{what}, x = {x}, {len} bytes, tagged"
            );
        }
    }
}

#[test]
fn constant_offsets() {
    require_root();
    for (code, n) in sizes(0x20) {
        for k in 0..=131u32 {
            // ld [k]; jgt #0xffffffff (never) to ldb [127]; ret a: the far
            // load makes the window 128 bytes.
            let far = [
                CbpfInsn::stmt(code, k),
                CbpfInsn::jump(0x25, u32::MAX, 0, 1),
                CbpfInsn::stmt(0x30, 127),
                CbpfInsn::stmt(0x16, 0),
            ];
            let at = k as usize;
            check(
                &far,
                &[0],
                |f| expected(f, at, n),
                &format!("{n} bytes at {k}"),
            );
            // ld [k]; ret a: the window ends where the load does.
            let alone = [CbpfInsn::stmt(code, k), CbpfInsn::stmt(0x16, 0)];
            check(
                &alone,
                &[0],
                |f| expected(f, at, n),
                &format!("{n} bytes at {k} alone"),
            );
        }
    }
}

#[test]
fn offsets_from_x() {
    require_root();
    let x_values: Vec<u8> = (0..=9)
        .chain([56, 60, 61, 62, 63, 100, 124, 127, 200, 255])
        .collect();
    for (code, n) in sizes(0x40) {
        for k in [
            0u32, 1, 2, 3, 13, 14, 16, 27, 46, 60, 63, 64, 65, 100, 124, 126, 127, 128, 300,
        ] {
            // ldb [0]; tax; ld [x + k]; ret a
            let program = [
                CbpfInsn::stmt(0x30, 0),
                CbpfInsn::stmt(0x07, 0),
                CbpfInsn::stmt(code, k),
                CbpfInsn::stmt(0x16, 0),
            ];
            check(
                &program,
                &x_values,
                |f| expected(f, usize::from(f[0]) + k as usize, n),
                &format!("{n} bytes at x + {k}"),
            );
        }
    }
    // X from ldxb 4*([14]&0xf), as libpcap computes IPv4 header lengths.
    for (code, n) in sizes(0x40) {
        for k in [14u32, 15, 16, 17, 26, 27, 60, 61, 62] {
            let program = [
                CbpfInsn::stmt(0xb1, 14),
                CbpfInsn::stmt(code, k),
                CbpfInsn::stmt(0x16, 0),
            ];
            check(
                &program,
                &[0],
                |f| {
                    let x = f.get(14).map_or(usize::MAX, |b| 4 * usize::from(b & 0xf));
                    if x == usize::MAX {
                        0
                    } else {
                        expected(f, x + k as usize, n)
                    }
                },
                &format!("{n} bytes at 4*([14]&0xf) + {k}"),
            );
        }
    }
}

#[test]
fn paths_that_meet_keep_the_shorter_check() {
    require_root();
    // ldb [0]; jeq #0x55, 0, 1; ldb [29]; ldb [19]; ret a: [19] needs its
    // own check when the path through [29] was not taken.
    let program = [
        CbpfInsn::stmt(0x30, 0),
        CbpfInsn::jump(0x15, 0x55, 0, 1),
        CbpfInsn::stmt(0x30, 29),
        CbpfInsn::stmt(0x30, 19),
        CbpfInsn::stmt(0x16, 0),
    ];
    let expect = |f: &[u8]| {
        let needed = if f[0] == 0x55 { 30 } else { 20 };
        if f.len() >= needed {
            u32::from(f[19])
        } else {
            0
        }
    };
    check(&program, &[0x55, 0], expect, "merged paths");
}
