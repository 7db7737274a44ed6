//! The outcome of forwarding a hook, and what to do about it.

/// Why a delivery did not succeed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status the target answered, if it answered.
    pub status: Option<u16>,
    /// One sentence for logs and dead-letter attributes.
    pub reason: String,
    /// Seconds the target asked to wait (`Retry-After` on a 429 or 503).
    pub retry_after: Option<u64>,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The target accepted the hook (2xx).
    Delivered(u16),
    /// Try again later: connection error, timeout, 5xx, 408, 429.
    Retryable(Failure),
    /// Trying again will not help: other 4xx, 3xx, a broken envelope.
    Permanent(Failure),
}

impl Delivery {
    /// Classifies an HTTP status answered by the target.
    pub fn from_status(status: u16) -> Self {
        let failure = |what: &str| Failure {
            status: Some(status),
            reason: format!("target answered {status} ({what})"),
            retry_after: None,
        };
        match status {
            200..=299 => Delivery::Delivered(status),
            408 => Delivery::Retryable(failure("request timeout")),
            429 => Delivery::Retryable(failure("too many requests")),
            500..=599 => Delivery::Retryable(failure("server error")),
            300..=399 => {
                Delivery::Permanent(failure("redirect; point TARGET_URL at the final address"))
            }
            400..=499 => Delivery::Permanent(failure("client error")),
            _ => Delivery::Permanent(failure("unexpected status")),
        }
    }

    /// A failure before any HTTP answer (refused, reset, timed out): retryable.
    pub fn unreachable(reason: impl Into<String>) -> Self {
        Delivery::Retryable(Failure {
            status: None,
            reason: reason.into(),
            retry_after: None,
        })
    }

    /// The same outcome, with the wait a retryable failure's target asked for.
    pub fn with_retry_after(self, seconds: Option<u64>) -> Self {
        match self {
            Delivery::Retryable(f) => Delivery::Retryable(Failure {
                retry_after: seconds.or(f.retry_after),
                ..f
            }),
            other => other,
        }
    }

    /// A permanent failure that is not an HTTP status.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Delivery::Permanent(Failure {
            status: None,
            reason: reason.into(),
            retry_after: None,
        })
    }

    /// True for [`Delivery::Delivered`].
    pub fn is_delivered(&self) -> bool {
        matches!(self, Delivery::Delivered(_))
    }
}

/// Seconds to hide a message after its `attempt`-th failed delivery: `base`
/// doubling each time, capped at `cap`, then spread by up to a fifth either
/// way by `jitter` (a stable hash of the message, so retries of many messages
/// do not come back at once), and never shorter than the target's `Retry-After`.
pub fn backoff_seconds(
    attempt: u32,
    base: i32,
    cap: i32,
    jitter: u64,
    retry_after: Option<u64>,
) -> i32 {
    let exp = attempt.saturating_sub(1).min(20);
    let plain = (i64::from(base.max(0)) << exp).min(i64::from(cap));
    // jitter in [-plain/5, +plain/5]
    let spread = plain / 5;
    let offset = if spread > 0 {
        (jitter % (2 * spread as u64 + 1)) as i64 - spread
    } else {
        0
    };
    let wait = (plain + offset).max(i64::from(base.clamp(0, 1)));
    let asked = retry_after.map(|s| s.min(43_200) as i64).unwrap_or(0);
    wait.max(asked).min(43_200) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let table: &[(u16, &str)] = &[
            (200, "delivered"),
            (201, "delivered"),
            (204, "delivered"),
            (301, "permanent"),
            (302, "permanent"),
            (400, "permanent"),
            (401, "permanent"),
            (403, "permanent"),
            (404, "permanent"),
            (408, "retryable"),
            (413, "permanent"),
            (429, "retryable"),
            (500, "retryable"),
            (502, "retryable"),
            (503, "retryable"),
            (504, "retryable"),
            (100, "permanent"),
        ];
        for &(status, want) in table {
            let got = match Delivery::from_status(status) {
                Delivery::Delivered(_) => "delivered",
                Delivery::Retryable(_) => "retryable",
                Delivery::Permanent(_) => "permanent",
            };
            assert_eq!(got, want, "status {status}");
        }
    }

    #[test]
    fn failures_carry_status_and_reason() {
        match Delivery::from_status(404) {
            Delivery::Permanent(f) => {
                assert_eq!(f.status, Some(404));
                assert!(f.reason.contains("404"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Delivery::unreachable("connection refused"),
            Delivery::Retryable(Failure { status: None, .. })
        ));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        // Seconds at first, doubling, within a fifth of the plain value either way.
        assert_eq!(backoff_seconds(1, 2, 300, 2, None), 2);
        for attempt in [0, 1, 2, 3, 6, 9, 30, u32::MAX] {
            for jitter in [0, 1, 7, u64::MAX] {
                let w = backoff_seconds(attempt, 2, 300, jitter, None);
                let exp = attempt.saturating_sub(1).min(20);
                let plain = (2i64 << exp).min(300) as i32;
                assert!(
                    (plain - plain / 5..=plain + plain / 5).contains(&w),
                    "attempt {attempt}: {w} vs {plain}"
                );
            }
        }
        assert_eq!(backoff_seconds(u32::MAX, 2, 300, 0, None), 240);
    }

    #[test]
    fn retry_after_is_a_floor_and_sqs_caps_it() {
        assert_eq!(backoff_seconds(1, 2, 300, 0, Some(120)), 120);
        assert_eq!(backoff_seconds(9, 2, 300, 0, Some(1)), 240);
        assert_eq!(backoff_seconds(1, 2, 300, 0, Some(1_000_000)), 43_200);
    }

    #[test]
    fn retry_after_rides_only_on_retryable_outcomes() {
        let r = Delivery::from_status(503).with_retry_after(Some(30));
        assert!(matches!(
            r,
            Delivery::Retryable(Failure {
                retry_after: Some(30),
                ..
            })
        ));
        let p = Delivery::from_status(404).with_retry_after(Some(30));
        assert!(matches!(
            p,
            Delivery::Permanent(Failure {
                retry_after: None,
                ..
            })
        ));
    }
}
