//! One `Capture` call to an agent, as pcap-api makes it, from a thread of
//! its own inside a network namespace.

use std::{
    sync::mpsc,
    thread::{self, JoinHandle},
};

use pcap_proto::v1::{
    AgentRequest, AgentStart, CaptureResponse, agent_client::AgentClient, agent_request::Operation,
};
use tokio::sync::mpsc as async_mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, transport::Endpoint};

use crate::netns::Netns;

/// A `Capture` call: what the agent sends arrives on `responses` (the
/// status the call failed with as its last item), requests go on
/// `requests`; `thread` runs the call and ends with it.
#[derive(Debug)]
pub struct AgentCall {
    pub responses: mpsc::Receiver<Result<CaptureResponse, Status>>,
    pub requests: async_mpsc::UnboundedSender<AgentRequest>,
    pub thread: Option<JoinHandle<()>>,
}

impl AgentCall {
    /// Opens the call to `endpoint` (with its TLS, if any) from a thread in
    /// `ns`, and sends `start` as its first request.
    pub fn start(ns: &Netns, endpoint: Endpoint, start: AgentStart) -> anyhow::Result<Self> {
        let netns = std::fs::File::open(format!("/run/netns/{}", ns.name))?;
        let (requests, request_rx) = async_mpsc::unbounded_channel();
        requests.send(AgentRequest {
            operation: Some(Operation::Start(start)),
        })?;
        let (tx, responses) = mpsc::channel();
        let thread = thread::spawn(move || {
            let run = async {
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Status::internal(e.to_string()))?;
                let channel = endpoint
                    .connect()
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                let mut stream = AgentClient::new(channel)
                    .max_decoding_message_size(8 << 20)
                    .capture(UnboundedReceiverStream::new(request_rx))
                    .await?
                    .into_inner();
                while let Some(message) = stream.message().await? {
                    if tx.send(Ok(message)).is_err() {
                        break;
                    }
                }
                Ok::<(), Status>(())
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            if let Err(status) = runtime.block_on(run) {
                let _ = tx.send(Err(status));
            }
        });
        Ok(Self {
            responses,
            requests,
            thread: Some(thread),
        })
    }
}
