use std::num::NonZeroU64;

use pcap_proto::v1::{
    CaptureStarted, CaptureStopped, Congested, ConnectionError, InstanceUnavailable,
    InvalidRequest, LimitReached, OriginDescription, StartFailed,
};

use super::*;

fn origins() -> Origins {
    let mut origins = Origins::default();
    for id in 0..3 {
        origins.add(OriginDescription {
            id,
            name: format!("vm-{id}"),
            address: format!("10.1.{id}.2:9494"),
        });
    }
    origins
}

fn event(origin: Option<u32>, message: &str, kind: event::Kind) -> Event {
    Event {
        origin,
        message: message.to_owned(),
        kind: Some(kind),
    }
}

fn describe(event: &Event) -> String {
    let limits = Limits {
        packets: NonZeroU64::new(100),
        ..Limits::default()
    };
    describe_event(event, &origins(), &limits, &["eth0", "eth1"]).unwrap()
}

#[test]
fn events_in_words() {
    let cases = [
        (
            event(
                Some(1),
                "connection refused",
                event::Kind::InstanceUnavailable(InstanceUnavailable {}),
            ),
            "vm-1 (10.1.1.2:9494) unavailable: connection refused",
        ),
        (
            event(
                Some(2),
                "client name not allowed",
                event::Kind::StartFailed(StartFailed { code: 7 }),
            ),
            "vm-2 refused the capture (PERMISSION_DENIED): client name not allowed",
        ),
        (
            event(
                Some(0),
                "",
                event::Kind::Congested(Congested {
                    stage: Stage::AgentQueue.into(),
                    dropped: 1234,
                }),
            ),
            "vm-0: 1234 packets dropped (agent send queue full: the network or this client is \
             slower than the traffic)",
        ),
        (
            event(
                None,
                "",
                event::Kind::LimitReached(LimitReached {
                    limit: Limit::Packets.into(),
                }),
            ),
            "limit reached: 100 packets",
        ),
        (
            event(
                None,
                "max_duration of the API",
                event::Kind::LimitReached(LimitReached {
                    limit: Limit::Duration.into(),
                }),
            ),
            "limit reached: max_duration of the API",
        ),
        (
            event(
                None,
                "unknown target \"x\"",
                event::Kind::InvalidRequest(InvalidRequest {}),
            ),
            "the API refused the request: unknown target \"x\"",
        ),
        (
            event(Some(0), "", event::Kind::CaptureStarted(CaptureStarted {})),
            "vm-0 (10.1.0.2:9494): capturing on eth0, eth1",
        ),
        (
            event(Some(0), "", event::Kind::CaptureStopped(CaptureStopped {})),
            "vm-0: stopped",
        ),
        (
            event(None, "", event::Kind::CaptureStopped(CaptureStopped {})),
            "capture stopped",
        ),
        (
            event(
                Some(1),
                "stream reset",
                event::Kind::ConnectionError(ConnectionError {}),
            ),
            "vm-1 (10.1.1.2:9494): connection lost: stream reset; its statistics will be missing",
        ),
        (
            event(Some(7), "", event::Kind::CaptureStopped(CaptureStopped {})),
            "origin 7: stopped",
        ),
    ];
    for (event, expected) in cases {
        assert_eq!(describe(&event), expected);
    }
}

#[test]
fn an_event_without_kind_shows_its_message_or_nothing() {
    let limits = Limits::default();
    let mut event = Event {
        origin: Some(0),
        message: "hello".into(),
        kind: None,
    };
    assert_eq!(
        describe_event(&event, &origins(), &limits, &[]).as_deref(),
        Some("vm-0: hello")
    );
    event.message.clear();
    assert_eq!(describe_event(&event, &origins(), &limits, &[]), None);
}

/// vm-0 captured and reported statistics, vm-1 was unavailable, vm-2
/// refused.
fn report() -> Report {
    let origins = origins();
    let mut report = Report::new(false, Limits::default());
    for id in 0..3 {
        report.origin_announced(id);
    }
    report.record(Some(0), &event::Kind::CaptureStarted(CaptureStarted {}));
    report.record(
        Some(1),
        &event::Kind::InstanceUnavailable(InstanceUnavailable {}),
    );
    report.record(Some(2), &event::Kind::StartFailed(StartFailed { code: 7 }));
    report.packets(
        0,
        Received {
            packets: 1000,
            bytes: 1_500_000,
        },
    );
    report.record(
        Some(0),
        &event::Kind::Congested(Congested {
            stage: Stage::AgentQueue.into(),
            dropped: 7,
        }),
    );
    assert_eq!(
        report.status_line(&origins),
        "pcap: 1000 packets, 1.5 MB, 7 dropped | vm-0 1000 pkts, 7 dropped | vm-1 unavailable \
         | vm-2 refused"
    );
    report.statistics(&Statistics {
        origin: 0,
        interface: 0,
        seen: 2000,
        matched: 1010,
        sent: 1000,
        dropped_kernel_ring: 2,
        dropped_agent_queue: 8,
        ..Statistics::default()
    });
    report
}

