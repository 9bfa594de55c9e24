//! The `pcap.v1.API` gRPC service: checks a capture request, then runs it
//! as one task per agent (`fanout`) feeding one `session` that writes the
//! client's response stream.

use std::{num::NonZeroU64, sync::Arc, time::Instant};

use pcap_proto::{
    COMPATIBILITY_LEVEL,
    options::{self, Limits},
    tls::TlsError,
    v1::{
        CaptureOptions, CaptureRequest, CaptureResponse, OriginDescription, StartCapture,
        StatusRequest, StatusResponse, Target, api_server::Api, capture_request,
        capture_response::Payload,
    },
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    audit,
    auth::{self, AuthError, Authenticator, Chain, StaticTokens, User},
    bosh::BoshResolver,
    cf::CfResolver,
    config::{self, Config},
    fanout::{Connector, Launcher},
    follow,
    limits::{CaptureSlot, Concurrency, LimitError, Maxima},
    merge::Merger,
    resolve::{self, AgentEndpoint, ResolveError, Resolved, StaticResolver},
    resolvers::Resolvers,
    session::{self, GlobalLimits, Session, Summary},
    stop::{Stop, StopLevel},
    uaa,
};

/// Responses queued for a client before the session waits for it. Small:
/// the reorder window is where packets wait.
const CLIENT_QUEUE: usize = 16;
/// Messages queued from all agents of a capture before they wait.
const AGENT_QUEUE: usize = 16;

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
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Refusal {
    /// What the audit log says of this refusal: the message the client
    /// gets, or more when the client is told less (a static target the
    /// caller may not use is, to them, an unknown one).
    pub fn audit_reason(&self) -> String {
        match self {
            Self::Resolve(ResolveError::NotGranted { reason, .. }) => reason.clone(),
            other => other.to_string(),
        }
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        let message = refusal.to_string();
        match refusal {
            Refusal::Auth(AuthError::Unavailable(_))
            | Refusal::Resolve(ResolveError::Unavailable(_))
            | Refusal::ShuttingDown => Status::unavailable(message),
            Refusal::Auth(_) | Refusal::Resolve(ResolveError::Unauthenticated(_)) => {
                Status::unauthenticated(message)
            }
            Refusal::Resolve(
                ResolveError::UnknownTarget(_)
                | ResolveError::NotGranted { .. }
                | ResolveError::NotFound(_),
            ) => Status::not_found(message),
            Refusal::Resolve(ResolveError::NoTarget | ResolveError::BadRequest(_))
            | Refusal::BadRequest(_) => Status::invalid_argument(message),
            Refusal::Resolve(ResolveError::PermissionDenied(_)) => {
                Status::permission_denied(message)
            }
            Refusal::Resolve(ResolveError::Unsupported(_)) => Status::unimplemented(message),
            Refusal::Limit(_) => Status::resource_exhausted(message),
            Refusal::Store(error) => {
                use crate::store::StoreError;
                match error {
                    StoreError::NotConfigured => Status::failed_precondition(message),
                    StoreError::Unavailable { .. } => Status::unavailable(message),
                    StoreError::NotFound(_) => Status::not_found(message),
                    StoreError::BadId(_) => Status::invalid_argument(message),
                    StoreError::Failed(_) | StoreError::Setup(_) => Status::internal(message),
                }
            }
        }
    }
}

