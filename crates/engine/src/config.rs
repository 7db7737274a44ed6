//! How a run is configured: one constructor per place the engine runs.

use std::time::Duration;

use spigot_core::coalesce::Coalesce;
use spigot_core::config::Settings;

use crate::policy::{Policy, RateLimit};

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Workers, each receiving its own batches (FIFO hands each a different set of groups).
    pub concurrency: usize,
    /// Long-poll wait of each receive, seconds.
    pub wait_seconds: i32,
    /// Stop receiving when less than this remains before the deadline (forward timeout + margin).
    pub stop_before: Duration,
    /// Stop when a receive comes back empty (the drainer); otherwise poll on (the relay).
    pub until_empty: bool,
    /// Keep received messages hidden while they wait or are delivered: a
    /// heartbeat at a third of the queue's visibility timeout extends them by
    /// the whole of it (the relay, whose target may be slower than the timeout).
    pub heartbeat: bool,
    /// Retry backoff and circuit breaker.
    pub policy: Policy,
    /// Deliveries a second, shared by all workers (`None`: unlimited).
    pub rate: Option<RateLimit>,
    /// What a drain may coalesce (`DRAIN_COALESCE`; live delivery never does).
    pub coalesce: Coalesce,
    /// A hook longer than this in the buffer (by its SentTimestamp) is
    /// dead-lettered unattempted: the queue's retention would drop it
    /// otherwise (`None`: no limit).
    pub max_age: Option<Duration>,
    /// Body bytes held by deliveries at once, all workers together (a 128 MB
    /// function holds each body about three times while delivering it).
    pub body_budget: usize,
}

/// The buffer's message retention, as the template sets it: 14 days, SQS's most.
pub const BUFFER_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// The default [`EngineConfig::max_age`]: a day short of [`BUFFER_RETENTION`],
/// so a drain that runs at least daily dead-letters a hook before SQS drops it.
pub const MAX_AGE: Duration = Duration::from_secs(13 * 24 * 3600);

/// The default [`EngineConfig::body_budget`]: 16 MiB.
pub const BODY_BUDGET: usize = 16 * 1024 * 1024;

impl EngineConfig {
    /// The drainer Lambda: `DRAIN_CONCURRENCY`, `BREAKER_THRESHOLD`, stop a forward timeout before the deadline.
    pub fn lambda(settings: &Settings) -> Self {
        Self {
            concurrency: settings.drain_concurrency,
            wait_seconds: 1,
            stop_before: Duration::from_millis(settings.forward_timeout_ms)
                + Duration::from_secs(2),
            until_empty: true,
            heartbeat: false,
            policy: Policy::production(settings.breaker_threshold, settings.max_attempts),
            rate: settings.drain_rate.map(|rate| RateLimit {
                rate,
                ramp: Duration::from_secs(settings.drain_ramp_seconds),
            }),
            coalesce: settings.drain_coalesce,
            max_age: Some(MAX_AGE),
            body_budget: BODY_BUDGET,
        }
    }

    /// `spigot dev` and `spigot on --drain --local`: the Lambda's shape with short backoffs.
    pub fn dev(forward_timeout: Duration) -> Self {
        Self {
            concurrency: 8,
            wait_seconds: 0,
            stop_before: forward_timeout + Duration::from_secs(2),
            until_empty: true,
            heartbeat: false,
            policy: Policy {
                backoff_base: 1,
                backoff_cap: 30,
                breaker_threshold: 3,
                max_attempts: 100,
            },
            rate: None,
            coalesce: Coalesce::None,
            max_age: Some(MAX_AGE),
            body_budget: BODY_BUDGET,
        }
    }

    /// `spigot relay`: long polls, no deadline, in-flight messages kept hidden while a slow target works.
    pub fn relay(concurrency: usize, wait_seconds: i32, once: bool, max_attempts: u32) -> Self {
        Self {
            concurrency,
            wait_seconds,
            stop_before: Duration::ZERO,
            until_empty: once,
            heartbeat: true,
            policy: Policy::production(3, max_attempts),
            rate: None,
            coalesce: Coalesce::None,
            max_age: Some(MAX_AGE),
            body_budget: BODY_BUDGET,
        }
    }

    /// Tests: backoffs of a second or two so retries come back within the test.
    pub fn test(concurrency: usize, forward_timeout: Duration) -> Self {
        Self {
            concurrency,
            wait_seconds: 0,
            stop_before: forward_timeout + Duration::from_millis(500),
            until_empty: true,
            heartbeat: false,
            policy: Policy {
                backoff_base: 1,
                backoff_cap: 2,
                breaker_threshold: 3,
                max_attempts: 100,
            },
            rate: None,
            coalesce: Coalesce::None,
            max_age: Some(MAX_AGE),
            body_budget: BODY_BUDGET,
        }
    }
}
