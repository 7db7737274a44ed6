//! Lambda entry point of the receiver (REST API payload 1.0 or HTTP API payload 2.0):
//! `POST /webhook` for GitHub's hooks, `POST /trigger/{name}` for pull deployments.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_core::config::Settings;
use spigot_core::ports::{Clock, SystemClock};
use spigot_receiver::ApiEvent;

#[tokio::main]
async fn main() -> Result<(), Error> {
    spigot_aws::logs::init_lambda();
    let settings = Settings::from_env()?;
    let sdk = spigot_aws::sdk_config(None).await;
    // The webhook secret is read once, for the receiver and the door's check.
    let webhook = spigot_receiver::webhook_secrets(&sdk, &settings).await?;
    let door = &spigot_receiver::trigger::build_with(&sdk, &settings, webhook.as_ref()).await?;
    let receiver = &spigot_receiver::build_with(&sdk, &settings, webhook)?;
    run(service_fn(move |event: LambdaEvent<ApiEvent>| async move {
        let now = SystemClock.now_ms();
        Ok::<_, Error>(match spigot_receiver::trigger::route(&event.payload) {
            Some(name) => door.handle_api_event(&name, &event.payload, now).await,
            None => receiver.handle_api_event(&event.payload, now).await,
        })
    }))
    .await
}
