//! Leases on received messages. A receive hides a message for the queue's
//! visibility timeout: while hidden it is this consumer's, and on FIFO its
//! whole group is. A relay whose target is slow keeps its messages hidden with
//! a heartbeat (a third of the timeout, extending by the whole of it, each
//! extension tried three times). A group whose lease could not be renewed, or
//! ran out before it was renewed (the process was paused, the host slept), is
//! lost: another consumer may hold it now, so this one delivers no more of it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use spigot_core::ports::{Buffer, Received};

/// Tries of one extension before its group is given up.
pub const RENEW_TRIES: u32 = 3;

/// The heartbeat's period for a queue whose visibility timeout is `timeout`.
pub fn beat(timeout: Duration) -> Duration {
    (timeout / 3).max(Duration::from_millis(200))
}

#[derive(Debug)]
struct Held {
    /// Receipt handle -> group, of every message still in hand.
    receipts: HashMap<String, String>,
    /// Group -> when its lease runs out.
    until: HashMap<String, Instant>,
    /// Groups whose lease is gone.
    lost: HashSet<String>,
}

/// The messages of one batch still in hand (received, not yet deleted,
/// released or backed off) and how long each group's lease lasts.
#[derive(Debug)]
pub struct Lease {
    timeout: Option<Duration>,
    held: Mutex<Held>,
}

impl Lease {
    /// A batch received at `at`; `timeout` is the queue's visibility timeout
    /// when the lease is watched (`None`: the run's deadline bounds it instead).
    pub fn new<'a>(
        msgs: impl Iterator<Item = &'a Received>,
        at: Instant,
        timeout: Option<Duration>,
    ) -> Self {
        let mut receipts = HashMap::new();
        let mut until = HashMap::new();
        for m in msgs {
            receipts.insert(m.receipt.clone(), m.group.clone());
            if let Some(t) = timeout {
                until.insert(m.group.clone(), at + t);
            }
        }
        Self {
            timeout,
            held: Mutex::new(Held {
                receipts,
                until,
                lost: HashSet::new(),
            }),
        }
    }

    /// True while `group` is still this consumer's.
    pub fn holds(&self, group: &str) -> bool {
        let held = self.held.lock().unwrap();
        if held.lost.contains(group) {
            return false;
        }
        self.timeout.is_none() || held.until.get(group).is_some_and(|u| Instant::now() < *u)
    }

    fn still_held(&self, receipt: &str) -> bool {
        self.held.lock().unwrap().receipts.contains_key(receipt)
    }

    /// Stops tracking these messages (deleted, released or backed off).
    pub fn forget<'a>(&self, msgs: impl Iterator<Item = &'a Received>) {
        let mut held = self.held.lock().unwrap();
        for m in msgs {
            held.receipts.remove(&m.receipt);
        }
    }

    /// Extends every message still in hand by the visibility timeout; a group
    /// any of whose messages cannot be extended (after [`RENEW_TRIES`]) is lost.
    pub async fn renew<B: Buffer>(&self, buffer: &B) {
        let Some(timeout) = self.timeout else {
            return;
        };
        let started = Instant::now();
        let receipts: Vec<(String, String)> = {
            let held = self.held.lock().unwrap();
            held.receipts
                .iter()
                .filter(|(_, g)| !held.lost.contains(*g))
                .map(|(r, g)| (r.clone(), g.clone()))
                .collect()
        };
        let mut failed: HashSet<String> = HashSet::new();
        let mut renewed: HashSet<String> = HashSet::new();
        let seconds = timeout.as_secs().clamp(1, 43_200) as i32;
        for (receipt, group) in receipts {
            if failed.contains(&group) {
                continue;
            }
            if extend(buffer, &receipt, seconds).await {
                renewed.insert(group);
            } else if self.still_held(&receipt) {
                failed.insert(group);
            }
            // else: deleted or released while this beat worked on it.
        }
        let mut held = self.held.lock().unwrap();
        for group in renewed {
            if !failed.contains(&group) {
                held.until.insert(group, started + timeout);
            }
        }
        for group in failed {
            tracing::error!(%group, "lost the lease on a group (its visibility could not be extended); delivering no more of it");
            held.lost.insert(group);
        }
    }
}

/// One extension, tried [`RENEW_TRIES`] times.
async fn extend<B: Buffer>(buffer: &B, receipt: &str, seconds: i32) -> bool {
    for attempt in 1..=RENEW_TRIES {
        match buffer.set_visibility(receipt, seconds).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "cannot extend a message's visibility");
                if attempt < RENEW_TRIES {
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use spigot_core::envelope::Envelope;
    use spigot_core::ports::memory::MemoryBuffer;
    use spigot_core::ports::{DeadLetter, PortError};

    use super::*;

    /// A buffer whose visibility changes fail the first `failures` times.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryBuffer,
        failures: AtomicU32,
        calls: AtomicU32,
    }

    impl Buffer for Flaky {
        async fn send(&self, e: &Envelope) -> Result<(), PortError> {
            self.inner.send(e).await
        }
        async fn receive(&self, max: i32, wait: i32) -> Result<Vec<Received>, PortError> {
            self.inner.receive(max, wait).await
        }
        async fn delete(&self, r: &[String]) -> Result<(), PortError> {
            self.inner.delete(r).await
        }
        async fn set_visibility(&self, _r: &str, _s: i32) -> Result<(), PortError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            {
                Ok(_) => Err(PortError::new("ReceiptHandleIsInvalid")),
                Err(_) => Ok(()),
            }
        }
        async fn visibility_timeout(&self) -> Result<Duration, PortError> {
            Ok(Duration::from_secs(30))
        }
        async fn depth(&self) -> Result<u64, PortError> {
            self.inner.depth().await
        }
        async fn dead_letter(&self, l: &DeadLetter) -> Result<(), PortError> {
            self.inner.dead_letter(l).await
        }
    }

    fn received(receipt: &str, group: &str) -> Received {
        Received {
            message_id: receipt.into(),
            receipt: receipt.into(),
            body: String::new(),
            receive_count: 1,
            group: group.into(),
            sent_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_failed_extension_is_tried_again_and_a_lost_one_gives_up_only_its_group() {
        let msgs = [received("a1", "a"), received("b1", "b")];
        let lease = Lease::new(msgs.iter(), Instant::now(), Some(Duration::from_secs(30)));
        // Two failures: the third try of the first extension succeeds.
        let buffer = Flaky::default();
        buffer.failures.store(2, Ordering::SeqCst);
        lease.renew(&buffer).await;
        assert!(lease.holds("a") && lease.holds("b"));
        assert_eq!(buffer.calls.load(Ordering::SeqCst), 4);
        // Three failures: the first group renewed is lost, the other is not.
        buffer.failures.store(3, Ordering::SeqCst);
        lease.renew(&buffer).await;
        assert_eq!(
            [lease.holds("a"), lease.holds("b")]
                .iter()
                .filter(|h| **h)
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn a_lease_that_ran_out_unrenewed_is_lost() {
        let msgs = [received("a1", "a")];
        let long_ago = Instant::now() - Duration::from_secs(31);
        let lease = Lease::new(msgs.iter(), long_ago, Some(Duration::from_secs(30)));
        assert!(!lease.holds("a"), "30 s lease taken 31 s ago");
        // Control: the same lease taken now holds, and without a timeout it always does.
        let fresh = Lease::new(msgs.iter(), Instant::now(), Some(Duration::from_secs(30)));
        assert!(fresh.holds("a"));
        let unwatched = Lease::new(msgs.iter(), long_ago, None);
        assert!(unwatched.holds("a"));
    }
}
