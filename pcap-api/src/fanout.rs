//! One task per agent of a capture: connect (mutual TLS), start, and pass
//! what the agent sends to the capture's session. Every agent has its own
//! deadlines, so one slow or dead agent delays no one. Failures become
//! events for that origin; the other agents go on.
//!
//! Back-pressure: the task waits while the session's channel is full and
//! then reads nothing from its agent, so HTTP/2 flow control holds the agent
//! back and its byte-budgeted send queue drops (and counts) packets.

use std::{
    collections::HashMap,
    error::Error as _,
    sync::Arc,
    time::{Duration, SystemTime},
};

use hyper_util::rt::TokioIo;
use pcap_proto::{
    buffered::{Buffered, MAX_FRAME_BYTES},
    packets::RecordError,
    tls::{ClientTlsFailure, FailureSlot, KeyPair, TlsError, Watched},
    v1::{
        AgentRequest, AgentStart, CaptureOptions, CaptureResponse, ConnectionError, Disconnected,
        Event, InstanceUnavailable, OriginDescription, Reconnected, StartFailed, StopCapture,
        agent_client::AgentClient, agent_request, capture_response::Payload, event,
    },
};
use tokio::{
    net::TcpStream,
    sync::mpsc,
    time::{Instant, timeout, timeout_at},
};
use tokio_rustls::{TlsConnector, rustls::pki_types::ServerName};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint, Uri},
};

use crate::{
    auth::User,
    config,
    limits::{AgentSlot, Concurrency, LimitError},
    merge,
    resolve::AgentEndpoint,
    stop::{Stop, StopLevel},
};

/// Agents send packet batches of at most 1 MiB; leave room for framing.
const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Detects agents that vanished without closing their connection.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// Past a capture's duration, how long an agent gets to stop, drain and
/// send its statistics before the API stops waiting for it.
pub const END_GRACE: Duration = Duration::from_secs(30);

/// What an agent task tells the session.
#[derive(Debug)]
pub enum FromAgent {
    /// A batch of packets from the agent, every block checked, as runs in
    /// timestamp order.
    Packets(Vec<merge::Run>),
    /// Any other message from the agent (origin stamped), or an event
    /// about it.
    Payload(Payload),
    /// The agent is done; nothing more comes from this origin.
    Ended,
}

impl FromAgent {
    /// `payload` as the session takes it: a batch is checked block by block
    /// and cut into its runs in the same pass.
    pub fn checked(payload: Payload) -> Result<Self, RecordError> {
        match payload {
            Payload::Packets(batch) => merge::Run::split(&batch).map(Self::Packets),
            payload => Ok(Self::Payload(payload)),
        }
    }
}

#[derive(Debug)]
pub struct AgentMessage {
    pub origin: u32,
    pub body: FromAgent,
}

/// How the API reaches agents: TLS and deadlines, the same for all. The
/// TLS connection is made here rather than by tonic, so that a failure the
/// agent reports with a TLS alert can be told to the user (see
/// [`Watched`]).
pub struct Connector {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    connect_timeout: Duration,
    start_timeout: Duration,
}

impl Connector {
    pub fn new(agents: &config::Agents) -> Result<Self, TlsError> {
        let identity = KeyPair {
            certificate: &agents.certificate,
            private_key: &agents.private_key,
        };
        let server_name = ServerName::try_from(agents.server_name.clone()).map_err(|e| {
            TlsError::Setup(format!(
                "agents.server_name {:?} is neither a DNS name nor an IP address: {e}",
                agents.server_name
            ))
        })?;
        Ok(Self {
            tls: TlsConnector::from(pcap_proto::tls::rustls_client_config(
                &agents.ca, &identity,
            )?),
            server_name,
            connect_timeout: agents.connect_timeout(),
            start_timeout: agents.start_timeout(),
        })
    }
}

/// One agent of one capture.
pub struct AgentTask {
    pub origin: u32,
    pub endpoint: AgentEndpoint,
    pub start: AgentStart,
    /// Held until the task ends.
    pub slot: AgentSlot,
    /// When set, a connection that breaks after the capture started (or an
    /// agent that ends its capture by itself: it restarted) is made again
    /// once the agent is back, until this reaches `Drain` (the instance is
    /// gone) or the capture stops; the gap is told as `Reconnected`.
    pub reconnect: Option<Stop>,
}

