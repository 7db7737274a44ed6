//! The local stack in moto, and the file that tells other commands about it.

use std::time::Duration;

use anyhow::Context;
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::local::LocalStack;

use crate::CliError;
use crate::resources::DEV_FILE;

/// Creates (or finds) the local stack, giving a moto server started alongside (`make run`) time to come up.
pub(super) async fn provision_with_retry(
    sdk: &SdkConfig,
    endpoint: &str,
    name: &str,
) -> Result<LocalStack, CliError> {
    // Nothing listening at all is said within seconds (a moto just started
    // by `make run` listens at once), not after a minute of SDK retries.
    let mut listening = false;
    for _ in 0..20 {
        if listens(endpoint).await {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !listening {
        return Err(CliError::Failed(anyhow::anyhow!(
            "nothing answers at {endpoint}: start moto there (`make run` starts one and keeps it) or pass --endpoint"
        )));
    }
    let mut last = None;
    for _ in 0..60 {
        match spigot_aws::local::provision(sdk, endpoint, name).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        // Something answers that cannot make the stack and is no moto: another
        // program holds the port; waiting will not help.
        if let Some(status) = answers_but_not_moto(endpoint).await {
            return Err(CliError::Usage(format!(
                "{endpoint} answers ({status}) but is not a moto server: another program holds that port; start moto on another one (make run MOTO_PORT=5055) or pass --endpoint"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(CliError::Failed(anyhow::anyhow!(
        last.expect("tried at least once")
    )))
}

/// True when something accepts a TCP connection at `endpoint`'s host and port.
async fn listens(endpoint: &str) -> bool {
    let hostport = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let hostport = if hostport.contains(':') {
        hostport
    } else if endpoint.starts_with("https") {
        format!("{hostport}:443")
    } else {
        format!("{hostport}:80")
    };
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(hostport)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The HTTP status of an endpoint that answers but has no moto API; `None` when it is moto or does not answer.
async fn answers_but_not_moto(endpoint: &str) -> Option<u16> {
    let client = spigot_aws::tls::http_client()
        .timeout(Duration::from_secs(1))
        .build()
        .ok()?;
    let url = format!("{}/moto-api/data.json", endpoint.trim_end_matches('/'));
    let resp = client.get(&url).send().await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (status != 200 || !body.contains("sqs")).then_some(status)
}

/// Writes `.spigot/dev.json`, read by `--local`.
pub(super) fn write(stack: &LocalStack) -> Result<(), CliError> {
    std::fs::create_dir_all(".spigot").context("cannot create .spigot/")?;
    let text = serde_json::to_string_pretty(stack).context("cannot encode the local stack")?;
    std::fs::write(DEV_FILE, text).with_context(|| format!("cannot write {DEV_FILE}"))?;
    Ok(())
}
