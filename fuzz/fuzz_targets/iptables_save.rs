//! The `iptables-save` parser (c2c policy tags) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcap_agent::c2c::policy::parse_iptables_save;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_iptables_save(&text);
});