/// What can keep the service from being built.
#[derive(Debug, Error)]
pub enum SetupError {
    /// The client certificate, key, CA or server name for the agents
    /// (`[agents]`) is not usable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The `[bosh]` director's client (its CA, its HTTP client).
    #[error("bosh: {0}")]
    Bosh(#[from] uaa::SetupError),
    /// The `[cf]` Cloud Controller's client (its CA, its HTTP client).
    #[error("cf: {0}")]
    Cf(uaa::SetupError),
}

pub struct ApiService {
    shared: Arc<Shared>,
}

struct Shared {
    authenticator: Box<dyn Authenticator>,
    resolvers: Resolvers,
    concurrency: Concurrency,
    connector: Arc<Connector>,
    merge: config::Merge,
    limits: config::Limits,
    /// Reaches `Drain` when the server shuts down.
    shutdown: Stop,
    /// Where `--store` captures go (`[store]`).
    store: Option<Arc<crate::store::CaptureStore>>,
    /// App names for c2c insight (`[cf]`).
    app_names: Option<crate::cf::AppNames>,
    /// The resolvers' health for `Status`, asked at most every 30 s.
    health: crate::health::HealthCache<Vec<pcap_proto::v1::ResolverStatus>>,
}

impl ApiService {
    pub fn new(config: &Config, shutdown: Stop) -> Result<Self, SetupError> {
        let limits = &config.limits;
        let mut authenticators: Vec<Box<dyn Authenticator>> =
            vec![Box::new(StaticTokens::new(&config.users))];
        let mut resolvers = Resolvers {
            static_targets: StaticResolver::new(&config.targets, config.agents.port),
            bosh: None,
            cf: None,
        };
        if let Some(bosh) = &config.bosh {
            let resolver = BoshResolver::new(bosh, config.agents.port)?;
            resolver.discover_in_background();
            authenticators.push(Box::new(resolver.authenticator()));
            resolvers.bosh = Some(resolver);
        }
        let mut app_names = None;
        if let Some(cf) = &config.cf {
            let resolver = CfResolver::new(cf, config.agents.port).map_err(SetupError::Cf)?;
            resolver.discover_in_background();
            app_names = Some(resolver.app_names());
            authenticators.push(Box::new(resolver.authenticator()));
            resolvers.cf = Some(resolver);
        }
        let shared = Shared {
            authenticator: Box::new(Chain::new(authenticators)),
            resolvers,
            concurrency: Concurrency::new(Maxima {
                captures: limits.max_captures,
                per_user: limits.max_captures_per_user,
                per_agent: limits.max_captures_per_agent,
                per_user_per_agent: limits.max_captures_per_user_per_agent,
            }),
            connector: Arc::new(Connector::new(&config.agents)?),
            merge: config.merge.clone(),
            limits: limits.clone(),
            shutdown,
            store: None,
            app_names,
            health: crate::health::HealthCache::new(crate::health::HEALTH_TTL),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }
}

impl ApiService {
    /// Stores `--store` captures in `store`, and runs its retention cleanup.
    #[must_use]
    pub fn with_store(mut self, store: crate::store::CaptureStore) -> Self {
        let store = Arc::new(store);
        store.spawn_cleanup();
        Arc::get_mut(&mut self.shared)
            .expect("the service is not shared before it serves")
            .store = Some(store);
        self
    }

    /// The caller of a stored-captures call, and the store.
    async fn store_caller(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(User, Arc<crate::store::CaptureStore>), Refusal> {
        let authorization = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let token = auth::bearer_token(authorization)?;
        let user = self.shared.authenticator.authenticate(token).await?;
        let store = self
            .shared
            .store
            .clone()
            .ok_or(crate::store::StoreError::NotConfigured)?;
        Ok((user, store))
    }

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
        let token = auth::bearer_token(authorization).map_err(|e| {
            audit::unauthenticated(&e);
            Refusal::from(e)
        })?;
        let user = match self.shared.authenticator.authenticate(token).await {
            Ok(user) => user,
            Err(error) => {
                audit::unauthenticated(&error);
                return Err(Refusal::from(error).into());
            }
        };
        // Refusals before the request is read: audited with who asked.
        let unread = |status: Status| {
            audit::Request::unread(&user).refused(&status, status.message());
            status
        };
        if self.shared.shutdown.level() != StopLevel::Running {
            return Err(unread(Refusal::ShuttingDown.into()));
        }
        let mut requests = request.into_inner();
        let first = session::first_request(&mut requests)
            .await
            .map_err(&unread)?;
        let Some(CaptureRequest {
            operation: Some(capture_request::Operation::Start(start)),
        }) = first
        else {
            let message = "the first request must be `start`".to_owned();
            return Err(unread(Refusal::BadRequest(message).into()));
        };
        let request = audit::Request::new(&user, &start);
        let store = start.store;
        let capture = match self.prepare(user, start).await {
            Ok(capture) => capture,
            Err(refusal) => {
                let reason = refusal.audit_reason();
                let status = Status::from(refusal);
                request.refused(&status, &reason);
                return Err(status);
            }
        };
        request.allowed(&capture.origins(), store);
        let (sink, responses) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(capture.run(Arc::clone(&self.shared), request, requests, sink));
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let shared = &self.shared;
        let resolvers = shared.health.get(|| shared.resolvers.statuses()).await;
        Ok(Response::new(StatusResponse {
            healthy: shared.shutdown.level() == StopLevel::Running,
            compatibility_level: COMPATIBILITY_LEVEL,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            active_captures: shared.concurrency.active_captures(),
            max_captures: shared.concurrency.max_captures(),
            resolvers,
        }))
    }

