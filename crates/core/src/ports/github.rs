use std::future::Future;

use super::PortError;

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
}
