//! The SQS FIFO buffer (+ DLQ) and the evaluation queue.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use spigot_core::config::{ConfigError, Settings};
use spigot_core::envelope::Envelope;
use spigot_core::ports::{Buffer, DeadLetter, EvalLetters, EvalQueue, PortError, Received};
use spigot_core::resources::Resource;

use crate::error::port;

/// The FIFO buffer queue and its FIFO dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsBuffer {
    client: Client,
    queue_url: String,
    dlq_url: String,
}

impl SqsBuffer {
    /// A buffer on `queue_url` that dead-letters to `dlq_url`.
    pub fn new(client: Client, queue_url: impl Into<String>, dlq_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dlq_url: dlq_url.into(),
        }
    }

    /// The buffer and DLQ named by `BUFFER_QUEUE_URL` and `BUFFER_DLQ_URL`.
    pub fn from_settings(sdk: &SdkConfig, settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self::new(
            Client::new(sdk),
            settings.require(Resource::BufferUrl)?,
            settings.require(Resource::DlqUrl)?,
        ))
    }

    /// The buffer's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

impl Buffer for SqsBuffer {
    async fn send(&self, envelope: &Envelope) -> Result<(), PortError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(envelope.encode())
            .message_group_id(envelope.group_id())
            .message_deduplication_id(envelope.dedup_id())
            .send()
            .await
            .map_err(|e| port("SQS SendMessage to the buffer", e))?;
        Ok(())
    }

    async fn receive(&self, max: i32, wait_seconds: i32) -> Result<Vec<Received>, PortError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            // FIFO: a receive whose answer is lost on the way back and retried by
            // the SDK with the same id gets the same messages again, instead of
            // leaving them (and their groups) hidden until the visibility timeout.
            .receive_request_attempt_id(crate::random_id())
            .wait_time_seconds(wait_seconds.clamp(0, 20))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| port("SQS ReceiveMessage from the buffer", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let attr = |name: MessageSystemAttributeName| {
                    m.attributes.as_ref().and_then(|a| a.get(&name)).cloned()
                };
                Received {
                    message_id: m.message_id.clone().unwrap_or_default(),
                    receipt: m.receipt_handle.clone().unwrap_or_default(),
                    receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1),
                    group: attr(MessageSystemAttributeName::MessageGroupId).unwrap_or_default(),
                    sent_ms: attr(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0),
                    body: m.body.unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn delete(&self, receipts: &[String]) -> Result<(), PortError> {
        // A batch can fail for some entries only: those are tried again, twice.
        let mut left = receipts.to_vec();
        let mut why = String::new();
        for _ in 0..3 {
            let mut failed = Vec::new();
            for chunk in left.chunks(10) {
                let (f, w) = self.delete_batch(chunk).await?;
                failed.extend(f);
                if !w.is_empty() {
                    why = w;
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            tracing::warn!(count = failed.len(), reason = %why, "some deletes failed; trying them again");
            left = failed;
        }
        Err(PortError::new(format!(
            "SQS DeleteMessageBatch left {} message(s) undeleted after 3 tries: {why}",
            left.len()
        )))
    }

    async fn set_visibility(&self, receipt: &str, seconds: i32) -> Result<(), PortError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds.clamp(0, 43_200))
            .send()
            .await
            .map_err(|e| port("SQS ChangeMessageVisibility on the buffer", e))?;
        Ok(())
    }

    async fn visibility_timeout(&self) -> Result<Duration, PortError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(|e| {
                port(
                    "SQS GetQueueAttributes (VisibilityTimeout) of the buffer",
                    e,
                )
            })?;
        let seconds = out
            .attributes
            .unwrap_or_default()
            .get(&QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                PortError::new(
                    "the buffer's VisibilityTimeout attribute is missing or not a number",
                )
            })?;
        Ok(Duration::from_secs(seconds))
    }

    async fn depth(&self) -> Result<u64, PortError> {
        let (visible, in_flight) = queue_depth(&self.client, &self.queue_url).await?;
        Ok(visible + in_flight)
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), PortError> {
        send_letter(&self.client, &self.dlq_url, letter, "the dead-letter queue").await
    }
}

