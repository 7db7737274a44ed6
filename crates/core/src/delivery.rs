//! The outcome of forwarding a hook, and what to do about it.

/// Why a delivery did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status the target answered, if it answered.
    pub status: Option<u16>,
    /// One sentence for logs and dead-letter attributes.
    pub reason: String,
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
        })
    }

    /// A permanent failure that is not an HTTP status.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Delivery::Permanent(Failure {
            status: None,
            reason: reason.into(),
        })
    }

    /// True for [`Delivery::Delivered`].
    pub fn is_delivered(&self) -> bool {
        matches!(self, Delivery::Delivered(_))
    }
}

/// Seconds to hide a message after its `receive_count`-th failed attempt:
/// `base` doubling each time, capped at `cap` (the drainer uses 30 s and 15 minutes).
pub fn backoff_seconds(receive_count: u32, base: i32, cap: i32) -> i32 {
    let exp = receive_count.saturating_sub(1).min(20);
    (i64::from(base.max(0)) << exp).min(i64::from(cap)) as i32
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
        assert_eq!(backoff_seconds(0, 30, 900), 30);
        assert_eq!(backoff_seconds(1, 30, 900), 30);
        assert_eq!(backoff_seconds(2, 30, 900), 60);
        assert_eq!(backoff_seconds(3, 30, 900), 120);
        assert_eq!(backoff_seconds(6, 30, 900), 900);
        assert_eq!(backoff_seconds(u32::MAX, 30, 900), 900);
        assert_eq!(backoff_seconds(5, 1, 2), 2);
    }
}
