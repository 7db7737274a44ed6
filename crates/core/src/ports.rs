//! Ports: the capabilities the handlers need, implemented by `spigot-aws`
//! for AWS and by [`memory`] for unit tests.

use std::future::Future;

use crate::delivery::Delivery;
use crate::envelope::Envelope;
use crate::spigot::State;
use crate::webhook::Hook;

/// A failure of an adapter (AWS call, network).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    /// What went wrong, in one sentence.
    pub message: String,
}

impl PortError {
    /// A port error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// A message received from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The SQS message id.
    pub message_id: String,
    /// Handle for delete / visibility changes.
    pub receipt: String,
    /// The message body (an encoded [`Envelope`], unless poison).
    pub body: String,
    /// `ApproximateReceiveCount`.
    pub receive_count: u32,
    /// `MessageGroupId`.
    pub group: String,
}

/// A message on its way to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message body (an envelope, or the poison text as received).
    pub body: String,
    /// FIFO group: one per dead letter (its deduplication id), so each can be listed and redriven alone.
    pub group: String,
    /// FIFO deduplication id (fresh for every send).
    pub dedup_id: String,
    /// Why it is dead.
    pub reason: String,
    /// The target's HTTP status, if any.
    pub status: Option<u16>,
}

/// The FIFO buffer and its dead-letter queue.
pub trait Buffer: Send + Sync {
    /// Sends an envelope (group = repository, deduplication = [`Envelope::dedup_id`]).
    fn send(&self, envelope: &Envelope) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Receives up to `max` messages, waiting up to `wait_seconds`.
    fn receive(
        &self,
        max: i32,
        wait_seconds: i32,
    ) -> impl Future<Output = Result<Vec<Received>, PortError>> + Send;
    /// Deletes messages by receipt handle.
    fn delete(&self, receipts: &[String]) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Hides (or, with 0, releases) a received message for `seconds`.
    fn set_visibility(
        &self,
        receipt: &str,
        seconds: i32,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Sends a message to the dead-letter queue, with the reason as attributes.
    fn dead_letter(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Claim-check storage for bodies too large for a queue message.
pub trait PayloadStore: Send + Sync {
    /// Stores `bytes` under `key`.
    fn put(&self, key: &str, bytes: Vec<u8>) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Reads `key`.
    fn get(&self, key: &str) -> impl Future<Output = Result<Vec<u8>, PortError>> + Send;
    /// Deletes `key` (absent is fine).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// The spigot's switch (the stage variable `spigot_state`).
pub trait Switch: Send + Sync {
    /// The raw value of `spigot_state`, if set.
    fn read(&self) -> impl Future<Output = Result<Option<String>, PortError>> + Send;
    /// Sets the state; returns the previous raw value.
    fn set(&self, state: State) -> impl Future<Output = Result<Option<String>, PortError>> + Send;
}

/// The CI server the hooks are for.
pub trait Target: Send + Sync {
    /// Delivers the hook's exact bytes and headers.
    fn deliver(&self, hook: &Hook) -> impl Future<Output = Delivery> + Send;
    /// True when the target answers at all (any status below 500).
    fn probe(&self) -> impl Future<Output = bool> + Send;
}

/// The queue of push events awaiting pipeline evaluation.
pub trait EvalQueue: Send + Sync {
    /// Enqueues an envelope.
    fn enqueue(&self, envelope: &Envelope) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// A filter object as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFilter {
    /// Its key (`filters/...`).
    pub key: String,
    /// Its JSON.
    pub bytes: Vec<u8>,
}

/// Where pipeline filters are kept (the config bucket).
pub trait FilterStore: Send + Sync {
    /// Every filter object under `prefix`, with its content.
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<StoredFilter>, PortError>> + Send;
    /// One object, `None` when absent.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, PortError>> + Send;
    /// Writes an object.
    fn put(&self, key: &str, bytes: Vec<u8>) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Deletes an object (absent is fine).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// A request to start a pipeline execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Pipeline name.
    pub pipeline: String,
    /// Idempotency token (same delivery + pipeline → same token).
    pub token: String,
    /// Source action and commit to pin (`sourceRevisions`, V2 pipelines).
    pub source: Option<(String, String)>,
    /// Why it starts, for logs: `owner/repo@branch (reason)`.
    pub reason: String,
}

/// Why a start failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Throttled or busy: try again later.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Network or server error: try again later.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The pipeline does not exist: retrying will not help.
    #[error("pipeline not found: {0}")]
    NotFound(String),
    /// The request was refused (validation): retrying will not help.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl StartError {
    /// True when the record should be retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StartError::Throttled(_) | StartError::Transient(_))
    }
}

/// AWS CodePipeline.
pub trait Pipelines: Send + Sync {
    /// Starts an execution; returns its id.
    fn start(&self, start: &Start) -> impl Future<Output = Result<String, StartError>> + Send;
}

pub mod memory {
    //! In-memory ports for unit tests of handler logic.

    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;

    use super::*;

    /// A buffer in memory: every send is recorded, receive pops in order.
    #[derive(Debug, Default)]
    pub struct MemoryBuffer {
        /// Envelopes sent, as encoded text.
        pub sent: Mutex<VecDeque<String>>,
        /// Dead letters sent.
        pub dead: Mutex<Vec<DeadLetter>>,
        /// When set, every call fails with this message.
        pub fail: Mutex<Option<String>>,
    }

    impl MemoryBuffer {
        fn check(&self) -> Result<(), PortError> {
            match &*self.fail.lock().unwrap() {
                Some(m) => Err(PortError::new(m.clone())),
                None => Ok(()),
            }
        }
    }

    impl Buffer for MemoryBuffer {
        async fn send(&self, envelope: &Envelope) -> Result<(), PortError> {
            self.check()?;
            self.sent.lock().unwrap().push_back(envelope.encode());
            Ok(())
        }
        async fn receive(&self, max: i32, _wait: i32) -> Result<Vec<Received>, PortError> {
            self.check()?;
            let mut q = self.sent.lock().unwrap();
            let n = (max.max(0) as usize).min(q.len());
            Ok(q.drain(..n)
                .enumerate()
                .map(|(i, body)| Received {
                    message_id: i.to_string(),
                    receipt: i.to_string(),
                    group: Envelope::decode(&body)
                        .map(|e| e.group_id())
                        .unwrap_or_default(),
                    body,
                    receive_count: 1,
                })
                .collect())
        }
        async fn delete(&self, _receipts: &[String]) -> Result<(), PortError> {
            self.check()
        }
        async fn set_visibility(&self, _receipt: &str, _seconds: i32) -> Result<(), PortError> {
            self.check()
        }
        async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), PortError> {
            self.check()?;
            self.dead.lock().unwrap().push(letter.clone());
            Ok(())
        }
    }

    /// Payloads in memory.
    #[derive(Debug, Default)]
    pub struct MemoryPayloads(pub Mutex<BTreeMap<String, Vec<u8>>>);

    impl PayloadStore for MemoryPayloads {
        async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
            self.0.lock().unwrap().insert(key.to_string(), bytes);
            Ok(())
        }
        async fn get(&self, key: &str) -> Result<Vec<u8>, PortError> {
            self.0
                .lock()
                .unwrap()
                .get(key)
                .cloned()
                .ok_or_else(|| PortError::new(format!("no payload at {key}")))
        }
        async fn delete(&self, key: &str) -> Result<(), PortError> {
            self.0.lock().unwrap().remove(key);
            Ok(())
        }
    }

