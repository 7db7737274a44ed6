//! Reading queues from the outside: peek, take, depth, attributes.

use std::collections::HashMap;

use spigot_aws::aws_config::SdkConfig;

/// Every message body in a queue with its attributes. Receives with a hold until
/// the queue gives nothing more (FIFO groups included), then releases them all.
pub async fn peek_all(sdk: &SdkConfig, queue_url: &str) -> Vec<(String, HashMap<String, String>)> {
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(sdk);
    let held = receive_held(&sqs, queue_url, false).await;
    for m in &held {
        let _ = sqs
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
            .visibility_timeout(0)
            .send()
            .await;
    }
    held.into_iter().map(body_and_attributes).collect()
}

/// Receives with a hold until the queue gives nothing more; with `delete`, deletes each as it comes.
async fn receive_held(
    sqs: &spigot_aws::aws_sdk_sqs::Client,
    queue_url: &str,
    delete: bool,
) -> Vec<spigot_aws::aws_sdk_sqs::types::Message> {
    let mut seen = Vec::new();
    loop {
        let msgs = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if msgs.is_empty() {
            return seen;
        }
        for m in msgs {
            if delete {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                    .send()
                    .await
                    .unwrap();
            }
            seen.push(m);
        }
    }
}

fn body_and_attributes(
    m: spigot_aws::aws_sdk_sqs::types::Message,
) -> (String, HashMap<String, String>) {
    let attrs = m
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
        .collect();
    (m.body.unwrap_or_default(), attrs)
}

/// `ApproximateNumberOfMessages` + `...NotVisible` of a queue.
pub async fn depth(sdk: &SdkConfig, queue_url: &str) -> (u64, u64) {
    let client = spigot_aws::aws_sdk_sqs::Client::new(sdk);
    spigot_aws::queue_depth(&client, queue_url).await.unwrap()
}

/// Sets a queue attribute (a short visibility timeout for crash tests, say).
pub async fn set_visibility_timeout(sdk: &SdkConfig, queue_url: &str, seconds: u32) {
    spigot_aws::aws_sdk_sqs::Client::new(sdk)
        .set_queue_attributes()
        .queue_url(queue_url)
        .attributes(
            spigot_aws::aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            seconds.to_string(),
        )
        .send()
        .await
        .unwrap();
}

/// Every message of a queue as an SQS Lambda event (deleted from the queue).
pub async fn take_as_sqs_event(
    sdk: &SdkConfig,
    queue_url: &str,
) -> aws_lambda_events::sqs::SqsEvent {
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(sdk);
    let mut event = aws_lambda_events::sqs::SqsEvent::default();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(
                spigot_aws::aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
            )
            .send()
            .await
            .unwrap();
        let msgs = out.messages.unwrap_or_default();
        if msgs.is_empty() {
            return event;
        }
        for m in msgs {
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .send()
                .await
                .unwrap();
            let mut rec = aws_lambda_events::sqs::SqsMessage::default();
            if let Some(group) = m.attributes.as_ref().and_then(|a| {
                a.get(&spigot_aws::aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
            }) {
                rec.attributes
                    .insert("MessageGroupId".into(), group.clone());
            }
            rec.message_id = m.message_id;
            rec.body = m.body;
            event.records.push(rec);
        }
    }
}

/// Every message of a queue, taken out of it (received and deleted): unlike
/// [`peek_all`], this sees all of a FIFO queue, whose groups lock behind
/// messages in flight. For the end of a test.
pub async fn take_all(sdk: &SdkConfig, queue_url: &str) -> Vec<(String, HashMap<String, String>)> {
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(sdk);
    receive_held(&sqs, queue_url, true)
        .await
        .into_iter()
        .map(body_and_attributes)
        .collect()
}
