//! What `pcap-api serve` counts, served as Prometheus (OpenMetrics) text on
//! the `[metrics]` listener (`pcap_proto::metrics`); docs/configuration.md
//! lists the names.
//!
//! The counters are the process's. Captures are counted where the audit
//! log writes its lines (`audit`), so both always agree; no label names a
//! user, an app or a target: `kind`, `code` and `reason` take a handful of
//! values each.

use std::{net::SocketAddr, sync::LazyLock};

use pcap_proto::{
    metrics::{Labels, MetricsRegistry},
    v1::{Target, target::Kind},
};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};

/// Where metrics are served when `[metrics] listen` is absent.
pub const DEFAULT_LISTEN: SocketAddr = pcap_proto::metrics::localhost(9496);

/// The target kinds, as the `kind` label says them.
pub const TARGET_KINDS: [&str; 3] = ["static", "bosh", "cf"];

/// The API's metrics.
pub struct Metrics {
    running: Family<Labels, Gauge>,
    started: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    ended: Family<Labels, Counter>,
    agent_connection_failures: Counter,
    out_of_order: Counter,
    held_bytes: Gauge,
    store_uploads: Counter,
    store_failures: Counter,
    registry: MetricsRegistry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The `kind` label of a capture of `target`.
pub fn target_kind(target: Option<&Target>) -> &'static str {
    match target.and_then(|t| t.kind.as_ref()) {
        Some(Kind::Static(_)) => "static",
        Some(Kind::Bosh(_)) => "bosh",
        Some(Kind::CfApp(_)) => "cf",
        None => "none",
    }
}

/// The `reason` label of a capture that ended with `outcome` (the audit
/// log's words for it).
pub fn ended_reason(outcome: &str) -> &'static str {
    if outcome == "every agent ended" {
        "agents_ended"
    } else if outcome == "no agent started" {
        "no_agent_started"
    } else if outcome.contains("limit") {
        "limit"
    } else if outcome.contains("shutting down") {
        "shutdown"
    } else if outcome.contains("store") {
        "store_failed"
    } else if outcome.contains("went away") || outcome.contains("broke") {
        "client_gone"
    } else if outcome.contains("client") {
        "client_stopped"
    } else {
        "other"
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = MetricsRegistry::new("pcap_api");
        let metrics = Self {
            running: registry.add(
                "captures_running",
                "Captures running now, by target kind (static, bosh, cf)",
            ),
            started: registry.add("captures_started", "Captures started, by target kind"),
            refused: registry.add(
                "captures_refused",
                "Capture requests refused, by gRPC status code",
            ),
            ended: registry.add(
                "captures_ended",
                "Captures ended, by reason (agents_ended, no_agent_started, limit, \
                 client_stopped, client_gone, shutdown, store_failed, other)",
            ),
            agent_connection_failures: registry.add(
                "agent_connection_failures",
                "Connections to agents that failed (unreachable, timed out, TLS refused)",
            ),
            out_of_order: registry.add(
                "merge_out_of_order_packets",
                "Packets that arrived after the reorder window and went out of order",
            ),
            held_bytes: registry.add(
                "merge_held_bytes",
                "Bytes the reorder windows of all captures hold now",
            ),
            store_uploads: registry.add(
                "store_uploads",
                "Stored captures completed in the object store",
            ),
            store_failures: registry.add(
                "store_failures",
                "Object store requests of stored captures that failed (a part, \
                 completing or aborting an upload)",
            ),
            registry,
        };
        // Every kind exists from the start, at 0.
        for kind in TARGET_KINDS {
            let _ = metrics.running.get_or_create(&[("kind", kind)]);
            let _ = metrics.started.get_or_create(&[("kind", kind)]);
        }
        metrics
    }

    /// A capture of a `kind` target started.
    pub fn capture_started(&self, kind: &'static str) {
        self.started.get_or_create(&[("kind", kind)]).inc();
        self.running.get_or_create(&[("kind", kind)]).inc();
    }

    /// A capture of a `kind` target that started ended with `outcome`.
    pub fn capture_ended(&self, kind: &'static str, outcome: &str) {
        self.running.get_or_create(&[("kind", kind)]).dec();
        self.ended
            .get_or_create(&[("reason", ended_reason(outcome))])
            .inc();
    }

    /// A capture request was refused with `code`.
    pub fn capture_refused(&self, code: tonic::Code) {
        pcap_proto::metrics::count_refusal(&self.refused, code);
    }

    pub fn agent_connection_failed(&self) {
        self.agent_connection_failures.inc();
    }

    pub fn out_of_order(&self) {
        self.out_of_order.inc();
    }

    /// A reorder window now holds `bytes` more (negative: fewer).
    pub fn held_bytes(&self, bytes: i64) {
        self.held_bytes.inc_by(bytes);
    }

    pub fn store_uploaded(&self) {
        self.store_uploads.inc();
    }

    pub fn store_failed(&self) {
        self.store_failures.inc();
    }

    /// The text a scrape gets.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}