/// The first wait before connecting again to an agent whose connection
/// broke, doubled after each failed attempt up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How one connection to an agent ended.
enum Attempt {
    /// For good: the capture ended, or a failure was told to the session.
    Done,
    /// The connection broke after the capture had started (or the agent
    /// ended it by itself); the message says how.
    Lost(String),
}

/// Runs `task` until the agent ends or `stop` reaches `Abort` (then the
/// connection is dropped at once). Sends `Ended` last unless aborted.
pub async fn run(
    connector: Arc<Connector>,
    task: AgentTask,
    stop: Stop,
    to_session: mpsc::Sender<AgentMessage>,
) {
    let outbox = Outbox {
        origin: task.origin,
        to_session,
    };
    let agent = Agent {
        connector: &connector,
        tls_seen: FailureSlot::default(),
        task: &task,
        stop: &stop,
        outbox: &outbox,
    };
    tokio::select! {
        () = stop.reached(StopLevel::Abort) => return,
        () = agent.capture() => {}
    }
    outbox.send(FromAgent::Ended).await;
}

/// What the session gets for an agent that this API may not start now
/// (`limits.max_captures_per_agent`): a start failure, and the end.
pub fn refused_by_limit(origin: u32, limit: &LimitError) -> [AgentMessage; 2] {
    let event = Event {
        origin: Some(origin),
        message: limit.to_string(),
        kind: Some(event::Kind::StartFailed(StartFailed {
            code: Code::ResourceExhausted as i32,
        })),
    };
    event_then_end(origin, event)
}

/// What the session gets for an agent the resolver could not give an
/// address for (a BOSH instance without an IP): unavailable, and the end.
pub fn unavailable(origin: u32, message: &str) -> [AgentMessage; 2] {
    let event = Event {
        origin: Some(origin),
        message: message.to_owned(),
        kind: Some(event::Kind::InstanceUnavailable(InstanceUnavailable {})),
    };
    event_then_end(origin, event)
}

/// `event` from `origin`, and the end of `origin`.
fn event_then_end(origin: u32, event: Event) -> [AgentMessage; 2] {
    [
        AgentMessage {
            origin,
            body: FromAgent::Payload(Payload::Event(event)),
        },
        AgentMessage {
            origin,
            body: FromAgent::Ended,
        },
    ]
}

struct Outbox {
    origin: u32,
    to_session: mpsc::Sender<AgentMessage>,
}

impl Outbox {
    /// Waits while the session is behind. Returns false when the session is
    /// gone.
    async fn send(&self, body: FromAgent) -> bool {
        let message = AgentMessage {
            origin: self.origin,
            body,
        };
        self.to_session.send(message).await.is_ok()
    }

    async fn event(&self, kind: event::Kind, message: String) {
        let event = Event {
            origin: Some(self.origin),
            message,
            kind: Some(kind),
        };
        self.send(FromAgent::Payload(Payload::Event(event))).await;
    }
}

struct Agent<'a> {
    connector: &'a Connector,
    /// The first TLS failure the connection met, if any.
    tls_seen: FailureSlot,
    task: &'a AgentTask,
    stop: &'a Stop,
    outbox: &'a Outbox,
}