    /// A target that answers from a script of outcomes and records what it got.
    #[derive(Debug, Default)]
    pub struct MemoryTarget {
        /// Outcomes to give, in order; when empty, `Delivered(200)`.
        pub script: Mutex<VecDeque<Delivery>>,
        /// Hooks received.
        pub got: Mutex<Vec<Hook>>,
    }

    impl Target for MemoryTarget {
        async fn deliver(&self, hook: &Hook) -> Delivery {
            self.got.lock().unwrap().push(hook.clone());
            self.script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Delivery::Delivered(200))
        }
        async fn probe(&self) -> bool {
            true
        }
    }

    /// Filters in memory.
    #[derive(Debug, Default)]
    pub struct MemoryFilters(pub Mutex<BTreeMap<String, Vec<u8>>>);

    impl FilterStore for MemoryFilters {
        async fn list(&self, prefix: &str) -> Result<Vec<StoredFilter>, PortError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| StoredFilter {
                    key: k.clone(),
                    bytes: v.clone(),
                })
                .collect())
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
            Ok(self.0.lock().unwrap().get(key).cloned())
        }
        async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
            self.0.lock().unwrap().insert(key.to_string(), bytes);
            Ok(())
        }
        async fn delete(&self, key: &str) -> Result<(), PortError> {
            self.0.lock().unwrap().remove(key);
            Ok(())
        }
    }

    /// Pipelines in memory: records starts, answers from a script.
    #[derive(Debug, Default)]
    pub struct MemoryPipelines {
        /// Starts requested.
        pub started: Mutex<Vec<Start>>,
        /// Answers to give, in order; when empty, success.
        pub script: Mutex<VecDeque<Result<String, StartError>>>,
    }

    impl Pipelines for MemoryPipelines {
        async fn start(&self, start: &Start) -> Result<String, StartError> {
            self.started.lock().unwrap().push(start.clone());
            self.script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Ok("execution-1".into()))
        }
    }

    /// An evaluation queue in memory.
    #[derive(Debug, Default)]
    pub struct MemoryEvalQueue(pub Mutex<Vec<Envelope>>);

    impl EvalQueue for MemoryEvalQueue {
        async fn enqueue(&self, envelope: &Envelope) -> Result<(), PortError> {
            self.0.lock().unwrap().push(envelope.clone());
            Ok(())
        }
    }
}
