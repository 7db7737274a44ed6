//! Lambda entry point of the Custom::PipelineFilter handler.
#![recursion_limit = "256"]

use std::time::{Duration, Instant};

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_aws::S3Filters;
use spigot_core::config::Settings;
use spigot_filter_resource::{FilterResource, HttpResponder};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let bucket = settings.require_bucket()?.to_string();
    let sdk = spigot_aws::sdk_config(None).await;
    let handler = FilterResource {
        filters: S3Filters::new(spigot_aws::s3_client(&sdk), &bucket),
        responder: HttpResponder::new(Duration::from_secs(5))?,
        bucket,
        log_stream: std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default(),
        margin: Duration::from_secs(5),
    };
    let handler = &handler;
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let left = event.context.deadline.saturating_sub(spigot_aws::now_ms());
            let deadline = Instant::now() + Duration::from_millis(left);
            handler.handle(event.payload, deadline).await;
            Ok::<_, Error>(())
        },
    ))
    .await
}
