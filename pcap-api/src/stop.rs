//! A stop signal that only escalates: running → drain → abort. Shared by
//! the tasks of one capture (and, for the whole server, by every capture).

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    Running,
    /// Ask the agents to stop and forward what they still send.
    Drain,
    /// Drop every agent connection now: nobody is listening any more.
    Abort,
}

#[derive(Clone)]
pub struct Stop {
    state: Arc<watch::Sender<(StopLevel, &'static str)>>,
}

impl Default for Stop {
    fn default() -> Self {
        Self {
            state: Arc::new(watch::Sender::new((StopLevel::Running, ""))),
        }
    }
}

impl Stop {
    /// Raises the level to `level` unless it is already there or beyond.
    /// The reason of the first request above `Running` is kept.
    pub fn request(&self, level: StopLevel, reason: &'static str) {
        self.state.send_if_modified(|(current, why)| {
            if level <= *current {
                return false;
            }
            if *current == StopLevel::Running {
                *why = reason;
            }
            *current = level;
            true
        });
    }

    pub fn level(&self) -> StopLevel {
        self.state.borrow().0
    }

    /// Why the stop was first requested; empty while running.
    pub fn reason(&self) -> &'static str {
        self.state.borrow().1
    }

    /// Returns once the level is `level` or beyond.
    pub async fn reached(&self, level: StopLevel) {
        let mut receiver = self.state.subscribe();
        // Cannot fail: `self` keeps the sender alive.
        let _ = receiver.wait_for(|(current, _)| *current >= level).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn levels_only_go_up_and_keep_the_first_reason() {
        let stop = Stop::default();
        assert_eq!(stop.level(), StopLevel::Running);
        stop.request(StopLevel::Drain, "client stop");
        stop.reached(StopLevel::Drain).await;
        stop.request(StopLevel::Running, "ignored");
        assert_eq!(stop.level(), StopLevel::Drain);
        stop.request(StopLevel::Abort, "client gone");
        stop.reached(StopLevel::Abort).await;
        assert_eq!(stop.reason(), "client stop");
    }
}
