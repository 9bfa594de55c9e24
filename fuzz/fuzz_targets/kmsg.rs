//! The `/dev/kmsg` (and kern.log) c2c LOG line parser never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcap_agent::c2c::kmsg::parse_record;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(line) = parse_record(&text) {
        let _ = line.verdict.describe();
    }
});
