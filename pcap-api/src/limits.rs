//! How many captures may run at once: on this API instance, per user, and
//! per agent. A slot is held by a guard and given back when it is dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use thiserror::Error;
use tokio::sync::watch;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("this API instance already runs {0} captures (limits.max_captures = {0})")]
    Instance(u32),
    #[error("user \"{user}\" already runs {max} captures (limits.max_captures_per_user = {max})")]
    User { user: String, max: u32 },
    #[error(
        "agent {agent} already runs {max} captures for this API (limits.max_captures_per_agent = {max})"
    )]
    Agent { agent: String, max: u32 },
}

#[derive(Clone, Copy, Debug)]
pub struct Maxima {
    pub captures: u32,
    pub per_user: u32,
    pub per_agent: u32,
}

#[derive(Default)]
struct Counts {
    captures: u32,
    per_user: HashMap<String, u32>,
    per_agent: HashMap<String, u32>,
}

/// Shared by every capture of the API.
#[derive(Clone)]
pub struct Concurrency {
    maxima: Maxima,
    counts: Arc<Mutex<Counts>>,
    /// The number of running captures, for `until_idle`.
    active: Arc<watch::Sender<u32>>,
}

impl Concurrency {
    pub fn new(maxima: Maxima) -> Self {
        Self {
            maxima,
            counts: Arc::default(),
            active: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Returns once no capture runs.
    pub async fn until_idle(&self) {
        let mut active = self.active.subscribe();
        // Cannot fail: `self` keeps the sender alive.
        let _ = active.wait_for(|n| *n == 0).await;
    }

    pub fn max_captures(&self) -> u32 {
        self.maxima.captures
    }

    pub fn active_captures(&self) -> u32 {
        self.lock().captures
    }

    /// A slot for one capture by `user`, counted against the instance's
    /// and the user's maximum.
    pub fn start_capture(&self, user: &str) -> Result<CaptureSlot, LimitError> {
        let mut counts = self.lock();
        if counts.captures >= self.maxima.captures {
            return Err(LimitError::Instance(self.maxima.captures));
        }
        let by_user = counts.per_user.entry(user.to_owned()).or_default();
        if *by_user >= self.maxima.per_user {
            return Err(LimitError::User {
                user: user.to_owned(),
                max: self.maxima.per_user,
            });
        }
        *by_user += 1;
        counts.captures += 1;
        self.active.send_replace(counts.captures);
        Ok(CaptureSlot {
            concurrency: self.clone(),
            user: user.to_owned(),
        })
    }

    /// A slot on the agent at `address` (`host:port`).
    pub fn start_on_agent(&self, address: &str) -> Result<AgentSlot, LimitError> {
        let mut counts = self.lock();
        let on_agent = counts.per_agent.entry(address.to_owned()).or_default();
        if *on_agent >= self.maxima.per_agent {
            return Err(LimitError::Agent {
                agent: address.to_owned(),
                max: self.maxima.per_agent,
            });
        }
        *on_agent += 1;
        Ok(AgentSlot {
            concurrency: self.clone(),
            address: address.to_owned(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every
        // update is a single increment or decrement.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn release(map: &mut HashMap<String, u32>, key: &str) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

pub struct CaptureSlot {
    concurrency: Concurrency,
    user: String,
}

impl Drop for CaptureSlot {
    fn drop(&mut self) {
        let mut counts = self.concurrency.lock();
        counts.captures -= 1;
        release(&mut counts.per_user, &self.user);
        self.concurrency.active.send_replace(counts.captures);
    }
}

pub struct AgentSlot {
    concurrency: Concurrency,
    address: String,
}

impl Drop for AgentSlot {
    fn drop(&mut self) {
        release(&mut self.concurrency.lock().per_agent, &self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concurrency() -> Concurrency {
        Concurrency::new(Maxima {
            captures: 3,
            per_user: 2,
            per_agent: 1,
        })
    }

    #[tokio::test]
    async fn users_are_limited_and_slots_come_back() {
        let c = concurrency();
        let first = c.start_capture("alice").unwrap();
        let second = c.start_capture("alice").unwrap();
        let error = c.start_capture("alice").err().unwrap();
        assert_eq!(
            error.to_string(),
            "user \"alice\" already runs 2 captures (limits.max_captures_per_user = 2)"
        );
        drop(first);
        let third = c.start_capture("alice").unwrap();
        assert_eq!(c.active_captures(), 2);
        assert!(c.start_capture("bob").is_ok());
        drop((third, second));
        c.until_idle().await;
    }

    #[test]
    fn the_instance_is_limited() {
        let c = concurrency();
        let _slots: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|u| c.start_capture(u).unwrap())
            .collect();
        assert_eq!(c.active_captures(), 3);
        assert_eq!(c.start_capture("d").err(), Some(LimitError::Instance(3)));
    }

    #[test]
    fn agents_are_limited_one_by_one() {
        let c = concurrency();
        let slot = c.start_on_agent("10.0.0.1:9494").unwrap();
        assert!(c.start_on_agent("10.0.0.2:9494").is_ok());
        let error = c.start_on_agent("10.0.0.1:9494").err().unwrap();
        assert!(
            error.to_string().contains("max_captures_per_agent = 1"),
            "{error}"
        );
        drop(slot);
        assert!(c.start_on_agent("10.0.0.1:9494").is_ok());
    }
}
