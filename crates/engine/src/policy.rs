//! What the engine does after a failure: how long a message waits before its
//! next attempt, and when a run stops because the target is struggling.
//! A delivery rate limit belongs here too.

use std::sync::atomic::{AtomicU32, Ordering};

use spigot_core::delivery::backoff_seconds;

/// Retry and breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// First retry backoff in seconds (doubles per receive).
    pub backoff_base: i32,
    /// Cap of the retry backoff in seconds.
    pub backoff_cap: i32,
    /// Consecutive retryable failures that stop the run.
    pub breaker_threshold: u32,
}

impl Policy {
    /// Deployed: 30 s doubling to 15 minutes, breaker at `breaker_threshold`.
    pub fn production(breaker_threshold: u32) -> Self {
        Self {
            backoff_base: 30,
            backoff_cap: 900,
            breaker_threshold,
        }
    }

    /// Seconds to hide a message that failed on its `receive_count`-th receive.
    pub fn backoff(&self, receive_count: u32) -> i32 {
        backoff_seconds(receive_count, self.backoff_base, self.backoff_cap)
    }
}

/// Counts consecutive retryable failures of one run.
#[derive(Debug, Default)]
pub struct Breaker {
    consecutive: AtomicU32,
}

impl Breaker {
    /// A delivery succeeded: the run is healthy again.
    pub fn success(&self) {
        self.consecutive.store(0, Ordering::SeqCst);
    }

    /// A retryable failure; true when `policy`'s threshold is reached (the run should stop).
    pub fn failure(&self, policy: &Policy) -> bool {
        let n = self.consecutive.fetch_add(1, Ordering::SeqCst) + 1;
        n >= policy.breaker_threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let p = Policy::production(3);
        assert_eq!(
            (1..=7).map(|n| p.backoff(n)).collect::<Vec<_>>(),
            [30, 60, 120, 240, 480, 900, 900]
        );
    }

    #[test]
    fn breaker_opens_after_the_threshold_and_closes_on_success() {
        let (p, b) = (Policy::production(3), Breaker::default());
        assert!(!b.failure(&p) && !b.failure(&p));
        b.success();
        assert!(!b.failure(&p) && !b.failure(&p));
        assert!(b.failure(&p));
    }
}
