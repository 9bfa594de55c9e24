//! One `Capture` call to an agent, as pcap-api makes it, from a thread of
//! its own inside a network namespace.

use std::{
    sync::mpsc,
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use pcap_proto::v1::{
    AgentRequest, AgentStart, CaptureResponse, StopCapture, agent_client::AgentClient,
    agent_request::Operation, capture_response::Payload, event,
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

    /// The agent's next message or the status the call failed with; `None`
    /// once the call has ended. Fails when the agent says nothing for a
    /// minute.
    pub fn next(&self) -> anyhow::Result<Option<Result<CaptureResponse, Status>>> {
        match self.responses.recv_timeout(Duration::from_mins(1)) {
            Ok(item) => Ok(Some(item)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                anyhow::bail!("the agent said nothing for 60 s")
            }
        }
    }

    /// Waits for `capture started`: the messages up to it, or the status
    /// the call failed with.
    pub fn started(&self) -> anyhow::Result<Result<Vec<CaptureResponse>, Status>> {
        let mut seen = Vec::new();
        loop {
            match self
                .next()?
                .context("the stream ended before the capture started")?
            {
                Err(status) => return Ok(Err(status)),
                Ok(message) => {
                    let started = matches!(
                        &message.payload,
                        Some(Payload::Event(e)) if matches!(e.kind, Some(event::Kind::CaptureStarted(_)))
                    );
                    seen.push(message);
                    if started {
                        return Ok(Ok(seen));
                    }
                }
            }
        }
    }

    /// Asks the agent to stop.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.requests.send(AgentRequest {
            operation: Some(Operation::Stop(StopCapture {})),
        })?;
        Ok(())
    }

    /// Stops now and reads everything that is left; fails if the capture
    /// failed.
    pub fn stop_and_drain(&self) -> anyhow::Result<Vec<CaptureResponse>> {
        self.stop()?;
        let mut all = Vec::new();
        while let Some(item) = self.next()? {
            all.push(item.map_err(|s| anyhow::anyhow!("the capture failed: {s}"))?);
        }
        Ok(all)
    }

    /// Reads packets until one holds `marker`, then stops and drains.
    pub fn until_marker_then_stop(&self, marker: &[u8]) -> anyhow::Result<Vec<CaptureResponse>> {
        let mut seen = Vec::new();
        let mut stopped = false;
        while let Some(item) = self.next()? {
            let message = item.map_err(|s| anyhow::anyhow!("the capture failed: {s}"))?;
            let has_marker = matches!(&message.payload, Some(Payload::Packets(batch))
                if batch.records().map_while(Result::ok).any(|r| r.packet.data.windows(marker.len()).any(|w| w == marker)));
            seen.push(message);
            if has_marker && !stopped {
                self.stop()?;
                stopped = true;
            }
        }
        ensure!(stopped, "the marker never arrived");
        Ok(seen)
    }
}

/// Stops the capture, and waits for the call to end.
impl Drop for AgentCall {
    fn drop(&mut self) {
        let _ = self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
