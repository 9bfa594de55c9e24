//! The `pcap.v1.API` gRPC service: checks a capture request, then runs it
//! as one task per agent (`fanout`) feeding one `session` that writes the
//! client's response stream.

use std::{sync::Arc, time::Instant};

use pcap_proto::{
    COMPATIBILITY_LEVEL,
    tls::TlsError,
    v1::{
        AgentStart, CaptureOptions, CaptureRequest, CaptureResponse, Limits, OriginDescription,
        StartCapture, StatusRequest, StatusResponse, api_server::Api, capture_request,
        capture_response::Payload,
    },
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    auth::{self, AuthError, Authenticator, StaticTokens, User},
    config::{self, Config},
    fanout::{self, AgentTask, Connector},
    limits::{CaptureSlot, Concurrency, LimitError, Maxima},
    merge::Merger,
    resolve::{self, AgentEndpoint, ResolveError, Resolved, Resolver, StaticResolver},
    session::{self, GlobalLimits, Session, Summary},
    stop::{Stop, StopLevel},
};

/// Responses queued for a client before the session waits for it. Small:
/// the reorder window is where packets wait.
const CLIENT_QUEUE: usize = 16;
/// Messages queued from all agents of a capture before they wait.
const AGENT_QUEUE: usize = 16;
/// The largest snaplen an agent accepts.
const MAX_SNAPLEN: u32 = 262_144;

/// Why a capture request is refused before anything starts. The one place
/// where errors become gRPC status codes.
#[derive(Debug, Error)]
pub enum Refusal {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("{0}")]
    BadRequest(String),
    #[error("the API is shutting down")]
    ShuttingDown,
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        let message = refusal.to_string();
        match refusal {
            Refusal::Auth(_) => Status::unauthenticated(message),
            Refusal::Resolve(ResolveError::UnknownTarget(_)) => Status::not_found(message),
            Refusal::Resolve(ResolveError::NoTarget) | Refusal::BadRequest(_) => {
                Status::invalid_argument(message)
            }
            Refusal::Limit(_) => Status::resource_exhausted(message),
            Refusal::ShuttingDown => Status::unavailable(message),
        }
    }
}

pub struct ApiService {
    shared: Arc<Shared>,
}

struct Shared {
    authenticator: Box<dyn Authenticator>,
    resolver: Box<dyn Resolver>,
    concurrency: Concurrency,
    connector: Arc<Connector>,
    merge: config::Merge,
    limits: config::Limits,
    /// Reaches `Drain` when the server shuts down.
    shutdown: Stop,
}

impl ApiService {
    pub fn new(config: &Config, shutdown: Stop) -> Result<Self, TlsError> {
        let limits = &config.limits;
        let shared = Shared {
            authenticator: Box::new(StaticTokens::new(&config.users)),
            resolver: Box::new(StaticResolver::new(&config.targets, config.agents.port)),
            concurrency: Concurrency::new(Maxima {
                captures: limits.max_captures,
                per_user: limits.max_captures_per_user,
                per_agent: limits.max_captures_per_agent,
            }),
            connector: Arc::new(Connector::new(&config.agents)?),
            merge: config.merge.clone(),
            limits: limits.clone(),
            shutdown,
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }
}

impl ApiService {
    /// The captures running on this API, for draining at shutdown.
    pub fn concurrency(&self) -> Concurrency {
        self.shared.concurrency.clone()
    }
}

#[tonic::async_trait]
impl Api for ApiService {
    type CaptureStream = ReceiverStream<Result<CaptureResponse, Status>>;

