//! A stored capture's recorder: it stands where the client would be for
//! the capture's session, writes every message to the object with the
//! CLI's own writer (`pcap_sink::Sink`), and passes the client everything
//! but the packets, which become `Progress`.
//!
//! The object is completed when the capture ends well: at least one origin
//! started, at least one stopped cleanly (stop or limit) or the object
//! reached `store.max_size`, and nothing aborted it. Otherwise the upload is
//! aborted and no object is left: nothing started, every origin broke, the
//! client went away or its request stream broke, or the store failed.
//!
//! At `store.max_size` the capture stops (LIMIT_REACHED, as for the byte
//! limit): packets that still arrive while the agents drain are not written,
//! and the object is completed with what was captured. `max_size` is at
//! most 9,000 parts, so S3's limit of 10,000 parts is never reached.

use std::{
    collections::HashSet,
    io::{self, Write},
    mem,
    sync::{Arc, Mutex},
};

use object_store::{Attribute, Attributes, ObjectStore as _, PutMultipartOptions, TagSet};
use pcap_proto::unix_now_ns;
use pcap_proto::v1::{
    CaptureResponse, Event, Limit, LimitReached, OriginProgress, Packets, Progress, Stored,
    StoredCapture, capture_response::Payload, event,
};
use pcap_sink::{Origins, Sink};
use tokio::sync::mpsc;
use tonic::Status;

use super::{CaptureStore, StoreError, new_id, owner_of, upload::Upload};
use crate::{
    auth::User,
    session::ClientSink,
    stop::{Stop, StopLevel},
};

impl CaptureStore {
    /// Starts the object of a new stored capture of `user`. This is the
    /// check that the store works: when it fails, nothing starts.
    pub async fn begin(self: &Arc<Self>, user: &User) -> Result<Recorder, StoreError> {
        let now = unix_now_ns();
        let id = new_id(now);
        let owner = owner_of(user);
        let path = self.object_path(&owner, &id, &user.name);
        let mut tags = TagSet::default();
        tags.push("owner", &owner);
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::ContentType,
            "application/vnd.tcpdump.pcap".into(),
        );
        attributes.insert(Attribute::Metadata("owner".into()), owner.clone().into());
        let options = PutMultipartOptions {
            tags,
            attributes,
            ..PutMultipartOptions::default()
        };
        let upload = self
            .s3
            .put_multipart_opts(&path, options)
            .await
            .map_err(|e| self.unavailable(&e))?;
        tracing::info!(
            user = %crate::audit::Escaped(&user.name),
            object = %path,
            "stored capture: multipart upload started"
        );
        Ok(Recorder::new(
            Arc::clone(self),
            Upload::new(upload, path),
            StoredCapture {
                id,
                owner: user.name.clone(),
                size: 0,
                created_ns: now,
                expires_ns: self.expires_ns(now),
            },
            self.part_size,
        ))
    }
}

/// What the stored section header names as its writer: the CLI's, so that
/// the object is the file `pcap capture -w` writes.
const APPLICATION: &str = concat!("pcap ", env!("CARGO_PKG_VERSION"));

pub struct Recorder {
    store: Arc<CaptureStore>,
    upload: Upload,
    capture: StoredCapture,
    part_size: usize,
    /// What is left for the final part once the capture ended well.
    last_part: Vec<u8>,
}

/// The pcapng bytes not yet sent as a part.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn len(&self) -> usize {
        self.0.lock().expect("buffer lock").len()
    }

    fn take(&self) -> Vec<u8> {
        mem::take(&mut *self.0.lock().expect("buffer lock"))
    }
}

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How a recording ended.
enum Outcome {
    /// Complete the object.
    Keep,
    /// Abort the upload; tell the client why, when it still listens.
    Discard(Option<Status>),
}

impl Recorder {
    pub(super) fn new(
        store: Arc<CaptureStore>,
        upload: Upload,
        capture: StoredCapture,
        part_size: usize,
    ) -> Self {
        Self {
            store,
            upload,
            capture,
            part_size,
            last_part: Vec::new(),
        }
    }

    /// The object's id, for the capture's log line.
    pub fn id(&self) -> &str {
        &self.capture.id
    }