impl Agent<'_> {
    /// "vm-0 (10.1.0.2:9494)", for messages.
    fn name(&self) -> String {
        format!(
            "{} ({})",
            self.task.endpoint.origin, self.task.endpoint.address
        )
    }

    /// Captures on the agent; when the connection is lost and the task
    /// reconnects, again and again until the capture or the instance ends.
    async fn capture(&self) {
        let began = Instant::now();
        let mut attempt = self.first_attempt(began).await;
        while let Attempt::Lost(message) = attempt {
            let Some(retire) = &self.task.reconnect else {
                let kind = event::Kind::ConnectionError(ConnectionError {});
                return self.outbox.event(kind, message).await;
            };
            let lost_at = SystemTime::now();
            let kind = event::Kind::Disconnected(Disconnected {});
            self.outbox.event(kind, message).await;
            let Some(channel) = self.reconnect(retire, began).await else {
                return;
            };
            attempt = self.attempt(channel, began, Some(lost_at)).await;
        }
    }

    /// Connects again with growing pauses until the agent answers; `None`
    /// when the capture stops, the instance is retired or the capture's
    /// duration has passed first.
    async fn reconnect(&self, retire: &Stop, began: Instant) -> Option<Channel> {
        let mut pause = RECONNECT_FIRST;
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.stop.reached(StopLevel::Drain) => return None,
                () = retire.reached(StopLevel::Drain) => return None,
            }
            if self.remaining_ms(began) == Some(0) {
                return None;
            }
            match self.connect().await {
                Ok(channel) => return Some(channel),
                Err(message) => tracing::debug!(origin = self.task.origin, "{message}"),
            }
            pause = (pause * 2).min(RECONNECT_MAX);
        }
    }

    /// What is left of the capture's duration, when it has one.
    fn remaining_ms(&self, began: Instant) -> Option<u64> {
        let asked = self.duration_ms()?;
        let spent = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
        Some(asked.saturating_sub(spent))
    }

    fn duration_ms(&self) -> Option<u64> {
        self.task
            .start
            .options
            .as_ref()
            .and_then(|o| o.limits)
            .and_then(|l| l.duration_ms)
    }

    async fn first_attempt(&self, began: Instant) -> Attempt {
        let channel = tokio::select! {
            channel = self.connect() => channel.inspect_err(|_| {
                crate::metrics::metrics().agent_connection_failed();
            }),
            () = self.stop.reached(StopLevel::Drain) => Err(format!(
                "the capture stopped before {} was reached", self.name()
            )),
        };
        match channel {
            Ok(channel) => self.attempt(channel, began, None).await,
            Err(message) => {
                let kind = event::Kind::InstanceUnavailable(InstanceUnavailable {});
                self.outbox.event(kind, message).await;
                Attempt::Done
            }
        }
    }

    /// Starts the capture on `channel` (for what is left of its duration)
    /// and forwards what the agent sends. `lost_at`: this connects again
    /// after a connection lost then.
    async fn attempt(
        &self,
        channel: Channel,
        began: Instant,
        lost_at: Option<SystemTime>,
    ) -> Attempt {
        let start_deadline = Instant::now() + self.connector.start_timeout;
        let mut start = self.task.start.clone();
        let remaining = self.remaining_ms(began);
        if lost_at.is_some()
            && let (Some(ms), Some(limits)) = (
                remaining,
                start.options.as_mut().and_then(|o| o.limits.as_mut()),
            )
        {
            if ms == 0 {
                return Attempt::Done;
            }
            limits.duration_ms = Some(ms);
        }
        // The API's own deadline: an agent that neither ends its stream nor
        // breaks the connection is not waited for past the duration asked.
        let end_deadline =
            remaining.map(|ms| start_deadline + Duration::from_millis(ms) + END_GRACE);
        let (requests, request_stream) = mpsc::channel(2);
        let start = AgentRequest {
            operation: Some(agent_request::Operation::Start(start)),
        };
        requests
            .try_send(start)
            .expect("a new channel has room for the start request");
        // The request stream stays open until the capture ends; a stop
        // request (whenever one comes) is the only other thing sent on it.
        let send_stop = async {
            self.stop.reached(StopLevel::Drain).await;
            let stop = AgentRequest {
                operation: Some(agent_request::Operation::Stop(StopCapture {})),
            };
            let _ = requests.send(stop).await;
            std::future::pending::<()>().await;
        };
        let deadlines = (start_deadline, end_deadline);
        tokio::select! {
            attempt = self.receive(channel, ReceiverStream::new(request_stream), deadlines, lost_at) => attempt,
            () = send_stop => Attempt::Done,
        }
    }

    async fn connect(&self) -> Result<Channel, String> {
        let unreachable = |detail: String| format!("cannot reach {}: {detail}", self.name());
        let timeout_after = self.connector.connect_timeout;
        // TLS is the connector's: tonic gets http:// and a TLS stream.
        let endpoint = Endpoint::from_shared(format!("http://{}", self.task.endpoint.address))
            .map_err(|e| unreachable(error_chain(&e)))?
            .connect_timeout(timeout_after)
            .max_frame_size(MAX_FRAME_BYTES)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true);
        let tls = self.connector.tls.clone();
        let server_name = self.connector.server_name.clone();
        let failure = self.tls_seen.clone();
        let connector = tower::service_fn(move |uri: Uri| {
            let (tls, server_name, failure) = (tls.clone(), server_name.clone(), failure.clone());
            async move {
                let address = uri
                    .authority()
                    .ok_or_else(|| std::io::Error::other("no address to connect to"))?
                    .to_string();
                let tcp = TcpStream::connect(address).await?;
                tcp.set_nodelay(true)?;
                let stream = tls
                    .connect(server_name, Buffered::new(tcp))
                    .await
                    .inspect_err(|e| failure.note(e))?;
                Ok::<_, std::io::Error>(TokioIo::new(Watched::new(stream, failure)))
            }
        });
        match timeout(timeout_after, endpoint.connect_with_connector(connector)).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(self
                .tls_failure(&e)
                .unwrap_or_else(|| unreachable(error_chain(&e)))),
            Err(_) => Err(unreachable(format!(
                "no connection within {:.1}s (agents.connect_timeout)",
                timeout_after.as_secs_f64()
            ))),
        }
    }

    /// Starts the capture and forwards what the agent sends until its
    /// stream ends. Before `capture_started`, the start deadline applies;
    /// after it, the end deadline (when the capture has a duration). After
    /// a lost connection (`lost_at`), the agent's `capture_started` becomes
    /// `Reconnected` with the gap.
    async fn receive(
        &self,
        channel: Channel,
        requests: ReceiverStream<AgentRequest>,
        (start_deadline, end_deadline): (Instant, Option<Instant>),
        lost_at: Option<SystemTime>,
    ) -> Attempt {
        let mut client = AgentClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut responses = match timeout_at(start_deadline, client.capture(requests)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                self.refused(&status).await;
                return Attempt::Done;
            }
            Err(_) => {
                self.start_timed_out().await;
                return Attempt::Done;
            }
        };
        let mut started = false;
        // A limit, or the container's interface gone (its instance stopped):
        // an end of the agent's own that is not a restart.
        let mut ended_for_a_reason = false;
        loop {
            let deadline = if started {
                end_deadline
            } else {
                Some(start_deadline)
            };
            let next = match deadline {
                Some(deadline) => match timeout_at(deadline, responses.message()).await {
                    Ok(next) => next,
                    Err(_) if started => {
                        self.overran().await;
                        return Attempt::Done;
                    }
                    Err(_) => {
                        self.start_timed_out().await;
                        return Attempt::Done;
                    }
                },
                None => responses.message().await,
            };
            match next {
                Ok(Some(CaptureResponse {
                    payload: Some(payload),
                })) => {
                    let is = |wanted: fn(&event::Kind) -> bool| matches!(&payload, Payload::Event(Event { kind: Some(k), .. }) if wanted(k));
                    let now_started = is(|k| matches!(k, event::Kind::CaptureStarted(_)));
                    started |= now_started;
                    ended_for_a_reason |= is(|k| {
                        matches!(
                            k,
                            event::Kind::LimitReached(_) | event::Kind::InterfaceRemoved(_)
                        )
                    });
                    let payload = match lost_at {
                        Some(lost_at) if now_started => Some(self.reconnected(lost_at)),
                        _ => stamp_origin(payload, self.task.origin),
                    };
                    let Some(payload) = payload else {
                        continue;
                    };
                    let body = match FromAgent::checked(payload) {
                        Ok(body) => body,
                        Err(error) => {
                            self.malformed(&error).await;
                            return Attempt::Done;
                        }
                    };
                    if !self.outbox.send(body).await {
                        return Attempt::Done;
                    }
                }
                Ok(Some(CaptureResponse { payload: None })) => {}
                Ok(None) if started => {
                    // Neither asked to stop nor at a limit, nor left without
                    // an interface: the agent went away by itself (SIGTERM
                    // from monit, a cell update).
                    let by_itself = self.task.reconnect.is_some()
                        && self.stop.level() == StopLevel::Running
                        && !ended_for_a_reason;
                    return if by_itself {
                        Attempt::Lost(format!("{} ended the capture by itself", self.name()))
                    } else {
                        Attempt::Done
                    };
                }
                Ok(None) => {
                    let kind = event::Kind::StartFailed(StartFailed {
                        code: Code::Unknown as i32,
                    });
                    let message = format!("{} ended its stream before capturing", self.name());
                    self.outbox.event(kind, message).await;
                    return Attempt::Done;
                }
                Err(status) if started => {
                    return Attempt::Lost(format!(
                        "the connection to {} broke: {}",
                        self.name(),
                        describe(&status)
                    ));
                }
                Err(status) => {
                    self.refused(&status).await;
                    return Attempt::Done;
                }
            }
        }
    }

    /// `Reconnected` in place of the agent's `capture_started` after a
    /// lost connection: how long nothing was captured, and when.
    fn reconnected(&self, lost_at: SystemTime) -> Payload {
        let now = SystemTime::now();
        let gap = now.duration_since(lost_at).unwrap_or_default();
        let time = |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).format("%H:%M:%S%.3f");
        Payload::Event(Event {
            origin: Some(self.task.origin),
            message: format!(
                "{} is back; nothing was captured for {:.1}s, from {} to {} UTC",
                self.name(),
                gap.as_secs_f64(),
                time(lost_at),
                time(now)
            ),
            kind: Some(event::Kind::Reconnected(Reconnected {
                gap_ns: u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX),
            })),
        })
    }

    /// The agent answered the start with an error: a TLS refusal (named),
    /// unreachable when the transport failed, refused otherwise.
    async fn refused(&self, status: &Status) {
        if self.tls_failure(status).is_some() || status.code() == Code::Unavailable {
            crate::metrics::metrics().agent_connection_failed();
        }
        if let Some(message) = self.tls_failure(status) {
            let kind = event::Kind::StartFailed(StartFailed {
                code: Code::Unauthenticated as i32,
            });
            return self.outbox.event(kind, message).await;
        }
        if status.code() == Code::Unavailable {
            let kind = event::Kind::InstanceUnavailable(InstanceUnavailable {});
            let message = format!("cannot reach {}: {}", self.name(), describe(status));
            return self.outbox.event(kind, message).await;
        }
        let kind = event::Kind::StartFailed(StartFailed {
            code: status.code() as i32,
        });
        let message = format!("{} refused the capture: {}", self.name(), describe(status));
        self.outbox.event(kind, message).await;
    }

    /// What a TLS failure in `error`'s causes means, in words naming this
    /// agent; `None` when TLS was not the problem.
    fn tls_failure(&self, error: &(dyn std::error::Error + 'static)) -> Option<String> {
        let origin = &self.task.endpoint.origin;
        let address = &self.task.endpoint.address;
        let agent = format!("the agent at {address} ({origin})");
        let failure = ClientTlsFailure::find(error).or_else(|| self.tls_seen.get())?;
        Some(match failure {
            ClientTlsFailure::CertificateRefused(why) => format!(
                "{agent} refused the API's client certificate: {why} \
                 (the API presents agents.certificate; the agent's log says why too)"
            ),
            ClientTlsFailure::ServerAlert(alert) => {
                format!("{agent} aborted the TLS handshake with alert {alert}")
            }
            ClientTlsFailure::ServerCertificateInvalid(why) => format!(
                "the API refused the certificate of {agent}: {why} \
                 (checked against agents.ca and agents.server_name)"
            ),
            ClientTlsFailure::Other(why) => format!("TLS with {agent} failed: {why}"),
        })
    }

    /// The agent neither ended its stream nor broke the connection within
    /// the capture's duration and `END_GRACE`: the API stops waiting (and
    /// dropping the call tells the agent to stop).
    async fn overran(&self) {
        let kind = event::Kind::ConnectionError(ConnectionError {});
        let message = format!(
            "{} did not end its capture within the requested duration and {}s more; \
             the API stopped waiting for it",
            self.name(),
            END_GRACE.as_secs()
        );
        self.outbox.event(kind, message).await;
    }

    /// The agent sent a batch whose blocks do not hold together: nothing
    /// more is taken from it (dropping the call stops its capture).
    async fn malformed(&self, error: &RecordError) {
        tracing::warn!(agent = %self.name(), %error, "malformed packet batch");
        let kind = event::Kind::ConnectionError(ConnectionError {});
        let message = format!(
            "{} sent a malformed packet batch ({error}); the API stopped reading from it",
            self.name()
        );
        self.outbox.event(kind, message).await;
    }

    async fn start_timed_out(&self) {
        let kind = event::Kind::StartFailed(StartFailed {
            code: Code::DeadlineExceeded as i32,
        });
        let message = format!(
            "{} did not start capturing within {:.1}s (agents.start_timeout)",
            self.name(),
            self.connector.start_timeout.as_secs_f64()
        );
        self.outbox.event(kind, message).await;
    }
}

