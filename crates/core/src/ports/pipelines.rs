use std::future::Future;

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
    /// The GitHub delivery that asked, for logs.
    pub delivery: String,
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

    /// True when starts only say what they would start (`spigot dev` without CodePipeline).
    fn dry_run(&self) -> bool {
        false
    }
}
