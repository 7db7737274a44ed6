//! An in-memory SQS FIFO queue with a fixed round-trip time per API call,
//! for measuring the drain engine itself: moto spends ~50 ms per message
//! received (it deep-copies state), which hides any consumer's speed.
//! Semantics kept: FIFO groups (no message of a group is handed out while an
//! earlier one is in flight), visibility timeouts, batch receive/delete.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use spigot_core::envelope::Envelope;
use spigot_core::ports::{Buffer, DeadLetter, PortError, Received};

struct Msg {
    id: u64,
    group: String,
    body: String,
    visible_at: Instant,
    receipt: Option<String>,
    receives: u32,
}

/// The queue and its dead letters.
pub struct SimulatedSqs {
    rtt: Mutex<Duration>,
    state: Mutex<State>,
}

struct State {
    next: u64,
    queue: Vec<Msg>,
    dead: Vec<DeadLetter>,
    calls: u64,
}

impl SimulatedSqs {
    /// An empty queue whose every call takes `rtt`.
    pub fn new(rtt: Duration) -> Self {
        Self {
            rtt: Mutex::new(rtt),
            state: Mutex::new(State {
                next: 0,
                queue: Vec::new(),
                dead: Vec::new(),
                calls: 0,
            }),
        }
    }

    /// Messages left (visible or in flight).
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().queue.len()
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// API calls made so far.
    pub fn calls(&self) -> u64 {
        self.state.lock().unwrap().calls
    }

    /// Changes the round trip of later calls.
    pub fn set_rtt(&self, rtt: Duration) {
        *self.rtt.lock().unwrap() = rtt;
    }

    async fn call(&self) {
        self.state.lock().unwrap().calls += 1;
        let rtt = *self.rtt.lock().unwrap();
        if !rtt.is_zero() {
            tokio::time::sleep(rtt).await;
        }
    }
}

/// The simulated queue's visibility timeout.
const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);

impl Buffer for SimulatedSqs {
    async fn send(&self, envelope: &Envelope) -> Result<(), PortError> {
        self.call().await;
        let mut s = self.state.lock().unwrap();
        s.next += 1;
        let id = s.next;
        s.queue.push(Msg {
            id,
            group: envelope.group_id(),
            body: envelope.encode(),
            visible_at: Instant::now(),
            receipt: None,
            receives: 0,
        });
        Ok(())
    }

    async fn receive(&self, max: i32, _wait: i32) -> Result<Vec<Received>, PortError> {
        self.call().await;
        let now = Instant::now();
        let mut s = self.state.lock().unwrap();
        let busy: std::collections::HashSet<String> = s
            .queue
            .iter()
            .filter(|m| m.visible_at > now)
            .map(|m| m.group.clone())
            .collect();
        let mut out = Vec::new();
        // In queue order, skipping every group with a message in flight: a group's
        // messages come out in order, from its head.
        for m in s.queue.iter_mut() {
            if out.len() >= max as usize {
                break;
            }
            if m.visible_at > now || busy.contains(&m.group) {
                continue;
            }
            m.receives += 1;
            m.visible_at = now + VISIBILITY_TIMEOUT;
            let receipt = format!("{}-{}", m.id, m.receives);
            m.receipt = Some(receipt.clone());
            out.push(Received {
                message_id: m.id.to_string(),
                receipt,
                body: m.body.clone(),
                receive_count: m.receives,
                group: m.group.clone(),
                sent_ms: 0,
            });
        }
        Ok(out)
    }

    async fn delete(&self, receipts: &[String]) -> Result<(), PortError> {
        for _ in receipts.chunks(10) {
            self.call().await;
        }
        let mut s = self.state.lock().unwrap();
        s.queue
            .retain(|m| !m.receipt.as_ref().is_some_and(|r| receipts.contains(r)));
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, seconds: i32) -> Result<(), PortError> {
        self.call().await;
        let mut s = self.state.lock().unwrap();
        if let Some(m) = s
            .queue
            .iter_mut()
            .find(|m| m.receipt.as_deref() == Some(receipt))
        {
            m.visible_at = Instant::now() + Duration::from_secs(seconds.max(0) as u64);
        }
        Ok(())
    }

    async fn visibility_timeout(&self) -> Result<Duration, PortError> {
        self.call().await;
        Ok(VISIBILITY_TIMEOUT)
    }

    async fn depth(&self) -> Result<u64, PortError> {
        self.call().await;
        Ok(self.state.lock().unwrap().queue.len() as u64)
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), PortError> {
        self.call().await;
        self.state.lock().unwrap().dead.push(letter.clone());
        Ok(())
    }
}
