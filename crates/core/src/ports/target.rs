use std::future::Future;

use crate::delivery::Delivery;
use crate::webhook::Hook;

/// The CI server the hooks are for.
pub trait Target: Send + Sync {
    /// Delivers the hook's exact bytes and headers.
    fn deliver(&self, hook: &Hook) -> impl Future<Output = Delivery> + Send;
    /// True when the target answers at all (any status below 500).
    fn probe(&self) -> impl Future<Output = bool> + Send;
}
