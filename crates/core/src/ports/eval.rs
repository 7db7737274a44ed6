use std::future::Future;

use super::{DeadLetter, PortError};
use crate::envelope::Envelope;

/// The queue of push events awaiting pipeline evaluation.
pub trait EvalQueue: Send + Sync {
    /// Enqueues an envelope.
    fn enqueue(&self, envelope: &Envelope) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Where the evaluator puts a push it gave up on (the evaluation DLQ), with the
/// reason, so that the pushes behind it in its repository go on.
pub trait EvalLetters: Send + Sync {
    /// Sends `letter` to the evaluation dead-letter queue.
    fn dead_letter(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// No evaluation dead-letter queue: a push given up on stays on the queue (SQS's redrive decides).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLetters;

impl EvalLetters for NoLetters {
    async fn dead_letter(&self, _: &DeadLetter) -> Result<(), PortError> {
        Err(PortError::new(
            "no evaluation dead-letter queue is configured (EVAL_DLQ_URL)",
        ))
    }
}
