//! Lambda entry point of the evaluator (SQS event source, ReportBatchItemFailures).

use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_aws::{CodePipelines, S3Filters, S3Payloads};
use spigot_core::config::Settings;
use spigot_evaluator::Evaluator;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let bucket = settings.require_bucket()?.to_string();
    let ttl = settings.filter_cache_seconds;
    let sdk = spigot_aws::sdk_config(None).await;
    let s3 = spigot_aws::s3_client(&sdk);
    let evaluator = Evaluator::new(
        S3Filters::new(s3.clone(), &bucket),
        CodePipelines::new(spigot_aws::aws_sdk_codepipeline::Client::new(&sdk)),
        Some(S3Payloads::new(s3, &bucket)),
        Duration::from_secs(ttl),
    );
    let evaluator = &evaluator;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let (response, _stats): (SqsBatchResponse, _) = evaluator.handle(event.payload).await;
        Ok::<_, Error>(response)
    }))
    .await
}
