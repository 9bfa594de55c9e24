//! The origins the API announced: ids to names and addresses (shared with
//! the writer, `pcap-sink`).

pub use pcap_sink::Origins;
