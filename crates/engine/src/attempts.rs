//! The engine's own count of delivery attempts per message. SQS's receive
//! count is not a retry budget: it also counts receives that attempted
//! nothing (messages held behind a failure, released at a deadline, received
//! by a drainer killed before it delivered). The count lives in the config
//! bucket (`attempts/{message id}`), written only when a delivery fails, read
//! only for a message received before; without a bucket the receive count
//! stands in. A count that S3 refuses to read (403: a role without
//! s3:ListBucket on `attempts/` gets it for every absent key) is an error of
//! its own, never the receive count in disguise.

use spigot_core::ports::{PayloadStore, PortErrorKind, Received};

/// Where attempt counts are kept in the config bucket.
pub const PREFIX: &str = "attempts/";

fn key(m: &Received) -> String {
    format!("{PREFIX}{}", m.message_id)
}

/// The failed delivery attempts of a message so far, as far as they could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prior {
    /// Failed attempts.
    pub attempts: u32,
    /// S3 refused to read the count (403); `attempts` is then 0.
    pub denied: bool,
}

/// Failed delivery attempts of `m` so far.
pub async fn prior<P: PayloadStore>(store: Option<&P>, m: &Received) -> Prior {
    let counted = |attempts| Prior {
        attempts,
        denied: false,
    };
    if m.receive_count <= 1 {
        return counted(0);
    }
    let fallback = m.receive_count - 1;
    let Some(store) = store else {
        return counted(fallback);
    };
    match store.get(&key(m)).await {
        Ok(bytes) => counted(
            std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(fallback),
        ),
        Err(e) if e.kind == PortErrorKind::NotFound => counted(0),
        Err(e) if e.kind == PortErrorKind::Denied => {
            // Receives are not attempts: counting them would dead-letter the
            // hooks held behind a stuck head on their first failure, out of order.
            tracing::error!(message = %m.message_id, error = %e, "S3 refused to read the attempt count (403: the role needs s3:GetObject on attempts/* and s3:ListBucket for prefix attempts/); counting from 0, not from the receive count");
            Prior {
                attempts: 0,
                denied: true,
            }
        }
        Err(e) => {
            tracing::warn!(message = %m.message_id, error = %e, "cannot read the attempt count; using the receive count");
            counted(fallback)
        }
    }
}

/// Records that `m` has failed `attempts` times.
pub async fn record<P: PayloadStore>(store: Option<&P>, m: &Received, attempts: u32) {
    if let Some(store) = store
        && let Err(e) = store.put(&key(m), attempts.to_string().into_bytes()).await
    {
        tracing::warn!(message = %m.message_id, error = %e, "cannot record the attempt count");
    }
}

/// Forgets `m`'s count (delivered or dead-lettered).
pub async fn clear<P: PayloadStore>(store: Option<&P>, m: &Received) {
    if let Some(store) = store
        && let Err(e) = store.delete(&key(m)).await
    {
        tracing::warn!(message = %m.message_id, error = %e, "cannot delete the attempt count (the bucket lifecycle will)");
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
        }
    }

    #[tokio::test]
    async fn counts_attempts_not_receives() {
        let store = MemoryPayloads::default();
        let count = |n| Prior {
            attempts: n,
            denied: false,
        };
        // Received 7 times (holds, releases, a kill) but never attempted: 0.
        assert_eq!(prior(Some(&store), &received(7)).await, count(0));
        record(Some(&store), &received(7), 2).await;
        assert_eq!(prior(Some(&store), &received(9)).await, count(2));
        clear(Some(&store), &received(9)).await;
        assert_eq!(prior(Some(&store), &received(10)).await, count(0));
        // Without a bucket the receive count stands in.
        assert_eq!(prior(None::<&MemoryPayloads>, &received(4)).await, count(3));
        assert_eq!(prior(Some(&store), &received(1)).await, count(0));
    }
}
