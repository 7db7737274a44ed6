//! Lambda entry point of the reconciler (EventBridge schedule).

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_core::config::Settings;
use spigot_core::ports::{Clock, SystemClock};

#[tokio::main]
async fn main() -> Result<(), Error> {
    spigot_aws::logs::init_lambda();
    let settings = Settings::from_env()?;
    let sdk = spigot_aws::sdk_config(None).await;
    let reconciler = &spigot_reconciler::build(&sdk, &settings).await?;
    run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let report = reconciler.run(SystemClock.now_ms() / 1000).await?;
            Ok::<_, Error>(spigot_reconciler::summary(&report))
        },
    ))
    .await
}
