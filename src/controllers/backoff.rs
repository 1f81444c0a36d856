//! Per-object capped exponential backoff for failed reconciles (kube's controller has none):
//! each consecutive failure of an object doubles its retry delay up to a cap; a success resets it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failure counts per object key.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    retry_at: Instant,
}

impl Backoff {
    /// Delays start at `base` and stop growing at `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failure of `key`; returns how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.lock();
        let entry = failures.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            retry_at: Instant::now(),
        });
        let delay = self
            .base
            .saturating_mul(1u32 << entry.count.min(20))
            .min(self.cap);
        entry.count = entry.count.saturating_add(1);
        entry.retry_at = Instant::now() + delay;
        delay
    }

    /// How long `key` must still wait before its next attempt; `None` when it may go now.
    pub fn remaining(&self, key: &str) -> Option<Duration> {
        let failures = self.lock();
        let wait = failures
            .get(key)?
            .retry_at
            .checked_duration_since(Instant::now())?;
        (!wait.is_zero()).then_some(wait)
    }

    /// Records a success of `key`, resetting its delay.
    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = (0..6).map(|_| b.failed("a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(
            b.failed("other").as_secs(),
            1,
            "objects back off independently"
        );
        assert!(
            b.remaining("a")
                .is_some_and(|d| d <= Duration::from_secs(10) && d > Duration::from_secs(8))
        );
        assert_eq!(b.remaining("never-failed"), None);
        b.succeeded("a");
        assert_eq!(b.remaining("a"), None);
        assert_eq!(b.failed("a").as_secs(), 1);
    }
}
