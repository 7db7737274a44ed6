//! The engine's own count of delivery attempts per message. SQS's receive
//! count is not a retry budget: it also counts receives that attempted
//! nothing (messages held behind a failure, released at a deadline, received
//! by a drainer killed before it delivered). The count lives in the config
//! bucket (`attempts/{message id}`), written only when a delivery fails, read
//! only for a message received before; without a bucket the receive count
//! stands in. A count that S3 refuses to read (403: a role without
//! s3:ListBucket on `attempts/` gets it for every absent key) is an error of
//! its own, never the receive count in disguise.

use serde::{Deserialize, Serialize};
use spigot_core::envelope::Envelope;
use spigot_core::ports::{Bucket, PortErrorKind, Received};

/// Where attempt counts are kept in the config bucket.
pub use spigot_core::layout::ATTEMPTS as PREFIX;

/// Reasons kept in a record are cut to this many characters.
const REASON_CHARS: usize = 500;

fn key(m: &Received) -> String {
    format!("{PREFIX}{}", m.message_id)
}

/// What is kept of a message's failures: its count, what it is, and the last
/// answer, so that `spigot status` can name what blocks a repository; and an
/// operator's order to move it aside.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Failed attempts so far.
    pub attempts: u32,
    /// `delivery` (the buffer) or `evaluation` (the evaluation queue).
    #[serde(default)]
    pub queue: String,
    /// The hook's delivery id.
    #[serde(default)]
    pub delivery: String,
    /// Its event.
    #[serde(default)]
    pub event: String,
    /// Its repository (its FIFO group).
    #[serde(default)]
    pub repository: String,
    /// The last failure.
    #[serde(default)]
    pub last: String,
    /// When it failed last, milliseconds since the epoch.
    #[serde(default)]
    pub at_ms: u64,
    /// Set by `spigot dlq aside`: who asked to move it to the DLQ at its next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aside: Option<String>,
}

impl Record {
    /// Reads a record: JSON, or a bare count (as written before records had fields).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if let Ok(r) = serde_json::from_slice::<Record>(bytes) {
            return Some(r);
        }
        let attempts = std::str::from_utf8(bytes).ok()?.trim().parse().ok()?;
        Some(Record {
            attempts,
            ..Record::default()
        })
    }

    /// The record of `m`'s `attempts`th failure, `last`.
    pub fn of(m: &Received, queue: &str, attempts: u32, last: &str, at_ms: u64) -> Self {
        let env = Envelope::decode(&m.body).ok();
        Record {
            attempts,
            queue: queue.to_string(),
            delivery: env.as_ref().map(|e| e.delivery.clone()).unwrap_or_default(),
            event: env.as_ref().map(|e| e.event.clone()).unwrap_or_default(),
            repository: env
                .and_then(|e| e.repository)
                .unwrap_or_else(|| m.group.clone()),
            last: last.chars().take(REASON_CHARS).collect(),
            at_ms,
            aside: None,
        }
    }
}

/// The failed delivery attempts of a message so far, as far as they could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prior {
    /// Failed attempts.
    pub attempts: u32,
    /// S3 refused to read the count (403); `attempts` is then 0.
    pub denied: bool,
    /// An operator asked to move it aside (`spigot dlq aside`): by whom.
    pub aside: Option<String>,
}

/// Failed delivery attempts of `m` so far.
pub async fn prior<P: Bucket>(store: Option<&P>, m: &Received) -> Prior {
    let counted = |attempts| Prior {
        attempts,
        denied: false,
        aside: None,
    };
    if m.receive_count <= 1 {
        return counted(0);
    }
    let fallback = m.receive_count - 1;
    let Some(store) = store else {
        return counted(fallback);
    };
    match store.get(&key(m)).await {
        Ok(bytes) => match Record::parse(&bytes) {
            Some(r) => Prior {
                attempts: r.attempts,
                denied: false,
                aside: r.aside,
            },
            None => counted(fallback),
        },
        Err(e) if e.kind == PortErrorKind::NotFound => counted(0),
        Err(e) if e.kind == PortErrorKind::Denied => {
            // Receives are not attempts: counting them would dead-letter the
            // hooks held behind a stuck head on their first failure, out of order.
            tracing::error!(delivery = %Envelope::ids(&m.body).0, message = %m.message_id, error = %e, "S3 refused to read the attempt count (403: the role needs s3:GetObject on attempts/* and s3:ListBucket for prefix attempts/); counting from 0, not from the receive count");
            Prior {
                attempts: 0,
                denied: true,
                aside: None,
            }
        }
        Err(e) => {
            tracing::warn!(delivery = %Envelope::ids(&m.body).0, message = %m.message_id, error = %e, "cannot read the attempt count; using the receive count");
            counted(fallback)
        }
    }
}

/// Records `m`'s failure: `record.attempts` so far, the last one `record.last`.
pub async fn record<P: Bucket>(store: Option<&P>, m: &Received, record: &Record) {
    let Some(store) = store else {
        return;
    };
    let bytes =
        serde_json::to_vec(record).unwrap_or_else(|_| record.attempts.to_string().into_bytes());
    if let Err(e) = store.put(&key(m), bytes).await {
        tracing::warn!(delivery = %Envelope::ids(&m.body).0, message = %m.message_id, error = %e, "cannot record the attempt count");
    }
}

/// Forgets `m`'s count (delivered or dead-lettered).
pub async fn clear<P: Bucket>(store: Option<&P>, m: &Received) {
    if let Some(store) = store
        && let Err(e) = store.delete(&key(m)).await
    {
        tracing::warn!(delivery = %Envelope::ids(&m.body).0, message = %m.message_id, error = %e, "cannot delete the attempt count (the bucket lifecycle will)");
    }
}

#[cfg(test)]
mod tests {
    use spigot_core::ports::memory::MemoryPayloads;

    use super::*;

    fn received(count: u32) -> Received {
        Received {
            message_id: "m1".into(),
            receipt: "r".into(),
            body: String::new(),
            receive_count: count,
            group: "g".into(),
            sent_ms: 0,
        }
    }

    #[tokio::test]
    async fn counts_attempts_not_receives() {
        let store = MemoryPayloads::default();
        let count = |n| Prior {
            attempts: n,
            denied: false,
            aside: None,
        };
        // Received 7 times (holds, releases, a kill) but never attempted: 0.
        assert_eq!(prior(Some(&store), &received(7)).await, count(0));
        let failed = Record::of(&received(7), "delivery", 2, "503", 0);
        record(Some(&store), &received(7), &failed).await;
        assert_eq!(prior(Some(&store), &received(9)).await, count(2));
        clear(Some(&store), &received(9)).await;
        assert_eq!(prior(Some(&store), &received(10)).await, count(0));
        // Without a bucket the receive count stands in.
        assert_eq!(prior(None::<&MemoryPayloads>, &received(4)).await, count(3));
        assert_eq!(prior(Some(&store), &received(1)).await, count(0));
        // A bare count, as written before records had fields, still reads.
        store.put("attempts/m1", b"4".to_vec()).await.unwrap();
        assert_eq!(prior(Some(&store), &received(6)).await, count(4));
    }
}