    async fn list_captures(
        &self,
        request: Request<pcap_proto::v1::ListCapturesRequest>,
    ) -> Result<Response<pcap_proto::v1::ListCapturesResponse>, Status> {
        let (user, store) = self.store_caller(request.metadata()).await?;
        let captures = store.list(&user).await.map_err(Refusal::from)?;
        Ok(Response::new(pcap_proto::v1::ListCapturesResponse {
            captures,
        }))
    }

    async fn get_download_url(
        &self,
        request: Request<pcap_proto::v1::GetDownloadUrlRequest>,
    ) -> Result<Response<pcap_proto::v1::DownloadUrl>, Status> {
        let (user, store) = self.store_caller(request.metadata()).await?;
        let url = store
            .download_url(&user, &request.get_ref().id)
            .await
            .map_err(Refusal::from)?;
        Ok(Response::new(url))
    }
}

impl ApiService {
    /// Everything that can refuse the request, before anything starts.
    async fn prepare(&self, user: User, start: StartCapture) -> Result<Capture, Refusal> {
        // The filter's length, the snaplen and the limits, as the agents
        // check them: before anything is asked of a resolver.
        let options = start.options.unwrap_or_default();
        let limits = options::CaptureOptions::from_wire(&options)
            .map_err(|e| Refusal::BadRequest(e.to_string()))?
            .limits;
        let target = start.target.unwrap_or_default();
        let resolved = self.shared.resolvers.resolve(&user, &target).await?;
        // c2c insight: app names are the API's to give, never the caller's.
        let mut options = options;
        if let Some(c2c) = options.c2c.as_mut() {
            c2c.app_names = match &self.shared.app_names {
                Some(names) => names.for_user(&user).await,
                None => std::collections::HashMap::new(),
            };
        }
        if resolved.agents.iter().any(|a| a.container.is_some()) && !options.interfaces.is_empty() {
            return Err(Refusal::BadRequest(
                "an app capture is pinned to each instance's container; it takes no interfaces"
                    .to_owned(),
            ));
        }
        if let Some(allowed) = &resolved.allowed_interfaces
            && let Some(other) = options.interfaces.iter().find(|i| !allowed.contains(i))
        {
            return Err(ResolveError::PermissionDenied(format!(
                "target {} may be captured on {} only, not on {}",
                resolve::describe(Some(&target)),
                allowed.join(", "),
                audit::escaped(other)
            ))
            .into());
        }
        let slot = self
            .shared
            .concurrency
            .start_capture(&user.key(), &user.name)?;
        // A stored capture starts its object first: a store that is down
        // refuses the capture before any agent starts.
        let recorder = if start.store {
            let store = self
                .shared
                .store
                .as_ref()
                .ok_or(crate::store::StoreError::NotConfigured)?;
            Some(store.begin(&user).await?)
        } else {
            None
        };
        Ok(Capture {
            user,
            target: resolve::describe(Some(&target)),
            wire_target: target,
            options,
            limits,
            resolved,
            recorder,
            _slot: slot,
        })
    }
}

/// An accepted capture request.
struct Capture {
    user: User,
    target: String,
    /// The target as asked, for following its instances.
    wire_target: Target,
    options: CaptureOptions,
    /// `options`' limits, checked.
    limits: Limits,
    resolved: Resolved,
    /// Writes the capture to the store instead of the client (`--store`).
    recorder: Option<crate::store::recorder::Recorder>,
    _slot: CaptureSlot,
}

impl Capture {
    async fn run(
        mut self,
        shared: Arc<Shared>,
        audit: audit::Request,
        requests: Streaming<CaptureRequest>,
        sink: session::ClientSink,
    ) {
        let began = Instant::now();
        let stop = Stop::default();
        // A stored capture: the recorder stands where the client would.
        let (sink, recording) = match self.recorder.take() {
            Some(recorder) => {
                let (to_recorder, from_session) = mpsc::channel(CLIENT_QUEUE);
                let recording = tokio::spawn(recorder.run(from_session, sink, stop.clone()));
                (to_recorder, Some(recording))
            }
            None => (sink, None),
        };
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
        let limits = self.limits.capped_by(Limits {
            duration: Some(shared.limits.max_duration()),
            packets: None,
            bytes: NonZeroU64::new(shared.limits.max_bytes),
        });
        let agent_options = self.agent_options(limits);
        let merger = Merger::new(
            shared.merge.reorder_window(),
            usize::try_from(shared.merge.max_buffered_bytes).unwrap_or(usize::MAX),
        );
        let session = Session::new(
            sink,
            stop.clone(),
            merger,
            GlobalLimits {
                packets: limits.packets.map_or(0, NonZeroU64::get),
                bytes: limits.bytes.map_or(0, NonZeroU64::get),
            },
            self.resolved.agents.len(),
        );
        let agents: &[AgentEndpoint] = if client_listens {
            &self.resolved.agents
        } else {
            &[]
        };
        let launcher = Launcher::new(
            Arc::clone(&shared.connector),
            shared.concurrency.clone(),
            &self.user,
            stop.clone(),
            to_session,
        );
        // The session runs while agents start: it drains their messages.
        let ((), summary) = tokio::join!(
            start_agents(
                agents,
                launcher,
                &agent_options,
                &self.user,
                &self.wire_target,
                &shared,
                began
            ),
            session.run(from_agents),
        );
        watcher.abort();
        if let Some(recording) = recording {
            // The object is completed or aborted before the slot is freed.
            let _ = recording.await;
        }
        self.log(&audit, &summary, &stop, began.elapsed());
    }