    async fn capture(
        &self,
        request: Request<Streaming<CaptureRequest>>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let token = auth::bearer_token(authorization).map_err(Refusal::from)?;
        let user = self
            .shared
            .authenticator
            .authenticate(token)
            .await
            .map_err(Refusal::from)?;
        if self.shared.shutdown.level() != StopLevel::Running {
            return Err(Refusal::ShuttingDown.into());
        }
        let mut requests = request.into_inner();
        let Some(CaptureRequest {
            operation: Some(capture_request::Operation::Start(start)),
        }) = requests.message().await?
        else {
            let message = "the first request must be `start`".to_owned();
            return Err(Refusal::BadRequest(message).into());
        };
        let capture = self.prepare(user, start).await?;
        let (sink, responses) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(capture.run(Arc::clone(&self.shared), requests, sink));
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let shared = &self.shared;
        Ok(Response::new(StatusResponse {
            healthy: shared.shutdown.level() == StopLevel::Running,
            compatibility_level: COMPATIBILITY_LEVEL,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            active_captures: shared.concurrency.active_captures(),
            max_captures: shared.concurrency.max_captures(),
            resolvers: vec![shared.resolver.status()],
        }))
    }
}

impl ApiService {
    /// Everything that can refuse the request, before anything starts.
    async fn prepare(&self, user: User, start: StartCapture) -> Result<Capture, Refusal> {
        let target = start.target.unwrap_or_default();
        let resolved = self.shared.resolver.resolve(&target).await?;
        let options = start.options.unwrap_or_default();
        if options.snaplen > MAX_SNAPLEN {
            return Err(Refusal::BadRequest(format!(
                "snaplen {} is more than {MAX_SNAPLEN}",
                options.snaplen
            )));
        }
        let slot = self.shared.concurrency.start_capture(&user.name)?;
        Ok(Capture {
            user,
            target: resolve::describe(Some(&target)),
            options,
            resolved,
            _slot: slot,
        })
    }
}

/// An accepted capture request.
struct Capture {
    user: User,
    target: String,
    options: CaptureOptions,
    resolved: Resolved,
    _slot: CaptureSlot,
}

impl Capture {
    async fn run(
        self,
        shared: Arc<Shared>,
        requests: Streaming<CaptureRequest>,
        sink: session::ClientSink,
    ) {
        let began = Instant::now();
        let stop = Stop::default();
        let watcher = tokio::spawn(watch_client(
            requests,
            stop.clone(),
            shared.shutdown.clone(),
        ));
        let (to_session, from_agents) = mpsc::channel(AGENT_QUEUE);

        // First of all, one description per origin, numbered in order.
        let mut client_listens = true;
        for (id, agent) in self.resolved.agents.iter().enumerate() {
            let origin = Payload::Origin(OriginDescription {
                id: id as u32,
                name: agent.origin.clone(),
                address: agent.address.clone(),
            });
            let response = CaptureResponse {
                payload: Some(origin),
            };
            client_listens &= sink.send(Ok(response)).await.is_ok();
        }
        let agent_options = self.agent_options(&shared.limits);
        let limits = agent_options.limits.unwrap_or_default();
        let merger = Merger::new(
            shared.merge.reorder_window(),
            usize::try_from(shared.merge.max_buffered_bytes).unwrap_or(usize::MAX),
        );
        let session = Session::new(
            sink,
            stop.clone(),
            merger,
            GlobalLimits {
                packets: limits.packets,
                bytes: limits.bytes,
            },
            self.resolved.agents.len(),
        );
        let agents: &[AgentEndpoint] = if client_listens {
            &self.resolved.agents
        } else {
            &[]
        };
        // The session runs while agents start: it drains their messages.
        let ((), summary) = tokio::join!(
            start_agents(agents, &agent_options, &shared, &stop, to_session),
            session.run(from_agents),
        );
        watcher.abort();
        self.log(&summary, &stop, began.elapsed());
    }

    /// The request's options as agents get them: the target's interfaces
    /// when the request names none, and the operator's limits as caps.
    fn agent_options(&self, operator: &config::Limits) -> CaptureOptions {
        let mut options = self.options.clone();
        if options.interfaces.is_empty() {
            options
                .interfaces
                .clone_from(&self.resolved.default_interfaces);
        }
        let requested = options.limits.unwrap_or_default();
        let max_duration_ms = operator.max_duration().as_millis() as u64;
        options.limits = Some(Limits {
            duration_ms: min_nonzero(requested.duration_ms, max_duration_ms),
            packets: requested.packets,
            bytes: min_nonzero(requested.bytes, operator.max_bytes),
        });
        options
    }

