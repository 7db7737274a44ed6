//! How a run is configured: one constructor per place the engine runs.

use std::time::Duration;

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
    /// While a delivery runs, extend the message's visibility by this much every half of it (relay).
    pub heartbeat: Option<Duration>,
    /// Retry backoff and circuit breaker.
    pub policy: Policy,
    /// Deliveries a second, shared by all workers (`None`: unlimited).
    pub rate: Option<RateLimit>,
    /// Body bytes held by deliveries at once, all workers together (a 128 MB
    /// function holds each body about three times while delivering it).
    pub body_budget: usize,
}

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
            heartbeat: None,
            policy: Policy::production(settings.breaker_threshold, settings.max_attempts),
            rate: settings.drain_rate.map(|rate| RateLimit {
                rate,
                ramp: Duration::from_secs(settings.drain_ramp_seconds),
            }),
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
            heartbeat: None,
            policy: Policy {
                backoff_base: 1,
                backoff_cap: 30,
                breaker_threshold: 3,
                max_attempts: 100,
            },
            rate: None,
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
            heartbeat: Some(Duration::from_secs(30)),
            policy: Policy::production(3, max_attempts),
            rate: None,
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
            heartbeat: None,
            policy: Policy {
                backoff_base: 1,
                backoff_cap: 2,
                breaker_threshold: 3,
                max_attempts: 100,
            },
            rate: None,
            body_budget: BODY_BUDGET,
        }
    }
}
