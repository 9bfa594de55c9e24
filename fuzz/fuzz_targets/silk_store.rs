//! Silk's container metadata store: parsing arbitrary text never panics,
//! and a container found in it always has a host-side veth name that fits
//! in an interface name (at most 15 bytes) and its own overlay IP.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcap_agent::{
    serve::container::{host_interface_name, resolve},
    silk::parse_store,
};
use pcap_proto::v1::ContainerScope;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(store) = parse_store(&text) else {
        return;
    };
    for (instance, entry) in &store {
        let app = entry
            .metadata
            .as_ref()
            .map(|m| m.app_id.clone())
            .unwrap_or_default();
        for overlay_ip in [String::new(), entry.ip.clone()] {
            let scope = ContainerScope {
                instance_guid: instance.clone(),
                app_guid: app.clone(),
                overlay_ip,
            };
            if let Ok(container) = resolve(&scope, &store) {
                assert_eq!(
                    container.interface,
                    host_interface_name(container.overlay_ip)
                );
                assert!(container.interface.len() <= 15, "{container:?}");
                assert_eq!(entry.ip.parse(), Ok(container.overlay_ip));
                assert!(!container.app_guid.is_empty());
            }
        }
    }
});
