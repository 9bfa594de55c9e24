//! pcap-api: authenticates users, finds the agents of what they want to
//! capture, starts a capture on each, and merges the agents' streams into
//! one, in timestamp order, for the client.
//!
//! A capture: `service` checks the request (`auth`, `resolvers` picks the
//! resolver of the target's kind, `resolve` holds what they share, `limits`;
//! `bosh` resolves BOSH targets at a director, `cf` app instances at
//! Cloud Controller, `uaa` checks UAA tokens; `audit` logs who captured what),
//! then one `fanout` task per agent feeds one `session` (`follow` watches an
//! app capture's instances and starts new ones), which sends
//! packets through the reorder window (`merge`) to the client. `stop` carries
//! "stop" and "abort" to every task of a capture; `server` serves and
//! drains. `store` writes `--store` captures to S3-compatible storage.
//! `config` assembles the configuration sections each of those modules owns;
//! `validate` holds the checks they share and imports nothing from the crate.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod bosh;
pub mod cf;
pub mod config;
pub mod fanout;
pub mod follow;
pub mod health;
pub mod limits;
pub mod merge;
pub mod metrics;
pub mod resolve;
pub mod resolvers;
pub mod server;
pub mod service;
pub mod session;
pub mod stop;
pub mod store;
pub mod uaa;
pub mod validate;
