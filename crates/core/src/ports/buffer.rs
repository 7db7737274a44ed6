use std::future::Future;
use std::time::Duration;

use super::PortError;
use crate::envelope::Envelope;

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
    /// `SentTimestamp`: when this copy entered the queue, milliseconds since
    /// the epoch (0: unknown). The queue's retention counts from it.
    pub sent_ms: u64,
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
    /// How long a receive hides a message: the queue's visibility timeout, the
    /// lease a consumer holds on what it received (and on its FIFO groups).
    fn visibility_timeout(&self) -> impl Future<Output = Result<Duration, PortError>> + Send;
    /// Hooks in the buffer, visible or in flight (approximate on SQS).
    fn depth(&self) -> impl Future<Output = Result<u64, PortError>> + Send;
    /// Sends a message to the dead-letter queue, with the reason as attributes.
    fn dead_letter(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}
