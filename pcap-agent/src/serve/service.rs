//! The `pcap.v1.Agent` gRPC service: checks who calls, admits captures, and
//! reports status.

use std::{collections::HashSet, sync::Arc};

use pcap_proto::{
    COMPATIBILITY_LEVEL,
    v1::{
        AgentRequest, StatusRequest, StatusResponse, agent_request::Operation, agent_server::Agent,
    },
};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::{
    config::Config,
    queue::{QueueStream, send_queue},
    session::Session,
    slots::Captures,
};

/// How long a `Capture` call may take to send its `start` request.
pub use pcap_proto::options::START_REQUEST_TIMEOUT;

pub struct AgentService {
    config: Arc<Config>,
    /// Names one of which the client's certificate must carry; `None` when
    /// serving plain text.
    client_names: Option<Vec<String>>,
    captures: Arc<Captures>,
    shutdown: watch::Receiver<bool>,
}

impl AgentService {
    /// `shutdown` becomes `true` when the agent stops: running captures stop
    /// and new ones are refused.
    pub fn new(config: Arc<Config>, shutdown: watch::Receiver<bool>) -> Self {
        let client_names = match (&config.tls, config.insecure_plaintext) {
            (Some(tls), false) => Some(tls.client_names.clone()),
            _ => None,
        };
        Self {
            captures: Arc::new(Captures {
                active: watch::Sender::new(0),
                max: config.limits.max_captures,
            }),
            client_names,
            config,
            shutdown,
        }
    }

    /// The count of running captures, to wait for at shutdown.
    pub fn active_captures(&self) -> watch::Receiver<u32> {
        self.captures.active.subscribe()
    }

    /// Lets the call through if the client's certificate carries one of the
    /// configured names. Chain and validity were checked by the handshake.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.client_names else {
            return Ok(());
        };
        let certificates = request.peer_certs().unwrap_or_default();
        let Some(leaf) = certificates.first() else {
            return Err(Status::permission_denied(
                "no client certificate was presented",
            ));
        };
        let mut presented = pcap_proto::tls::certificate_names(leaf.as_ref())
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        // The CN often repeats a DNS name.
        let mut seen = HashSet::new();
        presented.retain(|name| seen.insert(name.clone()));
        if presented.iter().any(|name| expected.contains(name)) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "the client certificate carries the names {presented:?}; \
                 this agent accepts only {expected:?}"
            )))
        }
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    type CaptureStream = QueueStream;

    async fn capture(
        &self,
        request: Request<Streaming<AgentRequest>>,
    ) -> Result<Response<QueueStream>, Status> {
        let result = self.start_capture(request).await;
        if let Err(status) = &result {
            super::metrics::metrics().refused(status.code());
        }
        result
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(StatusResponse {
            healthy: !*self.shutdown.borrow(),
            compatibility_level: COMPATIBILITY_LEVEL,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            active_captures: *self.captures.active.borrow(),
            max_captures: self.captures.max,
            resolvers: Vec::new(),
        }))
    }
}

impl AgentService {
    /// A `Capture` call: the capture's stream, or why it was refused.
    async fn start_capture(
        &self,
        request: Request<Streaming<AgentRequest>>,
    ) -> Result<Response<QueueStream>, Status> {
        self.authorize(&request)?;
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let mut requests = request.into_inner();
        let first = tokio::time::timeout(START_REQUEST_TIMEOUT, requests.message())
            .await
            .map_err(|_| {
                tracing::warn!(%peer, "no start request within {START_REQUEST_TIMEOUT:?}");
                Status::deadline_exceeded(format!(
                    "no start request within {}s",
                    START_REQUEST_TIMEOUT.as_secs()
                ))
            })??;
        let start = match first {
            Some(AgentRequest {
                operation: Some(Operation::Start(start)),
            }) => start,
            Some(_) => {
                return Err(Status::invalid_argument("the first request must be start"));
            }
            None => {
                return Err(Status::invalid_argument(
                    "the request stream ended before start",
                ));
            }
        };
        if start.compatibility_level != COMPATIBILITY_LEVEL {
            return Err(Status::failed_precondition(format!(
                "compatibility level {} is not served: this agent serves level {COMPATIBILITY_LEVEL}",
                start.compatibility_level
            )));
        }
        if *self.shutdown.borrow() {
            return Err(Status::unavailable("the agent is shutting down"));
        }
        let slot = self.captures.try_acquire().ok_or_else(|| {
            Status::resource_exhausted(format!(
                "this agent already runs {0} captures (limits.max_captures = {0})",
                self.captures.max
            ))
        })?;
        let (queue, stream) = send_queue(self.config.limits.send_buffer_bytes);
        let session = Session {
            config: Arc::clone(&self.config),
            start,
            requests,
            shutdown: self.shutdown.clone(),
            peer,
            slot,
        };
        match session.spawn(queue).await {
            Ok(Ok(())) => Ok(Response::new(stream)),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::internal("the capture ended before it started")),
        }
    }
}
