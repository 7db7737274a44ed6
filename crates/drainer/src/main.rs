//! Lambda entry point of the drainer (EventBridge schedule).

use std::time::{Duration, Instant};

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_aws::{HttpTarget, S3Payloads, SqsBuffer, StageSwitch};
use spigot_core::config::Settings;
use spigot_drainer::Drainer;
use spigot_drainer::engine::{Engine, EngineConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = spigot_aws::sdk_config(None).await;
    let timeout = Duration::from_millis(settings.forward_timeout_ms);
    let drainer = Drainer {
        engine: Engine {
            buffer: SqsBuffer::new(
                spigot_aws::aws_sdk_sqs::Client::new(&sdk),
                settings.require_buffer()?,
                settings.require_dlq()?,
            ),
            payloads: settings
                .config_bucket
                .as_ref()
                .map(|b| S3Payloads::new(spigot_aws::s3_client(&sdk), b)),
            target: HttpTarget::from_settings(&settings)?,
            config: EngineConfig {
                concurrency: settings.drain_concurrency,
                breaker_threshold: settings.breaker_threshold,
                wait_seconds: 1,
                stop_before: timeout + Duration::from_secs(2),
                until_empty: true,
                heartbeat: None,
                backoff_base: 30,
                backoff_cap: 900,
            },
        },
        switch: StageSwitch::new(
            spigot_aws::aws_sdk_apigateway::Client::new(&sdk),
            settings.require_api()?,
            &settings.stage_name,
        ),
    };
    let drainer = &drainer;
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let left = event.context.deadline.saturating_sub(spigot_aws::now_ms());
            let deadline = Instant::now() + Duration::from_millis(left);
            Ok::<_, Error>(drainer.drain(Some(deadline)).await)
        },
    ))
    .await
}
