//! Lambda entry point of the drainer (EventBridge schedule).

use std::time::{Duration, Instant};

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_core::config::Settings;
use spigot_core::ports::{Clock, SystemClock};

#[tokio::main]
async fn main() -> Result<(), Error> {
    spigot_aws::logs::init_lambda();
    let settings = Settings::from_env()?;
    let sdk = spigot_aws::sdk_config(None).await;
    let drainer = &spigot_drainer::build(&sdk, &settings)?;
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let left = event.context.deadline.saturating_sub(SystemClock.now_ms());
            let deadline = Instant::now() + Duration::from_millis(left);
            // `spigot on --now` invokes with {"now": true}: no resume health window.
            let now = event.payload.get("now") == Some(&serde_json::Value::Bool(true));
            Ok::<_, Error>(drainer.drain_with(Some(deadline), now).await)
        },
    ))
    .await
}
