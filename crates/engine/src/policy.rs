//! What the engine does after a failure: how long a message waits before its
//! next attempt, and when a run stops because the target is struggling.
//! A delivery rate limit belongs here too.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use spigot_core::delivery::backoff_seconds;

/// The deployed backoff's cap, seconds.
pub const BACKOFF_CAP: i32 = 300;

/// The longest a deployed backoff hides a hook (the cap plus its jitter),
/// unless the target asks for longer with Retry-After.
pub const MAX_BACKOFF_SECONDS: i32 = BACKOFF_CAP + BACKOFF_CAP / 5;

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
            backoff_cap: BACKOFF_CAP,
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

/// A delivery rate limit: `rate` deliveries a second, reached over `ramp`
/// (starting at a tenth of it) so that a target that has just come back is not
/// hit by the whole buffer at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Deliveries per second once ramped up.
    pub rate: f64,
    /// Time from a tenth of `rate` to `rate` (zero: no ramp).
    pub ramp: Duration,
}

impl RateLimit {
    /// The rate `elapsed` after the start of a run.
    pub fn rate_at(&self, elapsed: Duration) -> f64 {
        if self.ramp.is_zero() || elapsed >= self.ramp {
            return self.rate;
        }
        let share = elapsed.as_secs_f64() / self.ramp.as_secs_f64();
        self.rate * (0.1 + 0.9 * share)
    }
}

/// Spaces the deliveries of one run, shared by all its workers.
#[derive(Debug)]
pub struct Pacer {
    limit: Option<RateLimit>,
    start: tokio::time::Instant,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// A pacer for a run starting now (`None`: no limit).
    pub fn new(limit: Option<RateLimit>) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            limit,
            start: now,
            next: tokio::sync::Mutex::new(now),
        }
    }

    /// Waits for the next delivery slot.
    pub async fn wait(&self) {
        self.wait_until(None).await;
    }

    /// Waits for the next delivery slot, unless it comes after `latest` (a
    /// run's deadline less its margin): then it takes no slot, waits not at
    /// all, and answers false, so the run releases what it holds instead of
    /// being cut off mid-wait.
    pub async fn wait_until(&self, latest: Option<tokio::time::Instant>) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let slot = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let slot = (*next).max(now);
            if latest.is_some_and(|l| slot > l) {
                return false;
            }
            let rate = limit.rate_at(slot - self.start).max(0.001);
            *next = slot + Duration::from_secs_f64(1.0 / rate);
            slot
        };
        tokio::time::sleep_until(slot).await;
        true
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
    fn the_rate_ramps_from_a_tenth() {
        let l = RateLimit {
            rate: 10.0,
            ramp: Duration::from_secs(10),
        };
        assert_eq!(l.rate_at(Duration::ZERO), 1.0);
        assert!((l.rate_at(Duration::from_secs(5)) - 5.5).abs() < 1e-9);
        assert_eq!(l.rate_at(Duration::from_secs(10)), 10.0);
        assert_eq!(l.rate_at(Duration::from_secs(60)), 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_deliveries_across_workers() {
        let pacer = std::sync::Arc::new(Pacer::new(Some(RateLimit {
            rate: 5.0,
            ramp: Duration::ZERO,
        })));
        let start = tokio::time::Instant::now();
        let workers = (0..4).map(|_| {
            let p = pacer.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    p.wait().await;
                }
            })
        });
        futures::future::join_all(workers).await;
        // 20 slots at 5 a second: the last one 19 intervals after the first.
        assert_eq!(start.elapsed(), Duration::from_millis(3800));
        let unlimited = Pacer::new(None);
        let t = tokio::time::Instant::now();
        for _ in 0..100 {
            unlimited.wait().await;
        }
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    /// A slot after the run's deadline is not waited for.
    #[tokio::test(start_paused = true)]
    async fn the_pacer_takes_no_slot_after_the_deadline() {
        let pacer = Pacer::new(Some(RateLimit {
            rate: 1.0,
            ramp: Duration::ZERO,
        }));
        let start = tokio::time::Instant::now();
        let latest = Some(start + Duration::from_millis(1500));
        assert!(pacer.wait_until(latest).await, "now");
        assert!(pacer.wait_until(latest).await, "at 1 s");
        assert!(!pacer.wait_until(latest).await, "2 s is past the deadline");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "and it did not wait for it"
        );
        assert!(pacer.wait_until(None).await, "without a deadline it waits");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
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
