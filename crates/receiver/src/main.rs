//! Lambda entry point of the receiver.

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_core::config::Settings;
use spigot_core::ports::{Clock, SystemClock};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = spigot_aws::sdk_config(None).await;
    let receiver = &spigot_receiver::build(&sdk, &settings).await?;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayProxyRequest>| async move {
            Ok::<_, Error>(
                receiver
                    .handle_event(&event.payload, SystemClock.now_ms())
                    .await,
            )
        },
    ))
    .await
}
