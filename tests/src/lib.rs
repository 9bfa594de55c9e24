//! Helpers for system tests (and the demo and benchmarks): network
//! namespaces that clean up after themselves, the binaries under test,
//! reference tools, and a capture-file reader.
#![forbid(unsafe_code)]

pub mod captures;
pub mod netns;
pub mod process;
