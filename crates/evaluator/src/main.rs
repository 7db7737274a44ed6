//! Lambda entry point of the evaluator (SQS event source, ReportBatchItemFailures).
#![recursion_limit = "256"]

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use spigot_core::config::Settings;

#[tokio::main]
async fn main() -> Result<(), Error> {
    spigot_aws::logs::init_lambda();
    let settings = Settings::from_env()?;
    let sdk = spigot_aws::sdk_config(None).await;
    let evaluator = &spigot_evaluator::build(&sdk, &settings).await?;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let (response, _stats) = evaluator.handle(event.payload).await;
        Ok::<_, Error>(response)
    }))
    .await
}
