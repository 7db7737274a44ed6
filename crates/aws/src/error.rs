use spigot_core::ports::PortError;

/// Errors of setting up an adapter.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The webhook secret could not be read.
    #[error("cannot read webhook secret {0}: {1}")]
    Secret(String, String),
    /// A setting the adapter needs is missing or invalid.
    #[error(transparent)]
    Config(#[from] spigot_core::config::ConfigError),
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

/// An SDK error as a port error naming the operation.
pub(crate) fn port<E: std::error::Error>(op: &str, e: E) -> PortError {
    PortError::new(format!("{op} failed: {}", context(&e)))
}
