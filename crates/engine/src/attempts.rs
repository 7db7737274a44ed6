//! The engine's own count of delivery attempts per message. SQS's receive
//! count is not a retry budget: it also counts receives that attempted
//! nothing (messages held behind a failure, released at a deadline, received
//! by a drainer killed before it delivered). The count lives in the config
//! bucket (`attempts/{message id}`), written only when a delivery fails, read
//! only for a message received before; without a bucket the receive count
//! stands in.

use spigot_core::ports::{PayloadStore, PortErrorKind, Received};

/// Where attempt counts are kept in the config bucket.
pub const PREFIX: &str = "attempts/";

fn key(m: &Received) -> String {
    format!("{PREFIX}{}", m.message_id)
}

/// Failed delivery attempts of `m` so far.
pub async fn prior<P: PayloadStore>(store: Option<&P>, m: &Received) -> u32 {
    if m.receive_count <= 1 {
        return 0;
    }
    let fallback = m.receive_count - 1;
    let Some(store) = store else {
        return fallback;
    };
    match store.get(&key(m)).await {
        Ok(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(fallback),
        Err(e) if e.kind == PortErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!(message = %m.message_id, error = %e, "cannot read the attempt count; using the receive count");
            fallback
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
        // Received 7 times (holds, releases, a kill) but never attempted: 0.
        assert_eq!(prior(Some(&store), &received(7)).await, 0);
        record(Some(&store), &received(7), 2).await;
        assert_eq!(prior(Some(&store), &received(9)).await, 2);
        clear(Some(&store), &received(9)).await;
        assert_eq!(prior(Some(&store), &received(10)).await, 0);
        // Without a bucket the receive count stands in.
        assert_eq!(prior(None::<&MemoryPayloads>, &received(4)).await, 3);
        assert_eq!(prior(Some(&store), &received(1)).await, 0);
    }
}
