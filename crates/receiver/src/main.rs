//! Lambda entry point of the receiver (REST API payload 1.0 or HTTP API payload 2.0).

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_core::config::Settings;
use spigot_core::ports::{Clock, SystemClock};
use spigot_receiver::ApiEvent;

#[tokio::main]
async fn main() -> Result<(), Error> {
    spigot_aws::logs::init_lambda();
    let settings = Settings::from_env()?;
    let sdk = spigot_aws::sdk_config(None).await;
    let receiver = &spigot_receiver::build(&sdk, &settings).await?;
    run(service_fn(move |event: LambdaEvent<ApiEvent>| async move {
        Ok::<_, Error>(
            receiver
                .handle_api_event(&event.payload, SystemClock.now_ms())
                .await,
        )
    }))
    .await
}