    /// The capture's one log line. Tokens never reach it.
    fn log(&self, summary: &Summary, stop: &Stop, duration: std::time::Duration) {
        let outcome = if summary.client_gone {
            "the client went away"
        } else if !summary.any_started {
            "no agent started"
        } else if stop.level() == StopLevel::Running {
            "every agent ended"
        } else {
            stop.reason()
        };
        let origins: Vec<&str> = self
            .resolved
            .agents
            .iter()
            .map(|a| a.origin.as_str())
            .collect();
        tracing::info!(
            user = %self.user.name,
            target = %self.target,
            origins = %origins.join(","),
            filter = %self.options.filter,
            duration_s = duration.as_secs_f64(),
            outcome,
            packets = summary.packets,
            bytes = summary.bytes,
            after_limit = summary.after_limit,
            out_of_order = summary.out_of_order,
            "capture ended"
        );
    }
}

/// Spawns one task per agent, numbered in order. An agent over its
/// concurrency limit gets a start failure instead.
async fn start_agents(
    agents: &[AgentEndpoint],
    options: &CaptureOptions,
    shared: &Shared,
    stop: &Stop,
    to_session: mpsc::Sender<fanout::AgentMessage>,
) {
    for (id, endpoint) in agents.iter().enumerate() {
        let origin = id as u32;
        match shared.concurrency.start_on_agent(&endpoint.address) {
            Ok(slot) => {
                let task = AgentTask {
                    origin,
                    endpoint: endpoint.clone(),
                    start: AgentStart {
                        compatibility_level: COMPATIBILITY_LEVEL,
                        origin,
                        options: Some(options.clone()),
                    },
                    slot,
                };
                let connector = Arc::clone(&shared.connector);
                tokio::spawn(fanout::run(
                    connector,
                    task,
                    stop.clone(),
                    to_session.clone(),
                ));
            }
            Err(limit) => {
                for message in fanout::refused_by_limit(origin, &limit) {
                    let _ = to_session.send(message).await;
                }
            }
        }
    }
}

/// Turns what the client does into the capture's stop level: `stop` or a
/// closed request stream drains, a broken one aborts. A server shutdown
/// drains too.
async fn watch_client(mut requests: Streaming<CaptureRequest>, stop: Stop, shutdown: Stop) {
    loop {
        tokio::select! {
            request = requests.message() => match request {
                Ok(Some(CaptureRequest { operation: Some(capture_request::Operation::Stop(_)) })) => {
                    stop.request(StopLevel::Drain, "the client stopped the capture");
                }
                Ok(Some(_)) => tracing::debug!("ignoring a request after `start` that is not `stop`"),
                Ok(None) => {
                    stop.request(StopLevel::Drain, "the client closed its request stream");
                    return;
                }
                Err(_) => {
                    stop.request(StopLevel::Abort, "the client's request stream broke");
                    return;
                }
            },
            () = shutdown.reached(StopLevel::Drain) => {
                stop.request(StopLevel::Drain, "the API is shutting down");
                return;
            }
        }
    }
}

fn min_nonzero(requested: u64, cap: u64) -> u64 {
    match (requested, cap) {
        (0, cap) => cap,
        (requested, 0) => requested,
        (requested, cap) => requested.min(cap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_limits_cap_requests() {
        assert_eq!(min_nonzero(0, 0), 0);
        assert_eq!(min_nonzero(0, 10), 10);
        assert_eq!(min_nonzero(5, 0), 5);
        assert_eq!(min_nonzero(5, 10), 5);
        assert_eq!(min_nonzero(50, 10), 10);
    }

    #[test]
    fn refusals_map_to_grpc_codes() {
        let code = |r: Refusal| Status::from(r).code();
        assert_eq!(
            code(AuthError::InvalidToken.into()),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(ResolveError::UnknownTarget("x".into()).into()),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(LimitError::Instance(1).into()),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(code(Refusal::ShuttingDown), tonic::Code::Unavailable);
        assert_eq!(
            code(Refusal::BadRequest(String::new())),
            tonic::Code::InvalidArgument
        );
    }
}
