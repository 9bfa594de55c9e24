//! Cloud Foundry's platform as pcap speaks to it: typed clients and the
//! wire types of Cloud Controller v3 ([`cloud_controller`]), the BOSH
//! director ([`director`]) and UAA ([`uaa`]), and silk's container metadata
//! store ([`silk`]).
//!
//! pcap-api's resolvers and authenticators, the `pcap` CLI (`pcap app`,
//! `pcap bosh`, `cf pcap`), the agent's c2c insight and the test servers
//! share these types: the servers serialize what the clients deserialize.
//!
//! The clients take a `reqwest::Client` built by their caller, who decides
//! which certificates to trust; they return errors that keep the status and
//! the cause, and callers word them for their own users. Without the
//! default `client` feature only the wire types are built.
#![forbid(unsafe_code)]

pub mod cloud_controller;
pub mod director;
#[cfg(feature = "client")]
mod http;
pub mod silk;
pub mod uaa;

#[cfg(feature = "client")]
pub use http::{Endpoint, ErrorBody, Server};