    /// Records what the session sends until it ends, then completes or
    /// aborts the object. `client` is the real client's stream.
    pub async fn run(
        mut self,
        from_session: mpsc::Receiver<Result<CaptureResponse, Status>>,
        client: ClientSink,
        stop: Stop,
    ) {
        let buffer = Buffer::default();
        let outcome = match Sink::pcapng(buffer.clone(), false, APPLICATION) {
            Ok(sink) => {
                let mut state = State {
                    sink,
                    buffer,
                    origins: Origins::default(),
                    started: HashSet::new(),
                    stopped_cleanly: HashSet::new(),
                    written_bytes: 0,
                    full: false,
                    not_written: 0,
                };
                self.record(&mut state, from_session, &client, &stop).await
            }
            Err(e) => Outcome::Discard(Some(Status::internal(format!(
                "cannot write the capture: {e}"
            )))),
        };
        match outcome {
            Outcome::Keep => {
                self.capture.created_ns = unix_now_ns();
                self.capture.expires_ns = self.store.expires_ns(self.capture.created_ns);
                let path = self.upload.path().clone();
                let last = mem::take(&mut self.last_part);
                match self.upload.complete(last).await {
                    Ok(()) => {
                        crate::metrics::metrics().store_uploaded();
                        tracing::info!(object = %path, size = self.capture.size, "stored capture completed");
                        let stored = self
                            .store
                            .presign(&path)
                            .await
                            .map(|(url, expires)| Stored {
                                capture: Some(self.capture.clone()),
                                url,
                                url_expires_ns: expires,
                            });
                        let message = match stored {
                            Ok(stored) => Ok(CaptureResponse {
                                payload: Some(Payload::Stored(stored)),
                            }),
                            Err(e) => Err(Status::unavailable(e.to_string())),
                        };
                        let _ = client.send(message).await;
                    }
                    Err(e) => {
                        crate::metrics::metrics().store_failed();
                        tracing::warn!(object = %path, error = %e, "completing a stored capture failed");
                        let _ = client
                            .send(Err(Status::unavailable(format!("{e}; nothing was stored"))))
                            .await;
                    }
                }
            }
            Outcome::Discard(status) => {
                let path = self.upload.path().clone();
                match self.upload.abort().await {
                    Ok(()) => {
                        tracing::info!(object = %path, "stored capture discarded: upload aborted");
                    }
                    Err(e) => {
                        crate::metrics::metrics().store_failed();
                        tracing::warn!(object = %path, error = %e, "aborting a stored capture's upload failed");
                    }
                }
                if let Some(status) = status {
                    let _ = client.send(Err(status)).await;
                }
            }
        }
    }

    async fn record(
        &mut self,
        state: &mut State,
        mut from_session: mpsc::Receiver<Result<CaptureResponse, Status>>,
        client: &ClientSink,
        stop: &Stop,
    ) -> Outcome {
        while let Some(message) = from_session.recv().await {
            if state.full
                && let Ok(CaptureResponse {
                    payload: Some(Payload::Packets(batch)),
                }) = &message
            {
                state.not_written += batch.records().count() as u64;
                continue;
            }
            let forward = match message {
                Ok(response) => match state.write(response) {
                    Ok(Some(forward)) => Ok(forward),
                    Ok(None) => continue,
                    Err(e) => {
                        stop.request(StopLevel::Abort, "the stored capture cannot be written");
                        return Outcome::Discard(Some(Status::internal(format!(
                            "cannot write the capture: {e}; nothing was stored"
                        ))));
                    }
                },
                Err(status) => Err(status),
            };
            if client.send(forward).await.is_err() {
                // Dropping `from_session` tells the session too.
                stop.request(StopLevel::Abort, "the client went away");
                return Outcome::Discard(None);
            }
            if let Err(e) = self.send_full_parts(state).await {
                crate::metrics::metrics().store_failed();
                stop.request(StopLevel::Abort, "the capture store failed");
                return Outcome::Discard(Some(Status::unavailable(format!(
                    "{e}; the capture was stopped and nothing was stored"
                ))));
            }
            if !state.full && state.object_bytes() >= self.store.max_size() {
                state.full = true;
                stop.request(
                    StopLevel::Drain,
                    "the stored capture reached store.max_size",
                );
                let reached = Event {
                    origin: None,
                    message: format!(
                        "the stored capture reached its maximum size of {} bytes \
                         (store.max_size); it keeps what was captured until then",
                        self.store.max_size()
                    ),
                    kind: Some(event::Kind::LimitReached(LimitReached {
                        limit: Limit::Bytes as i32,
                    })),
                };
                let reached = CaptureResponse {
                    payload: Some(Payload::Event(reached)),
                };
                if client.send(Ok(reached)).await.is_err() {
                    stop.request(StopLevel::Abort, "the client went away");
                    return Outcome::Discard(None);
                }
            }
        }
        if state.not_written > 0 {
            tracing::info!(
                object = %self.upload.path(),
                packets = state.not_written,
                "stored capture full: packets that arrived while the agents stopped were not written"
            );
        }
        if stop.level() == StopLevel::Abort {
            return Outcome::Discard(None);
        }
        if state.started.is_empty() {
            // The stream already said why every origin failed.
            return Outcome::Discard(None);
        }
        if state.stopped_cleanly.is_empty() && !state.full {
            return Outcome::Discard(Some(Status::aborted(
                "the capture broke on every origin; nothing was stored",
            )));
        }
        if let Err(e) = state.sink.finish(unix_now_ns()) {
            return Outcome::Discard(Some(Status::internal(format!(
                "cannot write the capture: {e}; nothing was stored"
            ))));
        }
        self.capture.size = state.object_bytes();
        self.last_part = state.buffer.take();
        Outcome::Keep
    }

