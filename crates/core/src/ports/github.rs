use std::future::Future;

use super::PortError;
use crate::reconcile::{HookDelivery, HookSource};

/// GitHub's REST API (github.com or GitHub Enterprise Server), as far as Spigot uses it.
pub trait GitHub: Send + Sync {
    /// Every file changed between `base` and `head` of `repository` (`owner/name`),
    /// renamed files under both names. An error of kind `Invalid` means the
    /// comparison itself is incomplete (too many files).
    fn compare_files(
        &self,
        repository: &str,
        base: &str,
        head: &str,
    ) -> impl Future<Output = Result<Vec<String>, PortError>> + Send;

    /// Every delivery attempt of `hook` made at or after `since` (seconds since
    /// the epoch), all pages. Credentials refused: an error of kind `Denied`.
    fn deliveries(
        &self,
        hook: &HookSource,
        since: u64,
    ) -> impl Future<Output = Result<Vec<HookDelivery>, PortError>> + Send;

    /// The repository (`owner/name`) of one delivery, read from its payload.
    fn delivery_repository(
        &self,
        hook: &HookSource,
        delivery: u64,
    ) -> impl Future<Output = Result<Option<String>, PortError>> + Send;

    /// Asks GitHub to deliver `delivery` of `hook` again (same `X-GitHub-Delivery`).
    fn redeliver(
        &self,
        hook: &HookSource,
        delivery: u64,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}