/// Starts the agent tasks of one capture. The origins of the capture on
/// one agent (instances of an app on one cell) share one concurrency slot,
/// held until the capture ends; an agent over its limit gets a start
/// failure instead of a task.
pub struct Launcher {
    connector: Arc<Connector>,
    concurrency: Concurrency,
    user_key: String,
    user_name: String,
    stop: Stop,
    to_session: mpsc::Sender<AgentMessage>,
    slots: HashMap<String, Result<AgentSlot, LimitError>>,
}

impl Launcher {
    pub fn new(
        connector: Arc<Connector>,
        concurrency: Concurrency,
        user: &User,
        stop: Stop,
        to_session: mpsc::Sender<AgentMessage>,
    ) -> Self {
        Self {
            connector,
            concurrency,
            user_key: user.key(),
            user_name: user.name.clone(),
            stop,
            to_session,
            slots: HashMap::new(),
        }
    }

    /// The capture's stop signal.
    pub fn stop(&self) -> &Stop {
        &self.stop
    }

    /// The session's channel, for what the capture's other tasks tell it.
    pub fn to_session(&self) -> &mpsc::Sender<AgentMessage> {
        &self.to_session
    }

    /// Announces a new origin mid-stream: the session forwards its
    /// description to the client before anything else of it.
    pub async fn announce(&self, origin: u32, endpoint: &AgentEndpoint) {
        let description = OriginDescription {
            id: origin,
            name: endpoint.origin.clone(),
            address: endpoint.address.clone(),
        };
        let _ = self
            .to_session
            .send(AgentMessage {
                origin,
                body: FromAgent::Payload(Payload::Origin(description)),
            })
            .await;
    }

