//! What the engine does after a failure: how long a message waits before its
//! next attempt, and when a run stops because the target is struggling.
//! A delivery rate limit belongs here too.

use std::sync::atomic::{AtomicU32, Ordering};

use spigot_core::delivery::backoff_seconds;

/// Retry and breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// First retry backoff in seconds (doubles per attempt).
    pub backoff_base: i32,
    /// Cap of the retry backoff in seconds.
    pub backoff_cap: i32,
    /// Consecutive retryable failures that stop the run.
    pub breaker_threshold: u32,
    /// Delivery attempts after which a hook is dead-lettered with the last reason.
    pub max_attempts: u32,
}

impl Policy {
    /// Deployed: 2 s doubling to 5 minutes (with jitter), breaker at
    /// `breaker_threshold`, dead-letter after `max_attempts` attempts.
    pub fn production(breaker_threshold: u32, max_attempts: u32) -> Self {
        Self {
            backoff_base: 2,
            backoff_cap: 300,
            breaker_threshold,
            max_attempts,
        }
    }

    /// Seconds to hide message `message_id` after its `attempt`-th failed
    /// delivery, at least what the target asked for (`Retry-After`).
    pub fn backoff(&self, attempt: u32, message_id: &str, retry_after: Option<u64>) -> i32 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (message_id, attempt).hash(&mut h);
        backoff_seconds(
            attempt,
            self.backoff_base,
            self.backoff_cap,
            h.finish(),
            retry_after,
        )
    }

    /// True when `attempts` failed deliveries are the last this policy allows.
    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
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
    fn backoff_starts_at_seconds_and_is_capped_at_minutes() {
        let p = Policy::production(3, 100);
        assert_eq!(p.backoff(1, "m", None), 2);
        let waits: Vec<i32> = (1..=12).map(|n| p.backoff(n, "m", None)).collect();
        assert!(
            waits
                .windows(2)
                .all(|w| w[1] >= w[0] * 6 / 5 || w[1] >= 240),
            "{waits:?}"
        );
        assert!(waits.iter().all(|w| *w <= 360), "{waits:?}");
        assert_eq!(p.backoff(1, "m", Some(90)), 90);
        assert!(!p.exhausted(99) && p.exhausted(100));
    }

    #[test]
    fn breaker_opens_after_the_threshold_and_closes_on_success() {
        let (p, b) = (Policy::production(3, 100), Breaker::default());
        assert!(!b.failure(&p) && !b.failure(&p));
        b.success();
        assert!(!b.failure(&p) && !b.failure(&p));
        assert!(b.failure(&p));
    }
}
