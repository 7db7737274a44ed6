/// What kind of failure an adapter met, so callers decide without reading text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortErrorKind {
    /// Network or server trouble: trying again later may work.
    Transient,
    /// The thing asked for does not exist.
    NotFound,
    /// Not allowed (credentials, policy).
    Denied,
    /// Too many requests; wait this many seconds when the peer said so.
    Throttled {
        /// `Retry-After`, in seconds, when given.
        retry_after: Option<u64>,
    },
    /// The request itself was refused (validation): trying again will not help.
    Invalid,
}

/// A failure of an adapter (AWS call, network).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    /// What kind of failure it is.
    pub kind: PortErrorKind,
    /// What went wrong, in one sentence.
    pub message: String,
}

impl PortError {
    /// A transient port error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self::of(PortErrorKind::Transient, message)
    }

    /// A port error of `kind` with `message`.
    pub fn of(kind: PortErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            PortErrorKind::Transient | PortErrorKind::Throttled { .. }
        )
    }
}
