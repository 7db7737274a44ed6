use std::future::Future;

use super::PortError;

/// The config bucket, as a store of objects by key: claim-check bodies too
/// large for a queue message, and every other prefix of
/// [`crate::layout::LAYOUT`] (attempt records, start records, dedupe marks,
/// the reconciler's state). `S3Payloads` in spigot-aws; `MemoryPayloads` in
/// unit tests.
pub trait Bucket: Send + Sync {
    /// Stores `bytes` under `key`.
    fn put(&self, key: &str, bytes: Vec<u8>) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Reads `key` (absent: a [`super::PortErrorKind::NotFound`] error).
    fn get(&self, key: &str) -> impl Future<Output = Result<Vec<u8>, PortError>> + Send;
    /// Copies `from` to `to` (absent `from`: a [`super::PortErrorKind::NotFound`] error).
    fn copy(&self, from: &str, to: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Deletes `key` (absent is fine).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Stores `bytes` under `key` only when nothing is there (`If-None-Match:
    /// *`): false when the key was taken.
    fn create(
        &self,
        key: &str,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
}
