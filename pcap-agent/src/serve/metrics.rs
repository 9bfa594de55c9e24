//! What `pcap-agent serve` counts, served as Prometheus (OpenMetrics) text
//! on the `[metrics]` listener (`pcap_proto::metrics`); docs/configuration.md
//! lists the names.
//!
//! The counters are the process's, one set for every capture: packet
//! counts are added when a capture ends, from the same report its
//! statistics messages (the pcapng statistics blocks) come from, so after
//! the captures they equal the sum of those blocks. No label names a
//! user, an app or an interface: `stage` and `code` take a handful of
//! values each.

use std::{net::SocketAddr, sync::LazyLock};

use pcap_proto::metrics::{Labels, MetricsRegistry};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};

use crate::capture::Report;

/// Where metrics are served when `[metrics] listen` is absent.
pub const DEFAULT_LISTEN: SocketAddr = pcap_proto::metrics::localhost(9495);

/// The agent's metrics.
pub struct Metrics {
    running: Gauge,
    seen: Counter,
    matched: Counter,
    sent: Counter,
    after_limit: Counter,
    dropped: Family<Labels, Counter>,
    sent_bytes: Counter,
    refused: Family<Labels, Counter>,
    registry: MetricsRegistry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = MetricsRegistry::new("pcap_agent");
        let metrics = Self {
            running: registry.add("captures_running", "Captures running now"),
            seen: registry.add(
                "packets_seen",
                "Packets the capture programs ran on (isb_ifrecv), of ended captures",
            ),
            matched: registry.add(
                "packets_matched",
                "Packets the filters accepted (isb_filteraccept), of ended captures",
            ),
            sent: registry.add(
                "packets_sent",
                "Packets queued for pcap-api, of ended captures",
            ),
            after_limit: registry.add(
                "packets_after_limit",
                "Packets read after a packet or byte limit and not sent, of ended captures",
            ),
            dropped: registry.add(
                "packets_dropped",
                "Packets dropped, by stage: kernel_ring (ring buffer full) and kernel_copy \
                 (isb_ifdrop), send_queue (isb_osdrop), of ended captures",
            ),
            sent_bytes: registry.add(
                "sent_bytes",
                "Bytes of capture messages handed to gRPC (protobuf-encoded)",
            ),
            refused: registry.add(
                "captures_refused",
                "Capture calls refused, by gRPC status code",
            ),
            registry,
        };
        // Every stage exists from the start, at 0.
        for stage in ["kernel_ring", "kernel_copy", "send_queue"] {
            let _ = metrics.dropped.get_or_create(&[("stage", stage)]);
        }
        metrics
    }

    /// A capture ended: adds what its report says (summed over its
    /// interfaces, as its statistics messages are).
    pub fn capture_ended(&self, report: &Report) {
        let total = report.total();
        self.seen.inc_by(total.kernel.seen);
        self.matched.inc_by(total.kernel.matched);
        self.sent.inc_by(total.delivered);
        self.after_limit.inc_by(total.after_limit);
        for (stage, count) in [
            ("kernel_ring", total.kernel.dropped_ring_full),
            ("kernel_copy", total.kernel.dropped_copy_failed),
            ("send_queue", total.dropped),
        ] {
            self.dropped
                .get_or_create(&[("stage", stage)])
                .inc_by(count);
        }
    }

    /// A `Capture` call was refused with `code`.
    pub fn refused(&self, code: tonic::Code) {
        pcap_proto::metrics::count_refusal(&self.refused, code);
    }

    /// `bytes` of a capture message left for the API.
    pub fn sent_bytes(&self, bytes: u64) {
        self.sent_bytes.inc_by(bytes);
    }

    /// The text a scrape gets, with `running` captures.
    pub fn render(&self, running: u32) -> String {
        self.running.set(i64::from(running));
        self.registry.render()
    }
}

#[cfg(test)]
mod tests {
    use pcap_common::Counters;

    use super::*;
    use crate::{
        capture::{InterfaceReport, StopReason},
        iface::{Interface, LinkLayerType},
    };

    fn value(text: &str, series: &str) -> u64 {
        pcap_proto::metrics::expect_sample(text, series)
    }

    #[test]
    fn ended_captures_add_up_and_refusals_count_by_code() {
        let metrics = Metrics::new();
        let interface = |name: &str| Interface {
            name: name.to_owned(),
            index: 2,
            link_type: 1,
            hardware_type: LinkLayerType::Ether,
        };
        let report = |seen| InterfaceReport {
            kernel: Counters {
                seen,
                matched: seen - 1,
                written: seen - 2,
                dropped_ring_full: 1,
                dropped_copy_failed: 0,
            },
            delivered: seen - 3,
            dropped: 1,
            after_limit: 0,
            removed_ns: None,
        };
        let text = metrics.render(0);
        assert_eq!(value(&text, "pcap_agent_packets_seen_total"), 0);
        assert_eq!(
            value(
                &text,
                "pcap_agent_packets_dropped_total{stage=\"send_queue\"}"
            ),
            0
        );
        metrics.capture_ended(&Report {
            interfaces: vec![
                (interface("eth0"), report(10)),
                (interface("eth1"), report(20)),
            ],
            stop: StopReason::Count,
        });
        metrics.capture_ended(&Report {
            interfaces: vec![(interface("eth0"), report(5))],
            stop: StopReason::Requested,
        });
        metrics.refused(tonic::Code::ResourceExhausted);
        metrics.sent_bytes(1234);
        let text = metrics.render(2);
        assert_eq!(value(&text, "pcap_agent_captures_running"), 2);
        assert_eq!(value(&text, "pcap_agent_packets_seen_total"), 35);
        assert_eq!(value(&text, "pcap_agent_packets_matched_total"), 32);
        assert_eq!(value(&text, "pcap_agent_packets_sent_total"), 26);
        assert_eq!(
            value(
                &text,
                "pcap_agent_packets_dropped_total{stage=\"kernel_ring\"}"
            ),
            3
        );
        assert_eq!(
            value(
                &text,
                "pcap_agent_packets_dropped_total{stage=\"send_queue\"}"
            ),
            3
        );
        assert_eq!(
            value(
                &text,
                "pcap_agent_packets_dropped_total{stage=\"kernel_copy\"}"
            ),
            0
        );
        assert_eq!(
            value(
                &text,
                "pcap_agent_captures_refused_total{code=\"resource_exhausted\"}"
            ),
            1
        );
        assert_eq!(value(&text, "pcap_agent_sent_bytes_total"), 1234);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
