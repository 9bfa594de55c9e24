//! What the user reads on stderr: events in words, a status line on a
//! terminal, and a summary per origin at the end.
//!
//! On a terminal the status line (packets, bytes and drops per origin) is
//! redrawn four times a second and events are printed above it; otherwise
//! each event is one line as it comes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::time::Duration;

use pcap_proto::options::Limits;
use pcap_proto::v1::{Event, Limit, Stage, Statistics, event};
use pcap_sink::Received;
use tonic::Code;

use crate::origins::Origins;

/// How often the terminal's status line is redrawn.
pub const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// How a capture went, for the exit status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The API refused the request, or every origin failed to start.
    pub nothing_started: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Announced,
    Started,
    Unavailable,
    Refused(Code),
    Stopped,
    Lost,
}

/// What arrived from one origin.
#[derive(Debug, Default)]
struct Progress {
    state: State,
    packets: u64,
    bytes: u64,
    /// Drops reported by `congested` events, until statistics arrive.
    congested: u64,
    /// Final counts, one per interface.
    statistics: Vec<Statistics>,
}

impl Progress {
    fn dropped(&self) -> u64 {
        if self.statistics.is_empty() {
            self.congested
        } else {
            self.statistics
                .iter()
                .map(stage_drops)
                .map(|d| d.iter().sum::<u64>())
                .sum()
        }
    }
}

pub struct Report {
    terminal: bool,
    /// The limits the user asked for, to say which one was reached.
    limits: Limits,
    progress: BTreeMap<u32, Progress>,
    /// Limits already announced: every origin reports the same one.
    limits_told: Vec<Limit>,
    invalid_request: bool,
    /// A status line is on screen and must be cleared before printing.
    line_shown: bool,
}

impl Report {
    pub fn new(terminal: bool, limits: Limits) -> Self {
        Self {
            terminal,
            limits,
            progress: BTreeMap::new(),
            limits_told: Vec::new(),
            invalid_request: false,
            line_shown: false,
        }
    }

    pub fn origin_announced(&mut self, id: u32) {
        self.progress.entry(id).or_default();
    }

    /// Counts what a batch of `origin` held.
    pub fn packets(&mut self, origin: u32, received: Received) {
        let progress = self.progress.entry(origin).or_default();
        progress.packets += received.packets;
        progress.bytes += received.bytes;
    }

    /// Counts from a stored capture's `Progress`, in place of packets.
    pub fn progress(&mut self, progress: &pcap_proto::v1::Progress) {
        for origin in &progress.origins {
            let counts = self.progress.entry(origin.origin).or_default();
            counts.packets += origin.packets;
            counts.bytes += origin.bytes;
        }
    }

    pub fn statistics(&mut self, statistics: &Statistics) {
        let progress = self.progress.entry(statistics.origin).or_default();
        progress.statistics.push(*statistics);
    }

    /// Records `event` and prints it. `interfaces` names the origin's
    /// interfaces, for `capture_started`.
    pub fn event(&mut self, event: &Event, origins: &Origins, interfaces: &[&str]) {
        if let Some(kind) = &event.kind {
            if let event::Kind::LimitReached(reached) = kind {
                let limit = reached.limit();
                if self.limits_told.contains(&limit) {
                    return;
                }
                self.limits_told.push(limit);
            }
            self.record(event.origin, kind);
        }
        if let Some(line) = describe_event(event, origins, &self.limits, interfaces) {
            self.say(&line);
        }
    }

    fn record(&mut self, origin: Option<u32>, kind: &event::Kind) {
        let Some(origin) = origin else {
            if let event::Kind::InvalidRequest(_) = kind {
                self.invalid_request = true;
            }
            return;
        };
        let progress = self.progress.entry(origin).or_default();
        match kind {
            event::Kind::InstanceUnavailable(_) => progress.state = State::Unavailable,
            event::Kind::StartFailed(failed) => {
                progress.state = State::Refused(Code::from(failed.code));
            }
            event::Kind::InvalidRequest(_) => {
                progress.state = State::Refused(Code::InvalidArgument);
            }
            event::Kind::CaptureStarted(_) | event::Kind::Reconnected(_) => {
                progress.state = State::Started;
            }
            event::Kind::CaptureStopped(_) => progress.state = State::Stopped,
            event::Kind::ConnectionError(_) | event::Kind::Disconnected(_) => {
                progress.state = State::Lost;
            }
            event::Kind::Congested(congested) => progress.congested += congested.dropped,
            // The origin goes on with its other interfaces, if any; an
            // instance change is told, the agent's events say the rest.
            event::Kind::LimitReached(_)
            | event::Kind::InterfaceRemoved(_)
            | event::Kind::InstanceChanged(_) => {}
        }
    }

