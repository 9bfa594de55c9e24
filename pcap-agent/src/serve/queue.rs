//! The send queue of one capture: messages from the capture thread to the
//! gRPC response stream, with a budget in bytes for packets.
//!
//! The capture thread must never wait for the network, so nothing here
//! blocks: a packet whose bytes do not fit in the budget is refused (the
//! caller drops and counts it), and other messages always go in. Bytes leave
//! the budget when the gRPC layer takes their message from the stream.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use pcap_proto::v1::CaptureResponse;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

/// A queue whose packets may hold at most `budget` bytes at a time.
pub fn send_queue(budget: u64) -> (QueueSender, QueueStream) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Budget {
        limit: budget,
        used: AtomicU64::new(0),
    });
    (
        QueueSender {
            tx,
            budget: Arc::clone(&budget),
        },
        QueueStream { rx, budget },
    )
}

/// The reader of the stream went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

struct Budget {
    limit: u64,
    used: AtomicU64,
}

struct Queued {
    item: Result<CaptureResponse, Status>,
    /// Bytes of the budget this message holds.
    reserved: u64,
}

/// The capture thread's end.
pub struct QueueSender {
    tx: mpsc::UnboundedSender<Queued>,
    budget: Arc<Budget>,
}

impl QueueSender {
    /// Takes `bytes` from the budget for a packet about to be queued;
    /// `false` (and nothing taken) when they do not fit.
    pub fn try_reserve(&self, bytes: u64) -> bool {
        self.budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= self.budget.limit)
            })
            .is_ok()
    }

    /// Gives back `bytes` taken with [`Self::try_reserve`] for a packet
    /// that was not queued after all.
    pub fn release(&self, bytes: u64) {
        self.budget.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Queues `message`, which holds `reserved` bytes taken with
    /// [`Self::try_reserve`] (0 for messages without packets).
    pub fn send(&self, message: CaptureResponse, reserved: u64) -> Result<(), Closed> {
        self.tx
            .send(Queued {
                item: Ok(message),
                reserved,
            })
            .map_err(|_| Closed)
    }

    /// Ends the stream with `status` after what is queued.
    pub fn fail(&self, status: Status) {
        // Nobody to tell when the reader is gone.
        let _ = self.tx.send(Queued {
            item: Err(status),
            reserved: 0,
        });
    }

    /// Completes when the reader of the stream has gone away.
    pub fn closed(&self) -> impl Future<Output = ()> + use<> {
        let tx = self.tx.clone();
        async move { tx.closed().await }
    }

    /// Bytes of the budget in use.
    pub fn queued_bytes(&self) -> u64 {
        self.budget.used.load(Ordering::Acquire)
    }
}

/// The gRPC layer's end: the response stream. It ends when the
/// [`QueueSender`] is dropped and everything queued has been taken.
pub struct QueueStream {
    rx: mpsc::UnboundedReceiver<Queued>,
    budget: Arc<Budget>,
}

impl Stream for QueueStream {
    type Item = Result<CaptureResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|queued| {
            queued.map(|Queued { item, reserved }| {
                self.budget.used.fetch_sub(reserved, Ordering::AcqRel);
                if let Ok(message) = &item {
                    super::metrics::metrics()
                        .sent_bytes(prost::Message::encoded_len(message) as u64);
                }
                item
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use pcap_proto::v1::{Event, Packets, capture_response::Payload};
    use tokio_stream::StreamExt as _;

    use super::*;

    fn packets() -> CaptureResponse {
        CaptureResponse {
            payload: Some(Payload::Packets(Packets::default())),
        }
    }

    fn event() -> CaptureResponse {
        CaptureResponse {
            payload: Some(Payload::Event(Event::default())),
        }
    }

    #[test]
    fn refuses_what_does_not_fit_in_the_budget() {
        let (tx, _rx) = send_queue(1000);
        assert!(tx.try_reserve(600));
        assert!(!tx.try_reserve(401));
        assert!(tx.try_reserve(400));
        assert!(!tx.try_reserve(1));
        assert_eq!(tx.queued_bytes(), 1000);
        assert!(!tx.try_reserve(u64::MAX));
        assert_eq!(tx.queued_bytes(), 1000);
    }

    #[tokio::test]
    async fn bytes_leave_the_budget_when_their_message_is_taken() {
        let (tx, mut rx) = send_queue(1000);
        assert!(tx.try_reserve(700));
        tx.send(packets(), 700).unwrap();
        assert!(tx.try_reserve(300));
        tx.send(packets(), 300).unwrap();
        assert!(!tx.try_reserve(1));

        rx.next().await.unwrap().unwrap();
        assert_eq!(tx.queued_bytes(), 300);
        assert!(tx.try_reserve(700));
        assert!(!tx.try_reserve(1));
        rx.next().await.unwrap().unwrap();
        assert_eq!(tx.queued_bytes(), 700);
    }

    #[tokio::test]
    async fn other_messages_always_fit() {
        let (tx, rx) = send_queue(1);
        assert!(tx.try_reserve(1));
        for _ in 0..100 {
            tx.send(event(), 0).unwrap();
        }
        drop(tx);
        assert_eq!(rx.collect::<Vec<_>>().await.len(), 100);
    }

    #[tokio::test]
    async fn keeps_order_and_ends_with_a_failure() {
        let (tx, rx) = send_queue(10);
        tx.send(event(), 0).unwrap();
        tx.send(packets(), 0).unwrap();
        tx.fail(Status::internal("boom"));
        drop(tx);
        let items: Vec<_> = rx.collect().await;
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap(), &event());
        assert_eq!(items[1].as_ref().unwrap(), &packets());
        assert_eq!(items[2].as_ref().unwrap_err().message(), "boom");
    }

    #[tokio::test]
    async fn notices_when_the_reader_goes_away() {
        let (tx, rx) = send_queue(10);
        let closed = tx.closed();
        drop(rx);
        closed.await;
        assert_eq!(tx.send(event(), 0), Err(Closed));
    }
}