impl SqsBuffer {
    /// Deletes up to 10 messages; returns the receipts SQS did not delete and why.
    async fn delete_batch(&self, chunk: &[String]) -> Result<(Vec<String>, String), PortError> {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        let out = self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| port("SQS DeleteMessageBatch on the buffer", e))?;
        let mut why = String::new();
        let failed = out
            .failed
            .iter()
            .filter_map(|f| {
                why = f.message.clone().unwrap_or_else(|| f.code.clone());
                chunk.get(f.id.parse::<usize>().ok()?).cloned()
            })
            .collect();
        Ok((failed, why))
    }
}

/// (`ApproximateNumberOfMessages`, `...NotVisible`) of the queue at `url`: waiting and in flight.
pub async fn queue_depth(client: &Client, url: &str) -> Result<(u64, u64), PortError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| port(&format!("SQS GetQueueAttributes of {url}"), e))?;
    let attrs = out.attributes.unwrap_or_default();
    let get = |k: QueueAttributeName| {
        attrs
            .get(&k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

/// The FIFO queue of push events for the evaluator.
#[derive(Debug, Clone)]
pub struct SqsEvalQueue {
    client: Client,
    url: String,
}

/// Sends `letter` to the FIFO dead-letter queue at `url`, its reason (and the
/// target's status) as message attributes.
async fn send_letter(
    client: &Client,
    url: &str,
    letter: &DeadLetter,
    queue: &str,
) -> Result<(), PortError> {
    let text = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .expect("data type is set")
    };
    let reason: String = letter.reason.chars().take(1000).collect();
    let mut send = client
        .send_message()
        .queue_url(url)
        .message_body(&letter.body)
        .message_group_id(&letter.group)
        .message_deduplication_id(&letter.dedup_id)
        .message_attributes(
            "Reason",
            text(if reason.is_empty() {
                "unknown"
            } else {
                &reason
            }),
        );
    if let Some(status) = letter.status {
        send = send.message_attributes(
            "Status",
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value(status.to_string())
                .build()
                .expect("data type is set"),
        );
    }
    send.send()
        .await
        .map_err(|e| port(&format!("SQS SendMessage to {queue}"), e))?;
    Ok(())
}

impl SqsEvalQueue {
    /// The evaluation queue at `url`.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }
}

impl SqsEvalQueue {
    /// The evaluation queue of `EVAL_QUEUE_URL`, when set.
    pub fn from_settings(sdk: &SdkConfig, settings: &Settings) -> Option<Self> {
        settings
            .resources
            .get(Resource::EvalUrl)
            .map(|u| Self::new(Client::new(sdk), u))
    }
}

impl EvalQueue for SqsEvalQueue {
    async fn enqueue(&self, envelope: &Envelope) -> Result<(), PortError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(envelope.encode())
            // FIFO, one group a repository: its pushes start pipelines in order.
            .message_group_id(envelope.group_id())
            .message_deduplication_id(envelope.dedup_id())
            .send()
            .await
            .map_err(|e| port("SQS SendMessage to the evaluation queue", e))?;
        Ok(())
    }
}

/// The evaluation dead-letter queue (`EVAL_DLQ_URL`), for pushes the evaluator gave up on.
#[derive(Debug, Clone)]
pub struct SqsEvalLetters {
    client: Client,
    url: String,
}

impl SqsEvalLetters {
    /// The evaluation DLQ of `EVAL_DLQ_URL`, when set.
    pub fn from_settings(sdk: &SdkConfig, settings: &Settings) -> Option<Self> {
        settings.resources.get(Resource::EvalDlqUrl).map(|u| Self {
            client: Client::new(sdk),
            url: u.to_string(),
        })
    }
}

impl EvalLetters for SqsEvalLetters {
    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), PortError> {
        send_letter(
            &self.client,
            &self.url,
            letter,
            "the evaluation dead-letter queue",
        )
        .await
    }
}