#[test]
fn status_line_and_summary_count_packets_bytes_and_drops() {
    let report = report();
    let origins = origins();
    assert_eq!(
        report.status_line(&origins),
        "pcap: 1000 packets, 1.5 MB, 10 dropped | vm-0 1000 pkts, 10 dropped | vm-1 unavailable \
         | vm-2 refused"
    );
    assert_eq!(
        report.summary(&origins),
        [
            "vm-0 (10.1.0.2:9494): 1000 packets (1.5 MB) received; seen 2000, matched 1010, \
             dropped 10 (kernel ring 2, agent queue 8)",
            "vm-1 (10.1.1.2:9494): unavailable",
            "vm-2 (10.1.2.2:9494): refused (PERMISSION_DENIED)",
        ]
    );
}

#[test]
fn summary_of_a_lost_origin_says_so() {
    let mut report = Report::new(false, Limits::default());
    report.origin_announced(0);
    report.record(Some(0), &event::Kind::ConnectionError(ConnectionError {}));
    assert_eq!(
        report.summary(&origins()),
        [
            "vm-0 (10.1.0.2:9494): 0 packets (0 B) received before its connection broke; \
          no statistics arrived"
        ]
    );
}

#[test]
fn outcome_fails_only_when_nothing_could_start() {
    assert!(!report().finish(&origins()).nothing_started);

    let mut all_failed = Report::new(false, Limits::default());
    all_failed.record(
        Some(0),
        &event::Kind::InstanceUnavailable(InstanceUnavailable {}),
    );
    all_failed.record(Some(1), &event::Kind::StartFailed(StartFailed { code: 3 }));
    assert!(all_failed.finish(&origins()).nothing_started);

    let mut invalid = Report::new(false, Limits::default());
    invalid.record(None, &event::Kind::InvalidRequest(InvalidRequest {}));
    assert!(invalid.finish(&origins()).nothing_started);

    let mut stopped_early = Report::new(false, Limits::default());
    stopped_early.origin_announced(0);
    assert!(!stopped_early.finish(&origins()).nothing_started);
}

#[test]
fn a_limit_is_told_once() {
    let mut report = Report::new(false, Limits::default());
    let reached = event::Kind::LimitReached(LimitReached {
        limit: Limit::Duration.into(),
    });
    report.event(&event(Some(0), "", reached.clone()), &origins(), &[]);
    report.event(&event(Some(1), "", reached), &origins(), &[]);
    assert_eq!(report.limits_told, [Limit::Duration]);
}

#[test]
fn bytes_in_decimal_units() {
    assert_eq!(format_bytes(0), "0 B");
    assert_eq!(format_bytes(999), "999 B");
    assert_eq!(format_bytes(1000), "1.0 kB");
    assert_eq!(format_bytes(1_234_567), "1.2 MB");
    assert_eq!(format_bytes(5_000_000_000_000), "5.0 TB");
}

#[test]
fn status_line_fits_the_terminal() {
    assert_eq!(fit("abcdef", 6), "abcdef");
    assert_eq!(fit("abcdef", 4), "abc…");
}

#[test]
fn code_names_are_grpc_names() {
    assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    assert_eq!(code_name(Code::from(8)), "RESOURCE_EXHAUSTED");
}

#[test]
fn instance_changes_and_gaps_in_words() {
    use pcap_proto::v1::{Disconnected, InstanceChange, InstanceChanged, Reconnected};
    let changed = |change: InstanceChange, successor: Option<u32>| {
        event::Kind::InstanceChanged(InstanceChanged {
            change: change.into(),
            state: String::new(),
            successor,
        })
    };
    let cases = [
        (
            event(
                Some(1),
                "CC says CRASHED",
                changed(InstanceChange::Crashed, None),
            ),
            "vm-1: instance crashed: CC says CRASHED",
        ),
        (
            event(Some(1), "", changed(InstanceChange::Moved, Some(2))),
            "vm-1: instance moved to another cell; now captured as vm-2",
        ),
        (
            event(Some(2), "running", changed(InstanceChange::Added, Some(2))),
            "vm-2: new instance, capturing it: running",
        ),
        (
            event(Some(0), "broke", event::Kind::Disconnected(Disconnected {})),
            "vm-0 (10.1.0.2:9494): connection lost: broke; capturing again when its agent is back",
        ),
        (
            event(
                Some(0),
                "back",
                event::Kind::Reconnected(Reconnected {
                    gap_ns: 1_250_000_000,
                }),
            ),
            "vm-0: capturing again after a gap of 1.2s (packets of that time are missing): back",
        ),
    ];
    for (event, expected) in cases {
        assert_eq!(describe(&event), expected);
    }
    let mut report = report();
    report.event(
        &event(Some(0), "", event::Kind::Disconnected(Disconnected {})),
        &origins(),
        &[],
    );
    assert_eq!(report.progress[&0].state, State::Lost);
    report.event(
        &event(
            Some(0),
            "",
            event::Kind::Reconnected(Reconnected { gap_ns: 1 }),
        ),
        &origins(),
        &[],
    );
    assert_eq!(report.progress[&0].state, State::Started);
}
