//! The audit log: structured lines with the tracing target `audit`, one when
//! a capture is refused (whatever refused it: the token, the target, a
//! limit), one when it starts, and one when it ends. Each carries who asked
//! (`issuer`: `static` or the UAA's `iss`; `user_id`, the identity; `user`,
//! the display name), what for (`target`, e.g. `cf:<app guid>/web/0,2`, and
//! at the start and end the `origins`, e.g. `my-app/0`), the `filter`, and
//! the `decision` (`allowed` or `refused`, with the gRPC `code` and the
//! `reason`; at the end, the `outcome`). A refusal before the request was
//! read (no token, one no authenticator accepts, a shutdown, no `start`)
//! has empty `target` and `filter`. Tokens never reach it.
//!
//! Every value a caller controls (names, a filter, a token's `kid` inside a
//! reason, an app's name inside an origin) is written escaped, Rust-string
//! style in quotes (`"a\nb"`), and cut to [`MAX_FIELD_CHARS`] characters
//! plus `…`, so that it can neither forge a line nor flood the log.
//!
//! With the default format a line reads `<time>  INFO audit: capture
//! refused issuer="static" user_id="alice" ...`: find them with
//! `grep ' audit: '`. The log filter is `PCAP_LOG` (e.g.
//! `PCAP_LOG=warn,audit=info` keeps only warnings and the audit lines).

use std::{fmt, time::Duration};

use pcap_proto::v1::StartCapture;

use crate::{auth::User, resolve};

/// At most this many characters of a caller's value reach a log line.
pub const MAX_FIELD_CHARS: usize = 256;

/// A value a caller controls, as it may appear in a log line or a message:
/// in quotes, with control characters, quotes and backslashes escaped, cut
/// to [`MAX_FIELD_CHARS`] characters (then `…` after the closing quote).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_FIELD_CHARS) {
            Some((end, _)) => write!(f, "{:?}…", &self.0[..end]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `value` escaped and capped (see [`Escaped`]).
pub fn escaped(value: &str) -> String {
    Escaped(value).to_string()
}

/// A capture request of an authenticated user, before it is checked
/// further.
pub struct Request {
    issuer: String,
    user_id: String,
    user: String,
    target: String,
    filter: String,
    /// The target's kind, for metrics (`crate::metrics::target_kind`).
    kind: &'static str,
}

/// One audit line about a [`Request`]: the caller, the target and the
/// filter, then the given fields and message.
macro_rules! audit_line {
    ($request:expr, $($rest:tt)+) => {
        tracing::info!(
            target: "audit",
            issuer = %Escaped(&$request.issuer),
            user_id = %Escaped(&$request.user_id),
            user = %Escaped(&$request.user),
            target = %Escaped(&$request.target),
            filter = %Escaped(&$request.filter),
            $($rest)+
        )
    };
}

impl Request {
    pub fn new(user: &User, start: &StartCapture) -> Self {
        Self {
            target: resolve::describe(start.target.as_ref()),
            kind: crate::metrics::target_kind(start.target.as_ref()),
            filter: start
                .options
                .as_ref()
                .map(|o| o.filter.clone())
                .unwrap_or_default(),
            ..Self::unread(user)
        }
    }

    /// The caller `user`, whose request was not read (yet): no target, no
    /// filter.
    pub fn unread(user: &User) -> Self {
        Self {
            issuer: user.issuer.label().to_owned(),
            user_id: user.id.clone(),
            user: user.name.clone(),
            target: String::new(),
            filter: String::new(),
            kind: crate::metrics::target_kind(None),
        }
    }

    /// The request was refused before anything started: `status` is what
    /// the client got, `reason` what the operator needs to know (it may say
    /// more than the client is told).
    pub fn refused(&self, status: &tonic::Status, reason: &str) {
        crate::metrics::metrics().capture_refused(status.code());
        audit_line!(
            self,
            decision = "refused",
            code = ?status.code(),
            reason = %Escaped(reason),
            "capture refused"
        );
    }

    /// The request passed every check; its agents start now.
    pub fn allowed(&self, origins: &[&str], store: bool) {
        crate::metrics::metrics().capture_started(self.kind);
        audit_line!(
            self,
            decision = "allowed",
            origins = %Escaped(&origins.join(",")),
            store,
            "capture started"
        );
    }

    /// The capture ran and ended.
    pub fn ended(&self, capture: &Ended<'_>) {
        crate::metrics::metrics().capture_ended(self.kind, capture.outcome);
        audit_line!(
            self,
            decision = "allowed",
            origins = %Escaped(&capture.origins.join(",")),
            duration_s = capture.duration.as_secs_f64(),
            outcome = %Escaped(capture.outcome),
            packets = capture.packets,
            "capture ended"
        );
    }
}

/// A request whose token was missing or not accepted: nobody is known, and
/// the request was not read.
pub fn unauthenticated(error: &dyn std::error::Error) {
    crate::metrics::metrics().capture_refused(tonic::Code::Unauthenticated);
    tracing::info!(
        target: "audit",
        issuer = "",
        user_id = "",
        user = "",
        target = "",
        filter = "",
        decision = "refused",
        code = ?tonic::Code::Unauthenticated,
        reason = %Escaped(&error.to_string()),
        "capture refused"
    );
}

/// How a capture that ran ended.
pub struct Ended<'a> {
    pub origins: &'a [&'a str],
    pub duration: Duration,
    pub outcome: &'a str,
    pub packets: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_capped() {
        assert_eq!(escaped("alice"), "\"alice\"");
        assert_eq!(
            escaped("x\n2026-12-04T00:00:00Z  INFO audit: forged\r\u{1b}[31m\"\\"),
            "\"x\\n2026-12-04T00:00:00Z  INFO audit: forged\\r\\u{1b}[31m\\\"\\\\\""
        );
        let long = "é".repeat(1000);
        let shown = escaped(&long);
        assert_eq!(shown.chars().count(), MAX_FIELD_CHARS + 3);
        assert!(shown.ends_with("\"…"), "{shown}");
        let exact = "a".repeat(MAX_FIELD_CHARS);
        assert_eq!(escaped(&exact), format!("\"{exact}\""));
    }
}
