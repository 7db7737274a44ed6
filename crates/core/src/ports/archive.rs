use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use super::PortError;
use crate::archive::{Step, index_keys, step_records};

/// Where archive records go (Kinesis Data Firehose, which batches them into
/// the bucket). Object-safe, so every component holds one the same way.
pub trait Archive: Send + Sync {
    /// Puts `records` (each at most [`crate::archive::MAX_RECORD_BYTES`]).
    fn put(
        &self,
        records: Vec<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), PortError>> + Send + '_>>;

    /// Marks the repository index ([`crate::archive::index_keys`]): each key
    /// once (an adapter remembers what it marked). None by default.
    fn index(
        &self,
        keys: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = Result<(), PortError>> + Send + '_>> {
        let _ = keys;
        Box::pin(async { Ok(()) })
    }

    /// Puts `records`, then marks the index for the `steps` they hold: how
    /// every writer keeps what it records.
    fn keep<'a>(
        &'a self,
        records: Vec<Vec<u8>>,
        steps: &'a [Step],
    ) -> Pin<Box<dyn Future<Output = Result<(), PortError>> + Send + 'a>> {
        Box::pin(async move {
            self.put(records).await?;
            self.index(index_keys(steps)).await
        })
    }
}

/// The steps of a run, noted as they happen and written together (one
/// record for many steps: the stream bills records, not steps).
#[derive(Default)]
pub struct Timeline {
    archive: Option<Arc<dyn Archive>>,
    pending: Mutex<Vec<Step>>,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("on", &self.archive.is_some())
            .finish_non_exhaustive()
    }
}

impl Timeline {
    /// A timeline written to `archive`; `None` notes nothing (archive off).
    pub fn new(archive: Option<Arc<dyn Archive>>) -> Self {
        Self {
            archive,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// True when steps are kept.
    pub fn is_on(&self) -> bool {
        self.archive.is_some()
    }

    /// Notes `step`, written at the next [`Timeline::flush`].
    pub fn note(&self, step: Step) {
        if self.archive.is_some() {
            self.pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(step);
        }
    }

    /// Writes the steps noted so far; how many, or why they were dropped
    /// (the caller logs it: the timeline never holds up a delivery).
    pub async fn flush(&self) -> Result<usize, PortError> {
        let Some(archive) = &self.archive else {
            return Ok(0);
        };
        let steps = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if steps.is_empty() {
            return Ok(0);
        }
        archive.keep(step_records(&steps), &steps).await?;
        Ok(steps.len())
    }
}
