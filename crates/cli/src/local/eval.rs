//! The evaluator's event source, locally: poll the evaluation queue, hand
//! batches to the handler, delete what did not fail.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::aws_sdk_sqs::types::MessageSystemAttributeName;
use spigot_aws::local::LocalStack;
use spigot_aws::{CodePipelines, S3Filters, S3Payloads};
use spigot_core::ports::{Pipelines, QuietMetrics, Start, StartError};
use spigot_core::resources::Resource;
use spigot_evaluator::Evaluator;

/// Where `spigot dev` starts pipelines: nowhere (it prints), or a CodePipeline endpoint.
enum DevPipelines {
    Print,
    Real(CodePipelines),
}

impl Pipelines for DevPipelines {
    async fn start(&self, start: &Start) -> Result<String, StartError> {
        match self {
            DevPipelines::Print => {
                println!(
                    "would start {} for {}, delivery {}",
                    start.pipeline, start.reason, start.delivery
                );
                Ok("dry-run".into())
            }
            DevPipelines::Real(p) => p.start(start).await,
        }
    }

    fn dry_run(&self) -> bool {
        matches!(self, DevPipelines::Print)
    }
}

/// Evaluates the local stack's pushes in the background.
pub(super) fn spawn(
    sdk: &SdkConfig,
    stack: &LocalStack,
    codepipeline_endpoint: Option<&str>,
    max_push_age: Duration,
) {
    let pipelines = match codepipeline_endpoint {
        None => DevPipelines::Print,
        Some(url) => DevPipelines::Real(CodePipelines::new(
            spigot_aws::aws_sdk_codepipeline::Client::from_conf(
                spigot_aws::aws_sdk_codepipeline::config::Builder::from(sdk)
                    .endpoint_url(url)
                    .build(),
            ),
        )),
    };
    let s3 = spigot_aws::s3_client(sdk);
    let bucket = stack.get(Resource::Bucket);
    let mut evaluator = Evaluator::new(
        S3Filters::new(s3.clone(), bucket),
        pipelines,
        Some(S3Payloads::new(s3, bucket)),
        Duration::from_secs(5),
    );
    evaluator.metrics = Arc::new(QuietMetrics);
    evaluator.max_push_age = max_push_age;
    evaluator.timeline = spigot_aws::FirehoseArchive::timeline(sdk, &stack.resources);
    let evaluator = evaluator
        .with_letters(spigot_aws::SqsEvalLetters::from_settings(
            sdk,
            &stack.settings(),
        ))
        .with_triggers(Some(spigot_aws::S3Triggers::new(
            spigot_aws::s3_client(sdk),
            bucket,
        )));
    tokio::spawn(evaluate_forever(
        spigot_aws::aws_sdk_sqs::Client::new(sdk),
        stack.get(Resource::EvalUrl).to_string(),
        evaluator,
    ));
}

async fn evaluate_forever(
    sqs: spigot_aws::aws_sdk_sqs::Client,
    url: String,
    evaluator: Evaluator<
        S3Filters,
        DevPipelines,
        S3Payloads,
        spigot_aws::GitHubApi,
        spigot_aws::SqsEvalLetters,
        spigot_aws::S3Triggers,
    >,
) {
    loop {
        let out = match sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "cannot poll the evaluation queue");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let msgs = out.messages.unwrap_or_default();
        if msgs.is_empty() {
            continue;
        }
        let (resp, _) = evaluator.handle(sqs_event(&msgs)).await;
        for m in msgs {
            let failed = resp
                .batch_item_failures
                .iter()
                .any(|f| Some(&f.item_identifier) == m.message_id.as_ref());
            if let Some(receipt) = m.receipt_handle {
                settle(&sqs, &url, receipt, failed).await;
            }
        }
    }
}

/// Received messages as the Lambda event SQS would give the evaluator.
fn sqs_event(msgs: &[spigot_aws::aws_sdk_sqs::types::Message]) -> SqsEvent {
    let mut event = SqsEvent::default();
    for m in msgs {
        let mut rec = SqsMessage::default();
        rec.message_id = m.message_id.clone();
        rec.body = m.body.clone();
        if let Some(group) = m
            .attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
        {
            rec.attributes
                .insert("MessageGroupId".into(), group.clone());
        }
        event.records.push(rec);
    }
    event
}

/// Evaluated: deleted. Failed: made visible again, so its group resumes in
/// order (the FIFO queue holds the group while it is in flight).
async fn settle(sqs: &spigot_aws::aws_sdk_sqs::Client, url: &str, receipt: String, failed: bool) {
    if failed {
        let _ = sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(2)
            .send()
            .await;
    } else {
        let _ = sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await;
    }
}
