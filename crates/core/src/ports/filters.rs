use std::future::Future;

use super::PortError;

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