    /// Prints one line (`pcap: ` is added), above the status line if any.
    pub fn say(&mut self, line: &str) {
        let mut stderr = io::stderr().lock();
        if self.line_shown {
            let _ = write!(stderr, "\r\x1b[K");
            self.line_shown = false;
        }
        let _ = writeln!(stderr, "pcap: {line}");
    }

    /// Redraws the status line, on a terminal.
    pub fn tick(&mut self, origins: &Origins) {
        if !self.terminal {
            return;
        }
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(80_usize);
        let line = fit(&self.status_line(origins), width.saturating_sub(1));
        let _ = write!(io::stderr().lock(), "\r\x1b[K{line}");
        self.line_shown = true;
    }

    /// Clears the status line and prints a summary per origin.
    pub fn finish(&mut self, origins: &Origins) -> Outcome {
        for line in self.summary(origins) {
            self.say(&line);
        }
        let every_origin_failed = !self.progress.is_empty()
            && self
                .progress
                .values()
                .all(|p| matches!(p.state, State::Unavailable | State::Refused(_)));
        Outcome {
            nothing_started: self.invalid_request || every_origin_failed,
        }
    }

    /// E.g. `pcap: 1200 packets, 1.5 MB, 3 dropped | vm-0 1000 pkts, 0 dropped | vm-1 unavailable`.
    fn status_line(&self, origins: &Origins) -> String {
        let packets: u64 = self.progress.values().map(|p| p.packets).sum();
        let bytes: u64 = self.progress.values().map(|p| p.bytes).sum();
        let dropped: u64 = self.progress.values().map(Progress::dropped).sum();
        let mut line = format!(
            "pcap: {packets} packets, {}, {dropped} dropped",
            format_bytes(bytes)
        );
        for (id, progress) in &self.progress {
            let _ = write!(line, " | {} ", origins.name(*id));
            match progress.state {
                State::Unavailable => line.push_str("unavailable"),
                State::Refused(_) => line.push_str("refused"),
                State::Lost => line.push_str("lost"),
                State::Announced | State::Started | State::Stopped => {
                    let _ = write!(
                        line,
                        "{} pkts, {} dropped",
                        progress.packets,
                        progress.dropped()
                    );
                }
            }
        }
        line
    }

    /// One line per origin: what arrived and where packets were dropped.
    fn summary(&self, origins: &Origins) -> Vec<String> {
        let mut lines = Vec::new();
        for (id, progress) in &self.progress {
            let origin = origins.name_and_address(*id);
            let line = match progress.state {
                State::Unavailable => format!("{origin}: unavailable"),
                State::Refused(code) => format!("{origin}: refused ({})", code_name(code)),
                State::Announced | State::Started | State::Stopped | State::Lost => {
                    summarize_origin(&origin, progress)
                }
            };
            lines.push(line);
        }
        lines
    }
}

fn summarize_origin(origin: &str, progress: &Progress) -> String {
    let mut line = format!(
        "{origin}: {} packets ({}) received",
        progress.packets,
        format_bytes(progress.bytes)
    );
    if progress.state == State::Lost {
        line.push_str(" before its connection broke");
    }
    if progress.statistics.is_empty() {
        if progress.congested > 0 {
            let _ = write!(line, ", at least {} dropped", progress.congested);
        }
        line.push_str("; no statistics arrived");
        return line;
    }
    let seen: u64 = progress.statistics.iter().map(|s| s.seen).sum();
    let matched: u64 = progress.statistics.iter().map(|s| s.matched).sum();
    let mut drops = [0; 3];
    for statistics in &progress.statistics {
        for (total, dropped) in drops.iter_mut().zip(stage_drops(statistics)) {
            *total += dropped;
        }
    }
    let _ = write!(
        line,
        "; seen {seen}, matched {matched}, dropped {}",
        drops.iter().sum::<u64>()
    );
    let stages = ["kernel ring", "kernel copy", "agent queue"];
    let causes: Vec<String> = stages
        .iter()
        .zip(drops)
        .filter(|(_, dropped)| *dropped > 0)
        .map(|(stage, dropped)| format!("{stage} {dropped}"))
        .collect();
    if !causes.is_empty() {
        let _ = write!(line, " ({})", causes.join(", "));
    }
    line
}

/// Drops of the kernel ring, kernel copy and agent queue stages.
fn stage_drops(statistics: &Statistics) -> [u64; 3] {
    [
        statistics.dropped_kernel_ring,
        statistics.dropped_kernel_copy,
        statistics.dropped_agent_queue,
    ]
}

