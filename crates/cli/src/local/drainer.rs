//! The drainer of the local stack, as the Lambda builds it, on a timer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::local::LocalStack;
use spigot_core::ports::QuietMetrics;
use spigot_drainer::AwsDrainer;
use spigot_engine::EngineConfig;

use crate::CliError;

/// The drainer of `stack` delivering to `target_url`, with `spigot dev`'s short
/// backoffs, draining for `grace` after it sets ON.
pub(crate) fn drainer(
    sdk: &SdkConfig,
    stack: &LocalStack,
    target_url: &str,
    timeout: Duration,
    grace: Duration,
    resume: Duration,
) -> Result<AwsDrainer, CliError> {
    let mut settings = stack.settings();
    settings.target_url = Some(target_url.to_string());
    settings.forward_timeout_ms = timeout.as_millis() as u64;
    let mut drainer =
        spigot_drainer::build(sdk, &settings).context("cannot build the local drainer")?;
    drainer.engine.config = EngineConfig::dev(timeout);
    drainer.metrics = Arc::new(QuietMetrics);
    drainer.grace = grace;
    drainer.resume = resume;
    Ok(drainer)
}

/// Runs `drainer` every `period`. A run that did something says so once,
/// in the drainer's own "drain finished" line (no second summary here).
pub(super) fn every(drainer: AwsDrainer, period: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            drainer.drain(None).await;
        }
    });
}
