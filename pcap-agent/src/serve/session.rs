//! One capture for one `Capture` call, on its own thread.
//!
//! The datapath and its ring buffer's `AsyncFd` belong to the runtime that
//! created them, so every capture runs a current-thread runtime on a thread
//! of its own and talks to the gRPC layer only through its send queue.

use std::{collections::HashSet, num::NonZeroU64, sync::Arc, thread};

use pcap_proto::options::{CaptureOptions, Limits};
use pcap_proto::v1::{AgentRequest, AgentStart, agent_request::Operation};
use tokio::sync::{oneshot, watch};
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::{
    config::Config,
    container::{self, Container, ContainerError},
    queue::QueueSender,
    sink::StreamSink,
    slots::CaptureSlot,
};
use crate::{
    c2c::{C2cOptions, C2cSink},
    capture::{self, CaptureError, Report, Spec, StopReason},
    datapath::{self, DatapathError},
    filter::Filter,
    iface::{Interface, InterfaceError},
};

/// Everything a capture needs, handed to its thread.
pub struct Session {
    pub config: Arc<Config>,
    pub start: AgentStart,
    /// The rest of the request stream: `stop`, or its end, stops the capture.
    pub requests: Streaming<AgentRequest>,
    /// Becomes `true` when the agent shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// The client, for logs.
    pub peer: String,
    /// Held until the capture has detached and sent everything.
    pub slot: CaptureSlot,
}

impl Session {
    /// Starts the capture on a new thread. The returned channel says whether
    /// everything is attached, or why the capture could not start (then
    /// nothing is attached).
    pub fn spawn(self, queue: QueueSender) -> oneshot::Receiver<Result<(), Status>> {
        let (started, result) = oneshot::channel();
        let spawned = thread::Builder::new()
            .name(format!("capture-{}", self.start.origin))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(self.run(queue, started)),
                    Err(e) => {
                        let _ = started.send(Err(Status::internal(format!(
                            "cannot start the capture's runtime: {e}"
                        ))));
                    }
                }
            });
        if let Err(e) = spawned {
            // `started` was dropped with the closure: the caller sees that.
            warn!(error = %e, "cannot start a capture thread");
        }
        result
    }

    async fn run(self, queue: QueueSender, started: oneshot::Sender<Result<(), Status>>) {
        let origin = self.start.origin;
        // A capture that does not start gives its slot back before its
        // caller hears why, so that the caller's next start finds it free.
        let mut slot = Some(self.slot);
        let (spec, container) = match plan_scoped(&self.start, &self.config) {
            Ok(planned) => planned,
            Err(status) => {
                info!(
                    peer = self.peer,
                    origin,
                    error = status.message(),
                    "capture refused"
                );
                drop(slot.take());
                let _ = started.send(Err(status));
                return;
            }
        };
        let stop = stop_condition(self.requests, queue.closed(), self.shutdown);
        let mut sink = StreamSink::new(queue, origin);
        if let Some(container) = &container {
            info!(
                peer = self.peer,
                origin,
                instance = container.instance_guid,
                app = container.app_guid,
                interface = container.interface,
                "container scope"
            );
            sink.set_app_perspective(true);
        }
        let mut started = Some(started);
        let on_attached = || {
            info!(
                peer = self.peer,
                origin,
                interfaces = %interface_names(&spec.interfaces),
                filter = spec.datapath.filter.as_ref().map_or("", Filter::expression),
                snaplen = spec.datapath.snaplen,
                "capture started"
            );
            if let Some(started) = started.take() {
                let _ = started.send(Ok(()));
            }
        };
        // c2c insight is the same layer as `pcap-agent capture --c2c`'s.
        let (result, sink) = if let Some(options) = c2c_options(&self.start, &self.config) {
            info!(peer = self.peer, origin, "c2c insight");
            let mut c2c = C2cSink::new(sink, options);
            let result = capture::run(&spec, &mut c2c, stop, on_attached).await;
            (result, c2c.into_inner())
        } else {
            let result = capture::run(&spec, &mut sink, stop, on_attached).await;
            (result, sink)
        };
        match (result, started) {
            (Ok(report), _) => log_stop(&self.peer, origin, &report),
            // Nothing was attached: the call fails with this status.
            (Err(e), Some(started)) => {
                info!(peer = self.peer, origin, error = %chain(&e), "capture failed to start");
                drop(slot.take());
                let _ = started.send(Err(start_failure(&e)));
            }
            (Err(e), None) => {
                warn!(peer = self.peer, origin, error = %chain(&e), "capture failed");
                sink.queue().fail(Status::internal(format!(
                    "the capture failed: {}",
                    chain(&e)
                )));
            }
        }
        // Dropping the sink ends the response stream, then the slot frees.
        drop(sink);
        drop(slot);
    }
}