    /// Sends the buffer as a part once it holds `part_size` bytes.
    async fn send_full_parts(&mut self, state: &mut State) -> Result<(), StoreError> {
        if state.buffer.len() >= self.part_size {
            let part = state.buffer.take();
            state.written_bytes += part.len() as u64;
            self.upload.put_part(part).await?;
        }
        Ok(())
    }
}

struct State {
    sink: Sink<Buffer>,
    buffer: Buffer,
    origins: Origins,
    started: HashSet<u32>,
    stopped_cleanly: HashSet<u32>,
    /// Bytes already sent as parts.
    written_bytes: u64,
    /// The object reached `store.max_size`: packets are not written any more.
    full: bool,
    /// Packets not written because the object was full.
    not_written: u64,
}

impl State {
    /// Bytes of the object so far, sent or buffered.
    fn object_bytes(&self) -> u64 {
        self.written_bytes + self.buffer.len() as u64
    }

    /// Writes one message to the object; returns what the client gets
    /// instead (None: nothing).
    fn write(&mut self, response: CaptureResponse) -> io::Result<Option<CaptureResponse>> {
        let payload = match response.payload {
            Some(Payload::Packets(batch)) => {
                self.sink.write_packets(&batch)?;
                Some(Payload::Progress(self.progress(&batch)))
            }
            Some(Payload::Origin(origin)) => {
                self.origins.add(origin.clone());
                Some(Payload::Origin(origin))
            }
            Some(Payload::Interface(interface)) => {
                self.sink.add_interface(&interface, &self.origins)?;
                Some(Payload::Interface(interface))
            }
            Some(Payload::Statistics(statistics)) => {
                self.sink.add_statistics(statistics);
                Some(Payload::Statistics(statistics))
            }
            // Written to the object; the client needs no names.
            Some(Payload::Names(names)) => {
                self.sink.write_names(&names)?;
                None
            }
            Some(Payload::Event(event)) => {
                if let Some(origin) = event.origin {
                    match event.kind {
                        Some(event::Kind::CaptureStarted(_)) => {
                            self.started.insert(origin);
                        }
                        Some(event::Kind::CaptureStopped(_) | event::Kind::LimitReached(_)) => {
                            self.stopped_cleanly.insert(origin);
                        }
                        _ => {}
                    }
                }
                Some(Payload::Event(event))
            }
            other => other,
        };
        self.sink.end_of_message()?;
        Ok(payload.map(|payload| CaptureResponse {
            payload: Some(payload),
        }))
    }

    fn progress(&self, batch: &Packets) -> Progress {
        let mut progress = OriginProgress {
            origin: batch.origin,
            ..OriginProgress::default()
        };
        for record in batch.records().map_while(Result::ok) {
            progress.packets += 1;
            progress.bytes += record.packet.data.len() as u64;
        }
        Progress {
            origins: vec![progress],
            object_bytes: self.object_bytes(),
        }
    }
}