    /// The request's options as agents get them: the target's interfaces
    /// when the request names none, and `limits` (the request's, capped by
    /// the operator's).
    fn agent_options(&self, limits: Limits) -> CaptureOptions {
        let mut options = options::CaptureOptions::with_limits(&self.options, limits);
        if options.interfaces.is_empty() {
            options
                .interfaces
                .clone_from(&self.resolved.default_interfaces);
        }
        options
    }

    /// The origins' names, in order.
    fn origins(&self) -> Vec<&str> {
        self.resolved
            .agents
            .iter()
            .map(|a| a.origin.as_str())
            .collect()
    }

    /// The capture's log line and audit line. Tokens never reach them;
    /// what a caller controls is escaped.
    fn log(
        &self,
        audit: &audit::Request,
        summary: &Summary,
        stop: &Stop,
        duration: std::time::Duration,
    ) {
        let outcome = if summary.client_gone {
            "the client went away"
        } else if !summary.any_started {
            "no agent started"
        } else if stop.level() == StopLevel::Running {
            "every agent ended"
        } else {
            stop.reason()
        };
        let origins = self.origins();
        tracing::info!(
            user = %audit::Escaped(&self.user.name),
            target = %audit::Escaped(&self.target),
            origins = %audit::Escaped(&origins.join(",")),
            filter = %audit::Escaped(&self.options.filter),
            duration_s = duration.as_secs_f64(),
            outcome,
            packets = summary.packets,
            bytes = summary.bytes,
            after_limit = summary.after_limit,
            out_of_order = summary.out_of_order,
            future_clamped = summary.future_clamped,
            "capture ended"
        );
        audit.ended(&audit::Ended {
            origins: &origins,
            duration,
            outcome,
            packets: summary.packets,
        });
    }
}

/// Starts one task per agent, numbered in order, then, for a target whose
/// instances change (an app), watches them until the capture ends: changes
/// are told, and with `follow` new instances started.
async fn start_agents(
    agents: &[AgentEndpoint],
    mut launcher: Launcher,
    options: &CaptureOptions,
    user: &User,
    target: &Target,
    shared: &Shared,
    began: Instant,
) {
    let follow = follow::wanted(target);
    let mut retire = Vec::new();
    for (id, endpoint) in agents.iter().enumerate() {
        let reconnect = follow.then(Stop::default);
        launcher
            .launch(id as u32, endpoint, options, reconnect.clone())
            .await;
        retire.push(reconnect);
    }
    let Some((resolver, app)) = shared.resolvers.follower(target) else {
        return;
    };
    if agents.is_empty() {
        return;
    }
    let watch = follow::Follow {
        resolver,
        user,
        app,
        every: resolver.follow_every(),
        follow,
        options: options.clone(),
        began,
        stop: launcher.stop().clone(),
    };
    watch.run(launcher, agents, retire).await;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let resolve = |e: ResolveError| code(e.into());
        assert_eq!(
            resolve(ResolveError::PermissionDenied(String::new())),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            resolve(ResolveError::NotFound(String::new())),
            tonic::Code::NotFound
        );
        assert_eq!(
            resolve(ResolveError::Unavailable(String::new())),
            tonic::Code::Unavailable
        );
        assert_eq!(
            code(AuthError::Rejected(String::new()).into()),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(AuthError::Unavailable(String::new()).into()),
            tonic::Code::Unavailable
        );
        assert_eq!(
            code(Refusal::BadRequest(String::new())),
            tonic::Code::InvalidArgument
        );
    }
}
