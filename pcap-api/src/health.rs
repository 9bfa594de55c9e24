//! The resolvers' health, for the unauthenticated `Status` call. Asking
//! Cloud Controller and the director on every call would let anyone make
//! the API send them a request per call; instead their answer is kept for
//! [`HEALTH_TTL`], and while it is refreshed, concurrent callers wait for
//! that one refresh and share its answer.

use std::{future::Future, time::Duration};

use tokio::{sync::Mutex, time::Instant};

/// How long a health answer is served before the resolvers are asked again.
pub const HEALTH_TTL: Duration = Duration::from_secs(30);

/// A value refreshed at most once per `ttl`, however often it is asked for.
pub struct HealthCache<T> {
    ttl: Duration,
    state: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> HealthCache<T> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: Mutex::new(None),
        }
    }

    /// The kept value while it is younger than the TTL; otherwise what
    /// `refresh` answers, kept from now on. One caller refreshes at a time:
    /// the others wait for it (the resolvers' own timeouts bound that).
    pub async fn get<F: Future<Output = T>>(&self, refresh: impl FnOnce() -> F) -> T {
        let mut state = self.state.lock().await;
        if let Some((at, value)) = &*state
            && at.elapsed() < self.ttl
        {
            return value.clone();
        }
        let value = refresh().await;
        *state = Some((Instant::now(), value.clone()));
        value
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_calls_make_one_upstream_call() {
        let cache = Arc::new(HealthCache::new(HEALTH_TTL));
        let upstream = Arc::new(AtomicUsize::new(0));
        let mut calls = Vec::new();
        for _ in 0..100 {
            let (cache, upstream) = (Arc::clone(&cache), Arc::clone(&upstream));
            calls.push(tokio::spawn(async move {
                cache
                    .get(|| async {
                        upstream.fetch_add(1, Ordering::SeqCst);
                        // A slow director: everyone else arrives meanwhile.
                        tokio::task::yield_now().await;
                        "healthy"
                    })
                    .await
            }));
        }
        for call in calls {
            assert_eq!(call.await.unwrap(), "healthy");
        }
        assert_eq!(upstream.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_expired_answer_is_refreshed() {
        let cache = HealthCache::new(Duration::ZERO);
        let upstream = AtomicUsize::new(0);
        for expected in 1..=3 {
            let answer = cache
                .get(|| async { upstream.fetch_add(1, Ordering::SeqCst) + 1 })
                .await;
            assert_eq!(answer, expected);
        }
    }
}
