//! How many captures may run at once: on this API instance, per user, per
//! agent, and per user on one agent. A slot is held by a guard and given
//! back when the last clone of it is dropped.
//!
//! Users are counted by identity (`auth::User::key`: issuer and id), never
//! by name. An agent slot is counted per capture: the origins of one
//! capture on one agent (three instances of an app on one cell) share one
//! slot, so a capture never competes with itself.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use thiserror::Error;
use tokio::sync::watch;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("this API instance already runs {0} captures (limits.max_captures = {0})")]
    Instance(u32),
    #[error("user \"{user}\" already runs {max} captures (limits.max_captures_per_user = {max})")]
    User { user: String, max: u32 },
    #[error(
        "agent {agent} already runs {max} captures for this API (limits.max_captures_per_agent = {max})"
    )]
    Agent { agent: String, max: u32 },
    #[error(
        "user \"{user}\" already runs {max} captures on agent {agent} \
         (limits.max_captures_per_user_per_agent = {max})"
    )]
    UserOnAgent {
        user: String,
        agent: String,
        max: u32,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct Maxima {
    pub captures: u32,
    pub per_user: u32,
    pub per_agent: u32,
    pub per_user_per_agent: u32,
}

#[derive(Default)]
struct Counts {
    captures: u32,
    per_user: HashMap<String, u32>,
    per_agent: HashMap<String, u32>,
    /// (user key, agent address).
    per_user_agent: HashMap<(String, String), u32>,
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

    /// A slot for one capture by the user `user` (their `User::key`; `name`
    /// for the message), counted against the instance's and the user's
    /// maximum.
    pub fn start_capture(&self, user: &str, name: &str) -> Result<CaptureSlot, LimitError> {
        let mut counts = self.lock();
        if counts.captures >= self.maxima.captures {
            return Err(LimitError::Instance(self.maxima.captures));
        }
        let by_user = counts.per_user.entry(user.to_owned()).or_default();
        if *by_user >= self.maxima.per_user {
            return Err(LimitError::User {
                user: name.to_owned(),
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

    /// A slot on the agent at `address` (`host:port`) for one capture of
    /// `user` (their key; `name` for the message). Clone it for every
    /// origin of the same capture on that agent.
    pub fn start_on_agent(
        &self,
        user: &str,
        name: &str,
        address: &str,
    ) -> Result<AgentSlot, LimitError> {
        let mut counts = self.lock();
        let on_agent = counts.per_agent.get(address).copied().unwrap_or(0);
        if on_agent >= self.maxima.per_agent {
            return Err(LimitError::Agent {
                agent: address.to_owned(),
                max: self.maxima.per_agent,
            });
        }
        let key = (user.to_owned(), address.to_owned());
        let by_user = counts.per_user_agent.get(&key).copied().unwrap_or(0);
        if by_user >= self.maxima.per_user_per_agent {
            return Err(LimitError::UserOnAgent {
                user: name.to_owned(),
                agent: address.to_owned(),
                max: self.maxima.per_user_per_agent,
            });
        }
        *counts.per_agent.entry(address.to_owned()).or_default() += 1;
        *counts.per_user_agent.entry(key.clone()).or_default() += 1;
        Ok(AgentSlot {
            _held: Arc::new(AgentSlotInner {
                concurrency: self.clone(),
                key,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every
        // update is a single increment or decrement.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
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

/// One capture's slot on one agent; its clones are the same slot, given
/// back when the last is dropped.
#[derive(Clone)]
pub struct AgentSlot {
    _held: Arc<AgentSlotInner>,
}

struct AgentSlotInner {
    concurrency: Concurrency,
    /// (user key, agent address).
    key: (String, String),
}

impl Drop for AgentSlotInner {
    fn drop(&mut self) {
        let mut counts = self.concurrency.lock();
        release(&mut counts.per_agent, &self.key.1);
        release(&mut counts.per_user_agent, &self.key);
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
            per_user_per_agent: 1,
        })
    }

    #[tokio::test]
    async fn users_are_limited_and_slots_come_back() {
        let c = concurrency();
        let first = c.start_capture("static\nalice", "alice").unwrap();
        let second = c.start_capture("static\nalice", "alice").unwrap();
        let error = c.start_capture("static\nalice", "alice").err().unwrap();
        assert_eq!(
            error.to_string(),
            "user \"alice\" already runs 2 captures (limits.max_captures_per_user = 2)"
        );
        // Another issuer's alice is someone else.
        let other = c
            .start_capture("https://uaa/oauth/token\nalice", "alice")
            .unwrap();
        drop((first, other));
        let third = c.start_capture("static\nalice", "alice").unwrap();
        assert_eq!(c.active_captures(), 2);
        assert!(c.start_capture("static\nbob", "bob").is_ok());
        drop((third, second));
        c.until_idle().await;
    }

    #[test]
    fn the_instance_is_limited() {
        let c = concurrency();
        let _slots: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|u| c.start_capture(u, u).unwrap())
            .collect();
        assert_eq!(c.active_captures(), 3);
        assert_eq!(
            c.start_capture("d", "d").err(),
            Some(LimitError::Instance(3))
        );
    }

    #[test]
    fn agents_are_limited_one_by_one() {
        let c = concurrency();
        let slot = c.start_on_agent("a", "a", "10.0.0.1:9494").unwrap();
        assert!(c.start_on_agent("a", "a", "10.0.0.2:9494").is_ok());
        let error = c.start_on_agent("b", "b", "10.0.0.1:9494").err().unwrap();
        assert!(
            error.to_string().contains("max_captures_per_agent = 1"),
            "{error}"
        );
        drop(slot);
        assert!(c.start_on_agent("b", "b", "10.0.0.1:9494").is_ok());
    }

    #[test]
    fn one_capture_holds_one_slot_per_agent_however_many_origins() {
        let c = Concurrency::new(Maxima {
            captures: 16,
            per_user: 2,
            per_agent: 2,
            per_user_per_agent: 1,
        });
        // Three instances of an app on one cell: one slot, shared.
        let slot = c.start_on_agent("dev", "dev", "10.0.0.1:9494").unwrap();
        let origins = [slot.clone(), slot.clone(), slot];
        // The same user's second capture there is over their share...
        let error = c
            .start_on_agent("dev", "dev", "10.0.0.1:9494")
            .err()
            .unwrap();
        assert_eq!(
            error,
            LimitError::UserOnAgent {
                user: "dev".into(),
                agent: "10.0.0.1:9494".into(),
                max: 1
            }
        );
        assert!(
            error
                .to_string()
                .contains("max_captures_per_user_per_agent = 1"),
            "{error}"
        );
        // ...and another user still gets the agent's other slot.
        let other = c.start_on_agent("ops", "ops", "10.0.0.1:9494").unwrap();
        assert!(c.start_on_agent("third", "third", "10.0.0.1:9494").is_err());
        // The slot comes back when the last origin lets go.
        drop(other);
        let [a, b, last] = origins;
        drop((a, b));
        assert!(c.start_on_agent("third", "third", "10.0.0.1:9494").is_ok());
        assert!(c.start_on_agent("dev", "dev", "10.0.0.1:9494").is_err());
        drop(last);
        assert!(c.start_on_agent("dev", "dev", "10.0.0.1:9494").is_ok());
    }
}
