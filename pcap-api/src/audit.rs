//! The audit log: one structured line (tracing target `audit`) per
//! capture request, whatever became of it: who asked, for what (the
//! target, e.g. `cf:<app guid>/web/0,2`, and the origins, e.g.
//! `my-app/0`), with which filter, for how long, and the outcome.
//! Tokens never reach it.
//!
//! Operators route it with `RUST_LOG` / the subscriber's filter, e.g.
//! `info,audit=info`, and find it by `target=audit` in the output.

use std::time::Duration;

use pcap_proto::v1::StartCapture;

use crate::{auth::User, resolve};

/// A capture request, before it is checked further.
pub struct Request {
    user: String,
    target: String,
    filter: String,
}

impl Request {
    pub fn new(user: &User, start: &StartCapture) -> Self {
        Self {
            user: user.name.clone(),
            target: resolve::describe(start.target.as_ref()),
            filter: start
                .options
                .as_ref()
                .map(|o| o.filter.clone())
                .unwrap_or_default(),
        }
    }

    /// The request was refused before anything started.
    pub fn refused(&self, status: &tonic::Status) {
        tracing::info!(
            target: "audit",
            user = %self.user,
            target_kind = %self.target,
            origins = "",
            filter = %self.filter,
            duration_s = 0.0,
            outcome = %format!("refused: {:?}: {}", status.code(), status.message()),
            "capture refused"
        );
    }
}

/// A request whose token was missing or not accepted.
pub fn unauthenticated(error: &dyn std::error::Error) {
    tracing::info!(
        target: "audit",
        user = "",
        outcome = %format!("refused: Unauthenticated: {error}"),
        "capture refused"
    );
}

/// A capture that ran.
pub struct Ended<'a> {
    pub user: &'a str,
    pub target: &'a str,
    pub origins: &'a [&'a str],
    pub filter: &'a str,
    pub duration: Duration,
    pub outcome: &'a str,
    pub packets: u64,
}

pub fn ended(capture: &Ended<'_>) {
    tracing::info!(
        target: "audit",
        user = %capture.user,
        target_kind = %capture.target,
        origins = %capture.origins.join(","),
        filter = %capture.filter,
        duration_s = capture.duration.as_secs_f64(),
        outcome = %capture.outcome,
        packets = capture.packets,
        "capture ended"
    );
}
