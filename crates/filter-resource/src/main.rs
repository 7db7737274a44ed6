//! Lambda entry point of the Custom::PipelineFilter handler.
#![recursion_limit = "256"]

use std::time::{Duration, Instant};

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_core::config::Settings;
use spigot_core::ports::{Clock, SystemClock};

#[tokio::main]
async fn main() -> Result<(), Error> {
    spigot_aws::logs::init_lambda();
    let settings = Settings::from_env()?;
    let sdk = spigot_aws::sdk_config(None).await;
    let handler = &spigot_filter_resource::build(&sdk, &settings)?;
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let left = event.context.deadline.saturating_sub(SystemClock.now_ms());
            let deadline = Instant::now() + Duration::from_millis(left);
            handler.handle(event.payload, deadline).await;
            Ok::<_, Error>(())
        },
    ))
    .await
}
