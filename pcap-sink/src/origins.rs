//! The origins the API announced: ids to names and addresses.

use std::collections::BTreeMap;

use pcap_proto::v1::OriginDescription;

/// Origins by id, in id order.
#[derive(Debug, Default)]
pub struct Origins(BTreeMap<u32, OriginDescription>);

impl Origins {
    pub fn add(&mut self, origin: OriginDescription) {
        self.0.insert(origin.id, origin);
    }

    /// The origin's name, e.g. `vm-0`; `origin 3` if it was never announced.
    pub fn name(&self, id: u32) -> String {
        match self.0.get(&id) {
            Some(origin) if !origin.name.is_empty() => origin.name.clone(),
            _ => format!("origin {id}"),
        }
    }

    /// The name with the address when known, e.g. `vm-0 (10.0.0.2:9494)`.
    pub fn name_and_address(&self, id: u32) -> String {
        match self.0.get(&id) {
            Some(origin) if !origin.address.is_empty() => {
                format!("{} ({})", self.name(id), origin.address)
            }
            _ => self.name(id),
        }
    }

    pub fn address(&self, id: u32) -> Option<&str> {
        self.0
            .get(&id)
            .map(|origin| origin.address.as_str())
            .filter(|address| !address.is_empty())
    }
}
