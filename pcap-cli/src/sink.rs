//! Where packets go: the writer shared with pcap-api's stored captures
//! (`pcap-sink`), so that `-w FILE` and a stored object are the same pcapng.

pub use pcap_sink::Sink;
