//! Lambda entry point of the receiver.

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_aws::{HttpTarget, S3Payloads, SqsBuffer, SqsEvalQueue};
use spigot_core::config::{DeliveryMode, Settings};
use spigot_core::{Secrets, Verifier};
use spigot_receiver::Receiver;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = spigot_aws::sdk_config(None).await;
    let secret = match (&settings.webhook_secret_arn, &settings.webhook_secret) {
        (Some(arn), _) => Some(spigot_aws::fetch_secret(&sdk, arn).await?),
        (None, secret) => secret.clone(),
    };
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(&sdk);
    let target = match settings.delivery_mode {
        DeliveryMode::Pull => None,
        DeliveryMode::Push => Some(HttpTarget::from_settings(&settings)?),
    };
    let receiver = Receiver {
        buffer: SqsBuffer::new(
            sqs.clone(),
            settings.require_buffer()?,
            settings.require_dlq()?,
        ),
        payloads: settings
            .config_bucket
            .as_ref()
            .map(|b| S3Payloads::new(spigot_aws::s3_client(&sdk), b)),
        target,
        eval: settings
            .eval_queue_url
            .as_ref()
            .map(|u| SqsEvalQueue::new(sqs.clone(), u)),
        verifier: Verifier::new(
            secret.as_deref().map(Secrets::parse).transpose()?,
            settings.allow_sha1,
        ),
        claim_check_bytes: settings.claim_check_bytes,
    };
    let receiver = &receiver;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayProxyRequest>| async move {
            Ok::<_, Error>(receiver.handle(&event.payload, spigot_aws::now_ms()).await)
        },
    ))
    .await
}