/// What `start` asks for, within the agent's configuration. Errors are
/// `INVALID_ARGUMENT` with the message `pcap-agent capture` prints.
pub fn plan(start: &AgentStart, config: &Config) -> Result<Spec, Status> {
    plan_scoped(start, config).map(|(spec, _)| spec)
}

/// [`plan`], and the container the capture is pinned to when `start` has a
/// container scope: then the only interface is the container's host-side
/// veth (naming any other is `INVALID_ARGUMENT`), and the filter applies
/// within it, so it can narrow the capture but never widen it.
pub fn plan_scoped(
    start: &AgentStart,
    config: &Config,
) -> Result<(Spec, Option<Container>), Status> {
    // Checked as the API checks it: the caller controls the request.
    let options = CaptureOptions::from_wire(&start.options.clone().unwrap_or_default())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let container = match &start.container {
        Some(scope) => Some(
            container::lookup(scope, config.cf.container_metadata_store.as_deref())
                .map_err(|e| e.status())?,
        ),
        None => None,
    };
    let pinned;
    let names = if let Some(container) = &container {
        if let Some(other) = options
            .interfaces
            .iter()
            .find(|i| **i != container.interface)
        {
            return Err(Status::invalid_argument(format!(
                "a container capture is pinned to {} (instance {}): interface {other:?} \
                 cannot be captured",
                container.interface, container.instance_guid
            )));
        }
        if let Err(InterfaceError::NotFound(_)) = Interface::lookup(&container.interface) {
            return Err(ContainerError::NoInterface {
                instance: container.instance_guid.clone(),
                interface: container.interface.clone(),
            }
            .status());
        }
        pinned = [container.interface.clone()];
        &pinned[..]
    } else if options.interfaces.is_empty() {
        &config.capture.default_interfaces
    } else {
        &options.interfaces
    };
    if names.is_empty() {
        return Err(Status::invalid_argument(
            "no interfaces: name some (this agent has no capture.default_interfaces)",
        ));
    }
    let mut seen = HashSet::new();
    if let Some(twice) = names.iter().find(|name| !seen.insert(*name)) {
        return Err(Status::invalid_argument(format!(
            "interface {twice:?} is named twice"
        )));
    }
    let interfaces = names
        .iter()
        .map(|name| Interface::lookup(name).map_err(|e| invalid(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    let snaplen = options.snaplen_within(config.limits.max_snaplen);
    let filter = Filter::compile(&options.filter, &interfaces).map_err(|e| invalid(&e))?;
    let limits = options.limits.capped_by(Limits {
        duration: Some(config.max_duration()),
        packets: None,
        bytes: NonZeroU64::new(config.limits.max_bytes),
    });
    let spec = Spec {
        interfaces,
        datapath: datapath::Options {
            snaplen,
            ring_bytes: config.capture.ring_buffer_kib * 1024,
            attach: config.capture.attach,
            // A container's side: what the app received left its host-side veth.
            directions: if container.is_some() {
                options.direction.reversed()
            } else {
                options.direction
            },
            filter,
            any: false,
        },
        count: limits.packets.map(NonZeroU64::get),
        bytes: limits.bytes.map(NonZeroU64::get),
        duration: limits.duration,
    };
    Ok((spec, container))
}

/// The c2c layer's settings when `start` asks for c2c insight: silk's
/// store from `[cf]` names local overlay IPs, and the app names the API
/// sent replace GUIDs.
fn c2c_options(start: &AgentStart, config: &Config) -> Option<C2cOptions> {
    let c2c = start.options.as_ref()?.c2c.as_ref()?;
    Some(C2cOptions {
        metadata_store: config.cf.container_metadata_store.clone(),
        app_names: c2c
            .app_names
            .iter()
            .map(|(guid, name)| (guid.clone(), name.clone()))
            .collect(),
        ..C2cOptions::default()
    })
}

/// Completes, with the reason, when the client asks to stop, closes or
/// breaks its request stream, stops reading responses, or the agent shuts
/// down.
async fn stop_condition(
    mut requests: Streaming<AgentRequest>,
    reader_gone: impl Future<Output = ()>,
    mut shutdown: watch::Receiver<bool>,
) -> StopReason {
    let requested = async {
        loop {
            match requests.message().await {
                Ok(Some(AgentRequest {
                    operation: Some(Operation::Stop(_)),
                })) => {
                    debug!("stop requested");
                    break;
                }
                Ok(Some(other)) => warn!(request = ?other, "ignoring a request other than stop"),
                Ok(None) => {
                    debug!("the request stream ended");
                    break;
                }
                Err(status) => {
                    debug!(%status, "the request stream broke");
                    break;
                }
            }
        }
    };
    tokio::select! {
        () = requested => StopReason::Requested,
        () = reader_gone => StopReason::OutputClosed,
        // An error means the server is gone: stop too.
        _ = shutdown.wait_for(|stopping| *stopping) => StopReason::Signal,
    }
}

fn log_stop(peer: &str, origin: u32, report: &Report) {
    super::metrics::metrics().capture_ended(report);
    let total = report.total();
    info!(
        peer,
        origin,
        interfaces = %interface_names(report.interfaces.iter().map(|(i, _)| i)),
        reason = ?report.stop,
        seen = total.kernel.seen,
        matched = total.kernel.matched,
        sent = total.delivered,
        dropped_kernel_ring = total.kernel.dropped_ring_full,
        dropped_kernel_copy = total.kernel.dropped_copy_failed,
        dropped_agent_queue = total.dropped,
        after_limit = total.after_limit,
        "capture stopped"
    );
}

fn interface_names<'a>(interfaces: impl IntoIterator<Item = &'a Interface>) -> String {
    interfaces
        .into_iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The status for a capture that failed before anything was attached.
fn start_failure(error: &CaptureError) -> Status {
    match error {
        CaptureError::Datapath(DatapathError::Snaplen(_)) => invalid(error),
        _ => Status::internal(chain(error)),
    }
}

fn invalid(error: &dyn std::error::Error) -> Status {
    Status::invalid_argument(chain(error))
}

/// `error` and its causes joined with ": ", as `pcap-agent capture` prints
/// them (anyhow's `{:#}`).
fn chain(error: &dyn std::error::Error) -> String {
    pcap_proto::error_chain(error)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pcap_proto::v1::{CaptureOptions, Limits};

    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(&format!("insecure_plaintext = true\n{extra}")).unwrap()
    }

    fn start(options: CaptureOptions) -> AgentStart {
        AgentStart {
            compatibility_level: pcap_proto::COMPATIBILITY_LEVEL,
            origin: 3,
            options: Some(options),
            container: None,
        }
    }

    fn lo(options: CaptureOptions) -> AgentStart {
        start(CaptureOptions {
            interfaces: vec!["lo".to_owned()],
            ..options
        })
    }

    #[test]
    fn caps_requests_by_the_configured_limits() {
        let config = config("[limits]\nmax_duration = 10.0\nmax_snaplen = 100\nmax_bytes = 5000");
        let spec = plan(
            &lo(CaptureOptions {
                snaplen: Some(200),
                limits: Some(Limits {
                    duration_ms: Some(60_000),
                    packets: Some(7),
                    bytes: Some(9000),
                }),
                ..CaptureOptions::default()
            }),
            &config,
        )
        .unwrap();
        assert_eq!(spec.datapath.snaplen, 100);
        assert_eq!(spec.duration, Some(Duration::from_secs(10)));
        assert_eq!(spec.count, Some(7));
        assert_eq!(spec.bytes, Some(5000));

        let spec = plan(&lo(CaptureOptions::default()), &config).unwrap();
        assert_eq!(spec.datapath.snaplen, 100);
        assert_eq!(spec.count, None);
        assert_eq!(spec.bytes, Some(5000));
        assert_eq!(spec.datapath.ring_bytes, 8192 * 1024);
    }

    #[test]
    fn any_requested_duration_is_cut_to_the_limit() {
        let spec = plan(
            &lo(CaptureOptions {
                limits: Some(Limits {
                    duration_ms: Some(u64::MAX),
                    packets: Some(u64::MAX),
                    bytes: Some(u64::MAX),
                }),
                ..CaptureOptions::default()
            }),
            &config(""),
        )
        .unwrap();
        assert_eq!(spec.duration, Some(Duration::from_hours(1)));
    }

    #[test]
    fn smaller_requests_win() {
        let spec = plan(
            &lo(CaptureOptions {
                snaplen: Some(64),
                limits: Some(Limits {
                    duration_ms: Some(1500),
                    packets: None,
                    bytes: Some(10),
                }),
                ..CaptureOptions::default()
            }),
            &config(""),
        )
        .unwrap();
        assert_eq!(spec.datapath.snaplen, 64);
        assert_eq!(spec.duration, Some(Duration::from_millis(1500)));
        assert_eq!(spec.bytes, Some(10));
    }

    #[test]
    fn uses_the_default_interfaces() {
        let spec = plan(
            &start(CaptureOptions::default()),
            &config("[capture]\ndefault_interfaces = [\"lo\"]"),
        )
        .unwrap();
        assert_eq!(spec.interfaces[0].name, "lo");
    }

    #[test]
    fn bad_requests_are_invalid_arguments() {
        // A capture of `lo` with one thing changed, and what the agent says.
        let lo_but = |change: fn(&mut CaptureOptions)| {
            let mut request = lo(CaptureOptions::default());
            change(request.options.as_mut().expect("lo sets the options"));
            request
        };
        let cases = [
            (lo_but(|o| o.interfaces.clear()), "no interfaces"),
            (
                lo_but(|o| o.interfaces.push("lo".to_owned())),
                "interface \"lo\" is named twice",
            ),
            (
                lo_but(|o| o.interfaces = vec!["nonexistent0".to_owned()]),
                "interface \"nonexistent0\" does not exist",
            ),
            (
                lo_but(|o| o.snaplen = Some(262_145)),
                "invalid snaplen 262145: use 1 to 262144 (or 0 for 262144)",
            ),
            (lo_but(|o| o.filter = "tcp port".to_owned()), "syntax error"),
            (
                lo_but(|o| o.filter = format!("host 10.0.0.1 or {}", " ".repeat(1 << 20))),
                "the filter expression is 1048593 bytes; at most 4096 are allowed",
            ),
            (
                lo_but(|o| o.filter = "tcp and host slow.invalid".to_owned()),
                "host names are not resolved: use an IP address instead of \"slow.invalid\"",
            ),
        ];
        for (request, message) in cases {
            let status = plan(&request, &config("")).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(
                status.message().contains(message),
                "{message}: {}",
                status.message()
            );
        }
    }
}
