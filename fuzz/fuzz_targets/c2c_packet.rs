//! The c2c packet parser (IPv4 5-tuple, VXLAN group-policy tag) never
//! panics, on any link type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcap_agent::c2c::packet::parse;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    // Ethernet, raw IP, IPv4, or another link type.
    let link_type = match selector % 4 {
        0 => 1,
        1 => 101,
        2 => 228,
        _ => u16::from(selector),
    };
    let _ = parse(link_type, frame);
});
