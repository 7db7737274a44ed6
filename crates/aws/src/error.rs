use aws_sdk_sqs::error::ProvideErrorMetadata;
use spigot_core::ports::{PortError, PortErrorKind};

/// Errors of setting up an adapter.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The webhook secret could not be read.
    #[error("cannot read webhook secret {0}: {1}")]
    Secret(String, String),
    /// A setting the adapter needs is missing or invalid.
    #[error(transparent)]
    Config(#[from] spigot_core::config::ConfigError),
    /// GitHub credentials are unusable.
    #[error("{0}")]
    GitHub(String),
    /// An HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// The full text of an SDK error (its Display alone says little).
pub(crate) fn context<E: std::error::Error>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// An SDK error as a port error naming the operation, its kind read from the error code.
pub(crate) fn port<E: std::error::Error + ProvideErrorMetadata>(op: &str, e: E) -> PortError {
    PortError::of(kind(e.code()), format!("{op} failed: {}", context(&e)))
}

/// The kind of an AWS error code (`None`: no answer, a network failure).
pub(crate) fn kind(code: Option<&str>) -> PortErrorKind {
    let Some(code) = code else {
        return PortErrorKind::Transient;
    };
    let lower = code.to_ascii_lowercase();
    if lower.contains("throttl") || lower == "slowdown" || lower.contains("toomanyrequests") {
        PortErrorKind::Throttled { retry_after: None }
    } else if lower.contains("accessdenied")
        || lower.contains("unauthorized")
        || lower.contains("forbidden")
    {
        PortErrorKind::Denied
    } else if lower.contains("notfound")
        || lower.starts_with("nosuch")
        || lower.contains("nonexistent")
    {
        PortErrorKind::NotFound
    } else if lower.contains("invalid") || lower.contains("validation") {
        PortErrorKind::Invalid
    } else {
        PortErrorKind::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_kinds() {
        assert_eq!(kind(None), PortErrorKind::Transient);
        assert_eq!(
            kind(Some("ThrottlingException")),
            PortErrorKind::Throttled { retry_after: None }
        );
        assert_eq!(
            kind(Some("SlowDown")),
            PortErrorKind::Throttled { retry_after: None }
        );
        assert_eq!(kind(Some("AccessDeniedException")), PortErrorKind::Denied);
        assert_eq!(kind(Some("NoSuchKey")), PortErrorKind::NotFound);
        assert_eq!(
            kind(Some("AWS.SimpleQueueService.NonExistentQueue")),
            PortErrorKind::NotFound
        );
        assert_eq!(kind(Some("InternalError")), PortErrorKind::Transient);
    }
}
