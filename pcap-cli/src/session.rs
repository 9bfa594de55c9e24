//! One capture: the request stream (`start`, then `stop` on the first
//! Ctrl-C or SIGTERM) and the response stream, read until the API ends it
//! or a second Ctrl-C says not to wait.

use std::io::{self, Write};

use anyhow::Context as _;
use pcap_proto::v1::api_client::ApiClient;
use pcap_proto::v1::capture_request::Operation;
use pcap_proto::v1::capture_response::Payload;
use pcap_proto::v1::{CaptureRequest, CaptureResponse, StartCapture, StopCapture};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::origins::Origins;
use crate::sink::Sink;
use crate::status::{Outcome, REDRAW_EVERY, Report};

/// Ctrl-C (SIGINT) and SIGTERM, which both ask to stop.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// How the response stream ended.
#[derive(Debug)]
pub enum Ending {
    /// The API ended the stream: stopped, a limit, or nothing could start.
    Finished,
    /// A second Ctrl-C: reading stopped before the API ended the stream.
    Abandoned,
    /// The API answered the call with an error; nothing was captured.
    Refused(tonic::Status),
    /// The stream broke (or the API ended it with an error) mid-capture.
    Lost(tonic::Status),
    /// Whoever read the output closed it (a pipe, Wireshark's fifo): the
    /// capture was stopped and what came after was dropped.
    OutputClosed,
}

/// True when `error` is a write to a pipe nobody reads any more.
pub fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

pub struct Session<W: Write> {
    sink: Sink<W>,
    report: Report,
    origins: Origins,
    stop_sent: bool,
    /// A stored capture's object, once the API completed it.
    stored: Option<pcap_proto::v1::Stored>,
}

impl<W: Write> Session<W> {
    pub fn new(sink: Sink<W>, report: Report) -> Self {
        Self {
            sink,
            report,
            origins: Origins::default(),
            stop_sent: false,
            stored: None,
        }
    }

    /// The stored object (`--store`), when the API completed one.
    pub fn stored(&self) -> Option<&pcap_proto::v1::Stored> {
        self.stored.as_ref()
    }

    /// Runs the capture. Errors are the output's: the capture cannot be
    /// written.
    pub async fn run(
        &mut self,
        channel: Channel,
        start: StartCapture,
        token: Option<&str>,
        signals: &mut Signals,
    ) -> anyhow::Result<Ending> {
        // The request stream stays open until this function returns: closing
        // it would stop the capture too, without a word.
        let (requests, request_stream) = mpsc::channel(2);
        requests
            .try_send(CaptureRequest {
                operation: Some(Operation::Start(start)),
            })
            .expect("the request channel has room for start");
        let mut request = tonic::Request::new(ReceiverStream::new(request_stream));
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .context("the token cannot be sent in a header")?;
            request.metadata_mut().insert("authorization", value);
        }

        let mut client = ApiClient::new(channel);
        let call = client.capture(request);
        tokio::pin!(call);
        let response = loop {
            tokio::select! {
                response = &mut call => break response,
                () = signals.recv() => if !self.stop(&requests) {
                    return Ok(Ending::Abandoned);
                },
            }
        };
        let mut responses = match response {
            Ok(response) => response.into_inner(),
            Err(status) => return Ok(Ending::Refused(status)),
        };

        let mut redraw = tokio::time::interval(REDRAW_EVERY);
        redraw.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                message = responses.message() => match message {
                    Ok(Some(message)) => match self.handle(message) {
                        Err(error) if broken_pipe(&error) => break,
                        other => other?,
                    },
                    Ok(None) => return Ok(Ending::Finished),
                    Err(status) => return Ok(Ending::Lost(status)),
                },
                () = signals.recv() => if !self.stop(&requests) {
                    return Ok(Ending::Abandoned);
                },
                _ = redraw.tick() => {
                    self.report.tick(&self.origins);
                    match self.sink.flush().context("cannot write the capture") {
                        Err(error) if broken_pipe(&error) => break,
                        other => other?,
                    }
                }
            }
        }
        // The output's reader went away: stop the capture, and let the API
        // end the stream (what still arrives has nowhere to go).
        if !self.stop_sent {
            self.stop_sent = true;
            let _ = requests.try_send(CaptureRequest {
                operation: Some(Operation::Stop(StopCapture {})),
            });
        }
        self.report
            .say("the output was closed by its reader: stopping the capture");
        loop {
            tokio::select! {
                message = responses.message() => if !matches!(message, Ok(Some(_))) {
                    return Ok(Ending::OutputClosed);
                },
                () = signals.recv() => return Ok(Ending::OutputClosed),
            }
        }
    }

    /// The first time, sends `stop` and returns true (keep reading); after
    /// that returns false (quit now).
    fn stop(&mut self, requests: &mpsc::Sender<CaptureRequest>) -> bool {
        if self.stop_sent {
            self.report
                .say("quitting without waiting: packets still on their way are lost");
            return false;
        }
        self.stop_sent = true;
        let stop = CaptureRequest {
            operation: Some(Operation::Stop(StopCapture {})),
        };
        // Room for it: only `start` went before, and only once.
        let _ = requests.try_send(stop);
        self.report.say(
            "stopping: waiting for the packets already captured (Ctrl-C again to quit at once)",
        );
        true
    }

    fn handle(&mut self, message: CaptureResponse) -> anyhow::Result<()> {
        match message.payload {
            Some(Payload::Origin(origin)) => {
                self.report.origin_announced(origin.id);
                self.origins.add(origin);
            }
            Some(Payload::Interface(interface)) => self
                .sink
                .add_interface(&interface, &self.origins)
                .context("cannot write the capture")?,
            Some(Payload::Packets(batch)) => {
                let received = self
                    .sink
                    .write_packets(&batch)
                    .context("cannot write the capture")?;
                self.report.packets(batch.origin, received);
            }
            Some(Payload::Event(event)) => {
                let interfaces = event
                    .origin
                    .map(|origin| self.sink.interface_names(origin))
                    .unwrap_or_default();
                self.report.event(&event, &self.origins, &interfaces);
            }
            Some(Payload::Statistics(statistics)) => {
                self.report.statistics(&statistics);
                self.sink.add_statistics(statistics);
            }
            Some(Payload::Names(names)) => self
                .sink
                .write_names(&names)
                .context("cannot write the capture")?,
            Some(Payload::Progress(progress)) => self.report.progress(&progress),
            Some(Payload::Stored(stored)) => self.stored = Some(stored),
            None => {}
        }
        self.sink
            .end_of_message()
            .context("cannot write the capture")
    }

    /// Ends the output validly (statistics blocks, flushed) and prints the
    /// summary. Returns the packets written and the outcome, or the
    /// output's error.
    pub fn finish(&mut self) -> anyhow::Result<(u64, Outcome)> {
        let finished = self.sink.finish(pcap_proto::unix_now_ns());
        if self.sink.skipped() > 0 {
            self.report.say(&format!(
                "{} packets of interfaces the API never described were left out",
                self.sink.skipped()
            ));
        }
        let outcome = self.report.finish(&self.origins);
        finished.context("cannot write the capture")?;
        Ok((self.sink.written(), outcome))
    }
}
