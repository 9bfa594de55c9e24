//! One task per agent of a capture: connect (mutual TLS), start, and pass
//! what the agent sends to the capture's session. Every agent has its own
//! deadlines, so one slow or dead agent delays no one. Failures become
//! events for that origin; the other agents go on.
//!
//! Back-pressure: the task waits while the session's channel is full and
//! then reads nothing from its agent, so HTTP/2 flow control holds the agent
//! back and its byte-budgeted send queue drops (and counts) packets.

use std::{error::Error as _, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use pcap_proto::{
    tls::{ClientTlsFailure, FailureSlot, KeyPair, TlsError, Watched},
    v1::{
        AgentRequest, AgentStart, CaptureResponse, ConnectionError, Event, InstanceUnavailable,
        StartFailed, StopCapture, agent_client::AgentClient, agent_request,
        capture_response::Payload, event,
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
    config,
    limits::{AgentSlot, LimitError},
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
    /// A message from the agent (origin stamped), or an event about it.
    Payload(Payload),
    /// The agent is done; nothing more comes from this origin.
    Ended,
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

/// What the session gets for an agent the resolver could not give an
/// address for (a BOSH instance without an IP): unavailable, and the end.
pub fn unavailable(origin: u32, message: &str) -> [AgentMessage; 2] {
    let event = Event {
        origin: Some(origin),
        message: message.to_owned(),
        kind: Some(event::Kind::InstanceUnavailable(InstanceUnavailable {})),
    };
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

    async fn capture(&self) {
        let channel = tokio::select! {
            channel = self.connect() => channel,
            () = self.stop.reached(StopLevel::Drain) => Err(format!(
                "the capture stopped before {} was reached", self.name()
            )),
        };
        let channel = match channel {
            Ok(channel) => channel,
            Err(message) => {
                let kind = event::Kind::InstanceUnavailable(InstanceUnavailable {});
                return self.outbox.event(kind, message).await;
            }
        };
        let start_deadline = Instant::now() + self.connector.start_timeout;
        // The API's own deadline: an agent that neither ends its stream nor
        // breaks the connection is not waited for past the duration asked.
        let end_deadline = self
            .task
            .start
            .options
            .as_ref()
            .and_then(|o| o.limits)
            .and_then(|l| l.duration_ms)
            .map(|ms| start_deadline + Duration::from_millis(ms) + END_GRACE);
        let (requests, request_stream) = mpsc::channel(2);
        let start = AgentRequest {
            operation: Some(agent_request::Operation::Start(self.task.start.clone())),
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
        tokio::select! {
            () = self.receive(channel, ReceiverStream::new(request_stream), start_deadline, end_deadline) => {}
            () = send_stop => {}
        }
    }

    async fn connect(&self) -> Result<Channel, String> {
        let unreachable = |detail: String| format!("cannot reach {}: {detail}", self.name());
        let timeout_after = self.connector.connect_timeout;
        // TLS is the connector's: tonic gets http:// and a TLS stream.
        let endpoint = Endpoint::from_shared(format!("http://{}", self.task.endpoint.address))
            .map_err(|e| unreachable(error_chain(&e)))?
            .connect_timeout(timeout_after)
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
                    .connect(server_name, tcp)
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
    /// after it, the end deadline (when the capture has a duration).
    async fn receive(
        &self,
        channel: Channel,
        requests: ReceiverStream<AgentRequest>,
        start_deadline: Instant,
        end_deadline: Option<Instant>,
    ) {
        let mut client = AgentClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut responses = match timeout_at(start_deadline, client.capture(requests)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return self.refused(&status).await,
            Err(_) => return self.start_timed_out().await,
        };
        let mut started = false;
        loop {
            let deadline = if started {
                end_deadline
            } else {
                Some(start_deadline)
            };
            let next = match deadline {
                Some(deadline) => match timeout_at(deadline, responses.message()).await {
                    Ok(next) => next,
                    Err(_) if started => return self.overran().await,
                    Err(_) => return self.start_timed_out().await,
                },
                None => responses.message().await,
            };
            match next {
                Ok(Some(CaptureResponse {
                    payload: Some(payload),
                })) => {
                    started |= matches!(
                        &payload,
                        Payload::Event(Event {
                            kind: Some(event::Kind::CaptureStarted(_)),
                            ..
                        })
                    );
                    let Some(payload) = stamp_origin(payload, self.task.origin) else {
                        continue;
                    };
                    if !self.outbox.send(FromAgent::Payload(payload)).await {
                        return;
                    }
                }
                Ok(Some(CaptureResponse { payload: None })) => {}
                Ok(None) if started => return,
                Ok(None) => {
                    let kind = event::Kind::StartFailed(StartFailed {
                        code: Code::Unknown as i32,
                    });
                    let message = format!("{} ended its stream before capturing", self.name());
                    return self.outbox.event(kind, message).await;
                }
                Err(status) if started => {
                    let kind = event::Kind::ConnectionError(ConnectionError {});
                    let message = format!(
                        "the connection to {} broke: {}",
                        self.name(),
                        describe(&status)
                    );
                    return self.outbox.event(kind, message).await;
                }
                Err(status) => return self.refused(&status).await,
            }
        }
    }

    /// The agent answered the start with an error: a TLS refusal (named),
    /// unreachable when the transport failed, refused otherwise.
    async fn refused(&self, status: &Status) {
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

/// Puts `origin` on everything an agent sends, whatever the agent put
/// there. Origin descriptions are the API's to send: those are dropped.
fn stamp_origin(payload: Payload, origin: u32) -> Option<Payload> {
    Some(match payload {
        Payload::Packets(mut batch) => {
            for packet in &mut batch.packets {
                packet.origin = origin;
            }
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
