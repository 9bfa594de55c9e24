//! Silk's container metadata store, read by the served container scope
//! (`serve::container`) and by c2c insight (`c2c::annotate`): the store's
//! types and reader are pcap-platform's, shared with the simulated
//! landscape that writes it.

pub use pcap_platform::silk::{
    StoreEntry, StoreError, host_interface_name, parse_store, read_store,
};