/// An event in words, without the `pcap: ` prefix; `None` for an event
/// without a kind or message.
fn describe_event(
    event: &Event,
    origins: &Origins,
    limits: &Limits,
    interfaces: &[&str],
) -> Option<String> {
    let origin = event.origin.map(|id| origins.name(id));
    let with_address = event.origin.map(|id| origins.name_and_address(id));
    let because = if event.message.is_empty() {
        String::new()
    } else {
        format!(": {}", event.message)
    };
    let about = |text: &str| match &origin {
        Some(origin) => format!("{origin}: {text}"),
        None => text.to_owned(),
    };
    let Some(kind) = &event.kind else {
        return (!event.message.is_empty()).then(|| about(&event.message));
    };
    Some(match kind {
        event::Kind::InstanceUnavailable(_) => format!(
            "{} unavailable{because}",
            with_address.as_deref().unwrap_or("an origin")
        ),
        event::Kind::StartFailed(failed) => format!(
            "{} refused the capture ({}){because}",
            origin.as_deref().unwrap_or("an origin"),
            code_name(Code::from(failed.code))
        ),
        event::Kind::InvalidRequest(_) => match &origin {
            Some(origin) => format!("{origin} refused the request{because}"),
            None => format!("the API refused the request{because}"),
        },
        event::Kind::Congested(congested) => about(&format!(
            "{} packets dropped ({})",
            congested.dropped,
            stage_explanation(congested.stage())
        )),
        event::Kind::LimitReached(reached) => {
            format!(
                "limit reached: {}",
                describe_limit(reached.limit(), limits, &event.message)
            )
        }
        event::Kind::CaptureStarted(_) => match &with_address {
            Some(origin) if interfaces.is_empty() => format!("{origin}: capturing"),
            Some(origin) => format!("{origin}: capturing on {}", interfaces.join(", ")),
            None => "capture started".to_owned(),
        },
        event::Kind::CaptureStopped(_) => match &origin {
            Some(origin) => format!("{origin}: stopped"),
            None => "capture stopped".to_owned(),
        },
        event::Kind::ConnectionError(_) => format!(
            "{}: connection lost{because}; its statistics will be missing",
            with_address.as_deref().unwrap_or("an origin")
        ),
        event::Kind::InterfaceRemoved(_) => about(if event.message.is_empty() {
            "an interface was removed"
        } else {
            &event.message
        }),
        event::Kind::Disconnected(_) => format!(
            "{}: connection lost{because}; capturing again when its agent is back",
            with_address.as_deref().unwrap_or("an origin")
        ),
        event::Kind::Reconnected(reconnected) => about(&format!(
            "capturing again after a gap of {:.1}s (packets of that time are missing){because}",
            Duration::from_nanos(reconnected.gap_ns).as_secs_f64()
        )),
        event::Kind::InstanceChanged(changed) => {
            about(&describe_instance_change(changed, origins, &because))
        }
    })
}

/// "instance crashed; now captured as my-app/1#1: ...", for an origin.
fn describe_instance_change(
    changed: &pcap_proto::v1::InstanceChanged,
    origins: &Origins,
    because: &str,
) -> String {
    use pcap_proto::v1::InstanceChange;
    let what = match changed.change() {
        InstanceChange::Stopped => "instance stopped",
        InstanceChange::Crashed => "instance crashed",
        InstanceChange::Restarted => "instance restarted",
        InstanceChange::Moved => "instance moved to another cell",
        InstanceChange::Added => "new instance, capturing it",
        InstanceChange::Unspecified => "instance changed",
    };
    match changed.successor {
        Some(successor) if changed.change() != InstanceChange::Added => format!(
            "{what}; now captured as {}{because}",
            origins.name(successor)
        ),
        _ => format!("{what}{because}"),
    }
}

fn stage_explanation(stage: Stage) -> &'static str {
    match stage {
        Stage::KernelRing => {
            "kernel ring buffer full: the agent reads slower than the traffic arrives"
        }
        Stage::KernelCopy => "the kernel could not copy them",
        Stage::AgentQueue => {
            "agent send queue full: the network or this client is slower than the traffic"
        }
        Stage::Unspecified => "for an unknown reason",
    }
}

/// The limit in the user's terms when they set it, e.g. `100 packets`.
fn describe_limit(limit: Limit, asked: &Limits, message: &str) -> String {
    let described = match limit {
        Limit::Packets => asked.packets.map(|n| format!("{n} packets")),
        Limit::Bytes => asked.bytes.map(|n| format!("{n} bytes")),
        Limit::Duration => asked
            .duration
            .map(|d| format!("{} seconds", d.as_secs_f64())),
        Limit::Unspecified => None,
    };
    match (described, message.is_empty()) {
        (Some(described), _) => described,
        (None, false) => message.to_owned(),
        (None, true) => match limit {
            Limit::Packets => "packets",
            Limit::Bytes => "bytes",
            Limit::Duration => "duration",
            Limit::Unspecified => "a limit of the API",
        }
        .to_owned(),
    }
}

/// The gRPC name of `code`, e.g. `UNAUTHENTICATED`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `1234567` bytes as `1.2 MB`.
fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1000.0 {
            break;
        }
        value /= 1000.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// `line` cut to `width` characters, marked with `…` when cut.
fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests;
