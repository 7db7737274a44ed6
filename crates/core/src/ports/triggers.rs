use std::future::Future;

use super::PortError;

/// What a conditional read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Nothing at that key.
    Missing,
    /// The object still has the entity tag the reader already knew (HTTP 304).
    Unchanged,
    /// The object and its entity tag.
    Found {
        /// The bytes.
        bytes: Vec<u8>,
        /// The entity tag, for the next conditional read or write.
        etag: String,
    },
}

/// When a write may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<'a> {
    /// Whatever is there.
    Always,
    /// Only when nothing is at the key (`If-None-Match: *`).
    IfAbsent,
    /// Only when the object still has this entity tag (`If-Match`).
    IfMatches(&'a str),
}

/// The mailbox of pull deployments: objects under `triggers/` written with
/// conditions, so that concurrent raisers never take one sequence number twice.
/// The protocol (which keys, in which order) is [`crate::trigger`]'s.
pub trait Triggers: Send + Sync {
    /// Reads `key`; with `known`, an object whose entity tag is still `known` is [`Read::Unchanged`].
    fn read(
        &self,
        key: &str,
        known: Option<&str>,
    ) -> impl Future<Output = Result<Read, PortError>> + Send;
    /// Reads `key` whole when it has at most `at_most` bytes; a larger object
    /// is cut at `at_most + 1` bytes, so the reader knows it is too large.
    fn read_at_most(
        &self,
        key: &str,
        at_most: usize,
    ) -> impl Future<Output = Result<Read, PortError>> + Send;
    /// Writes `bytes` at `key` when `when` holds; false when the condition failed.
    fn write(
        &self,
        key: &str,
        bytes: Vec<u8>,
        when: Write<'_>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// The keys under `prefix`, in key order.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, PortError>> + Send;
}

/// No trigger store: a component that raises nothing (every call fails, saying so).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTriggers;

impl Triggers for NoTriggers {
    async fn read(&self, _: &str, _: Option<&str>) -> Result<Read, PortError> {
        Err(PortError::new("no trigger store is configured"))
    }
    async fn read_at_most(&self, _: &str, _: usize) -> Result<Read, PortError> {
        Err(PortError::new("no trigger store is configured"))
    }
    async fn write(&self, _: &str, _: Vec<u8>, _: Write<'_>) -> Result<bool, PortError> {
        Err(PortError::new("no trigger store is configured"))
    }
    async fn list(&self, _: &str) -> Result<Vec<String>, PortError> {
        Err(PortError::new("no trigger store is configured"))
    }
}