#[cfg(test)]
mod tests {
    use pcap_proto::v1::{BoshTarget, CfAppTarget, StaticTarget};

    use super::*;

    fn value(text: &str, series: &str) -> i64 {
        pcap_proto::metrics::expect_sample(text, series)
    }

    #[test]
    fn captures_count_by_kind_code_and_reason() {
        let metrics = Metrics::new();
        let text = metrics.render();
        for kind in TARGET_KINDS {
            assert_eq!(
                value(
                    &text,
                    &format!("pcap_api_captures_running{{kind=\"{kind}\"}}")
                ),
                0
            );
        }
        metrics.capture_started("cf");
        metrics.capture_started("static");
        metrics.capture_ended("static", "the packet limit was reached");
        metrics.capture_refused(tonic::Code::NotFound);
        metrics.held_bytes(100);
        metrics.held_bytes(-40);
        let text = metrics.render();
        assert_eq!(value(&text, "pcap_api_captures_running{kind=\"cf\"}"), 1);
        assert_eq!(
            value(&text, "pcap_api_captures_running{kind=\"static\"}"),
            0
        );
        assert_eq!(
            value(&text, "pcap_api_captures_started_total{kind=\"static\"}"),
            1
        );
        assert_eq!(
            value(&text, "pcap_api_captures_ended_total{reason=\"limit\"}"),
            1
        );
        assert_eq!(
            value(&text, "pcap_api_captures_refused_total{code=\"not_found\"}"),
            1
        );
        assert_eq!(value(&text, "pcap_api_merge_held_bytes"), 60);
        assert_eq!(value(&text, "pcap_api_store_uploads_total"), 0);
    }

    #[test]
    fn labels_are_few() {
        let target = |kind| Target { kind: Some(kind) };
        assert_eq!(
            target_kind(Some(&target(Kind::Static(StaticTarget::default())))),
            "static"
        );
        assert_eq!(
            target_kind(Some(&target(Kind::Bosh(BoshTarget::default())))),
            "bosh"
        );
        assert_eq!(
            target_kind(Some(&target(Kind::CfApp(CfAppTarget::default())))),
            "cf"
        );
        assert_eq!(target_kind(None), "none");
        for (outcome, reason) in [
            ("every agent ended", "agents_ended"),
            ("no agent started", "no_agent_started"),
            ("the byte limit was reached", "limit"),
            ("the API is shutting down", "shutdown"),
            ("the client stopped the capture", "client_stopped"),
            ("the client closed its request stream", "client_stopped"),
            ("the client went away", "client_gone"),
            ("the client's request stream broke", "client_gone"),
            ("the capture store failed", "store_failed"),
            ("the stored capture cannot be written", "store_failed"),
            ("something new", "other"),
        ] {
            assert_eq!(ended_reason(outcome), reason, "{outcome}");
        }
    }
}
