//! The agent's capture slots: at most `max_captures` captures run at once,
//! and each holds a [`CaptureSlot`] until it ends. The service hands them
//! out; a session holds one.

use std::sync::Arc;

use tokio::sync::watch;

/// The running captures, at most `max`.
pub struct Captures {
    pub active: watch::Sender<u32>,
    pub max: u32,
}

impl Captures {
    pub fn try_acquire(self: &Arc<Self>) -> Option<CaptureSlot> {
        let admitted = self.active.send_if_modified(|active| {
            let admit = *active < self.max;
            if admit {
                *active += 1;
            }
            admit
        });
        admitted.then(|| CaptureSlot(Arc::clone(self)))
    }
}

/// One running capture; dropping it makes room for another.
pub struct CaptureSlot(Arc<Captures>);

impl Drop for CaptureSlot {
    fn drop(&mut self) {
        self.0.active.send_modify(|active| *active -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_at_most_max_captures() {
        let captures = Arc::new(Captures {
            active: watch::Sender::new(0),
            max: 2,
        });
        let first = captures.try_acquire().unwrap();
        let _second = captures.try_acquire().unwrap();
        assert!(captures.try_acquire().is_none());
        drop(first);
        assert_eq!(*captures.active.borrow(), 1);
        assert!(captures.try_acquire().is_some());
    }
}
