//! The local stack in moto, and the file that tells other commands about it.

use std::time::Duration;

use anyhow::Context;
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::local::LocalStack;

use crate::CliError;
use crate::resources::DEV_FILE;

/// Creates (or finds) the local stack, giving a moto server started alongside (`make run`) time to come up.
pub async fn provision_with_retry(
    sdk: &SdkConfig,
    endpoint: &str,
    name: &str,
) -> Result<LocalStack, CliError> {
    let mut last = None;
    for _ in 0..60 {
        match spigot_aws::local::provision(sdk, endpoint, name).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(CliError::Failed(anyhow::anyhow!(
        last.expect("tried at least once")
    )))
}

/// Writes `.spigot/dev.json`, read by `--local`.
pub fn write(stack: &LocalStack) -> Result<(), CliError> {
    std::fs::create_dir_all(".spigot").context("cannot create .spigot/")?;
    let text = serde_json::to_string_pretty(stack).context("cannot encode the local stack")?;
    std::fs::write(DEV_FILE, text).with_context(|| format!("cannot write {DEV_FILE}"))?;
    Ok(())
}
