use std::future::Future;

use super::PortError;
use crate::envelope::Envelope;

/// The queue of push events awaiting pipeline evaluation.
pub trait EvalQueue: Send + Sync {
    /// Enqueues an envelope.
    fn enqueue(&self, envelope: &Envelope) -> impl Future<Output = Result<(), PortError>> + Send;
}