    /// Starts `endpoint` as `origin` with `options` (an unavailable one
    /// is told as such, one over its agent's limit is refused). Returns
    /// whether a task started.
    pub async fn launch(
        &mut self,
        origin: u32,
        endpoint: &AgentEndpoint,
        options: &CaptureOptions,
        reconnect: Option<Stop>,
    ) -> bool {
        if let Some(reason) = &endpoint.unavailable {
            for message in unavailable(origin, reason) {
                let _ = self.to_session.send(message).await;
            }
            return false;
        }
        let slot = self
            .slots
            .entry(endpoint.address.clone())
            .or_insert_with(|| {
                self.concurrency
                    .start_on_agent(&self.user_key, &self.user_name, &endpoint.address)
            })
            .clone();
        match slot {
            Ok(slot) => {
                let task = AgentTask {
                    origin,
                    endpoint: endpoint.clone(),
                    start: AgentStart {
                        compatibility_level: pcap_proto::COMPATIBILITY_LEVEL,
                        origin,
                        options: Some(options.clone()),
                        container: endpoint.container.clone(),
                    },
                    slot,
                    reconnect,
                };
                tokio::spawn(run(
                    Arc::clone(&self.connector),
                    task,
                    self.stop.clone(),
                    self.to_session.clone(),
                ));
                true
            }
            Err(limit) => {
                for message in refused_by_limit(origin, &limit) {
                    let _ = self.to_session.send(message).await;
                }
                false
            }
        }
    }
}

/// Puts `origin` on everything an agent sends, whatever the agent put
/// there. Origin descriptions are the API's to send: those are dropped.
fn stamp_origin(payload: Payload, origin: u32) -> Option<Payload> {
    Some(match payload {
        Payload::Packets(mut batch) => {
            batch.origin = origin;
            Payload::Packets(batch)
        }
        Payload::Interface(mut interface) => {
            interface.origin = origin;
            Payload::Interface(interface)
        }
        Payload::Event(mut event) => {
            event.origin = Some(origin);
            Payload::Event(event)
        }
        Payload::Statistics(mut statistics) => {
            statistics.origin = origin;
            Payload::Statistics(statistics)
        }
        Payload::Names(mut names) => {
            names.origin = origin;
            Payload::Names(names)
        }
        // The API's to send too (stored captures), never an agent's.
        Payload::Origin(_) | Payload::Progress(_) | Payload::Stored(_) => return None,
    })
}

/// "PermissionDenied: the message".
fn describe(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = status.source() {
        text.push_str(": ");
        text.push_str(&error_chain(source));
    }
    text
}

pub use pcap_proto::error_chain;
