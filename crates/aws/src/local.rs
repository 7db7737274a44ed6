//! The local stack: the queues, bucket and API stage of Spigot, created
//! idempotently in a moto server (or any AWS-compatible endpoint).

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName;
use serde::{Deserialize, Serialize};

use spigot_core::config::Settings;
use spigot_core::resources::{Resource, Resources};

use crate::error::port;
use spigot_core::ports::{PortError, PortErrorKind};

/// The stage that holds `spigot_state`.
pub const STAGE: &str = spigot_core::resources::DEFAULT_STAGE;

/// A local stack (written to `.spigot/dev.json`): its endpoint, resources and target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalStack {
    /// The AWS endpoint (moto).
    pub endpoint: String,
    /// The queues, bucket and API stage, named as in [`spigot_core::resources::TABLE`].
    #[serde(flatten)]
    pub resources: Resources,
    /// Where `spigot dev` delivers hooks (so `spigot on --drain --local` can drain there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Where `spigot dev` takes webhooks (`http://HOST:PORT/webhook`), for `spigot send`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

impl LocalStack {
    /// The value of `r` (every resource but the drainer function is provisioned).
    pub fn get(&self, r: Resource) -> &str {
        self.resources.get(r).unwrap_or_default()
    }

    /// Settings naming this stack's resources, as a function in it would read them.
    pub fn settings(&self) -> Settings {
        Settings {
            resources: self.resources.clone(),
            target_url: self.target.clone(),
            // Local targets (the sink, a Jenkins on this machine) speak plain http.
            allow_insecure_target: true,
            ..Settings::default()
        }
    }
}

/// The buffer's `maxReceiveCount`: a backstop no normal operation reaches (the
/// engine dead-letters, with a reason, after `MAX_ATTEMPTS` delivery attempts).
pub const MAX_RECEIVES: u32 = 500;

/// Why the local stack could not be created.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot create the local stack at {endpoint} ({step}): {message}; is the moto server running (make run starts one)?"
)]
pub struct ProvisionError {
    endpoint: String,
    step: &'static str,
    message: String,
}

/// Creates (or finds) every resource named after `name` (lower case, `[a-z0-9-]`).
pub async fn provision(
    sdk: &SdkConfig,
    endpoint: &str,
    name: &str,
) -> Result<LocalStack, ProvisionError> {
    let fail = |step: &'static str| {
        let endpoint = endpoint.to_string();
        move |e: PortError| ProvisionError {
            endpoint: endpoint.clone(),
            step,
            message: e.to_string(),
        }
    };
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let buffer_dlq_url = queue(&sqs, &format!("{name}-buffer-dlq.fifo"), true, None)
        .await
        .map_err(fail("buffer DLQ"))?;
    let buffer_url = queue(
        &sqs,
        &format!("{name}-buffer.fifo"),
        true,
        Some((&buffer_dlq_url, MAX_RECEIVES)),
    )
    .await
    .map_err(fail("buffer queue"))?;
    let eval_dlq_url = queue(&sqs, &format!("{name}-eval-dlq.fifo"), true, None)
        .await
        .map_err(fail("evaluation DLQ"))?;
    let eval_url = queue(
        &sqs,
        &format!("{name}-eval.fifo"),
        true,
        // A backstop, as in the template: the evaluator dead-letters a push itself.
        Some((&eval_dlq_url, 100)),
    )
    .await
    .map_err(fail("evaluation queue"))?;

    let bucket = config_bucket(sdk, name)
        .await
        .map_err(fail("config bucket"))?;

    let api_id = api(sdk, name).await.map_err(fail("REST API stage"))?;
    let archive = archive_stream(sdk, name, &bucket)
        .await
        .map_err(fail("archive stream"))?;
    let resources = Resources::default()
        .with(Resource::ArchiveStream, archive)
        .with(Resource::ApiId, api_id)
        .with(Resource::Stage, STAGE)
        .with(Resource::BufferUrl, buffer_url)
        .with(Resource::DlqUrl, buffer_dlq_url)
        .with(Resource::EvalUrl, eval_url)
        .with(Resource::EvalDlqUrl, eval_dlq_url)
        .with(Resource::Bucket, bucket);
    Ok(LocalStack {
        endpoint: endpoint.to_string(),
        resources,
        target: None,
        webhook_url: None,
    })
}

/// The config bucket called `name`-config, created when there is none.
async fn config_bucket(sdk: &SdkConfig, name: &str) -> Result<String, PortError> {
    let s3 = crate::s3_client(sdk);
    let bucket = format!("{name}-config");
    if s3.head_bucket().bucket(&bucket).send().await.is_err() {
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .map_err(|e| port("S3 CreateBucket", e))?;
    }
    Ok(bucket)
}

/// The archive's Firehose delivery stream into `bucket`'s `archive/`, as the
/// template makes it (moto writes each record batch to S3 at once).
async fn archive_stream(sdk: &SdkConfig, name: &str, bucket: &str) -> Result<String, PortError> {
    use aws_sdk_firehose::types::{
        BufferingHints, CompressionFormat, ExtendedS3DestinationConfiguration,
    };
    let firehose = aws_sdk_firehose::Client::new(sdk);
    let stream = format!("{name}-archive");
    if firehose
        .describe_delivery_stream()
        .delivery_stream_name(&stream)
        .send()
        .await
        .is_ok()
    {
        return Ok(stream);
    }
    let destination = ExtendedS3DestinationConfiguration::builder()
        .role_arn(format!("arn:aws:iam::123456789012:role/{name}-archive"))
        .bucket_arn(format!("arn:aws:s3:::{bucket}"))
        .prefix(spigot_core::archive::ARCHIVE_PREFIX)
        .buffering_hints(
            BufferingHints::builder()
                .interval_in_seconds(300)
                .size_in_mbs(5)
                .build(),
        )
        .compression_format(CompressionFormat::Uncompressed)
        .build()
        .map_err(|e| PortError::of(PortErrorKind::Invalid, e.to_string()))?;
    firehose
        .create_delivery_stream()
        .delivery_stream_name(&stream)
        .extended_s3_destination_configuration(destination)
        .send()
        .await
        .map_err(|e| port("Firehose CreateDeliveryStream", e))?;
    Ok(stream)
}

async fn queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    fifo: bool,
    dead_letters_to: Option<(&str, u32)>,
) -> Result<String, PortError> {
    let mut attrs = HashMap::new();
    attrs.insert(
        QueueAttributeName::MessageRetentionPeriod,
        "1209600".to_string(),
    );
    attrs.insert(QueueAttributeName::VisibilityTimeout, "60".to_string());
    if fifo {
        attrs.insert(QueueAttributeName::FifoQueue, "true".to_string());
    }
    if let Some((dlq_url, max_receive)) = dead_letters_to {
        let arn = sqs
            .get_queue_attributes()
            .queue_url(dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| port("SQS GetQueueAttributes", e))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| PortError::new("the DLQ has no ARN"))?;
        attrs.insert(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receive.to_string()}).to_string(),
        );
    }
    let out = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attrs))
        .send()
        .await
        .map_err(|e| port("SQS CreateQueue", e))?;
    out.queue_url
        .ok_or_else(|| PortError::new("CreateQueue returned no URL"))
}

/// The REST API called `name` with its stage, created when there is none.
async fn api(sdk: &SdkConfig, name: &str) -> Result<String, PortError> {
    let gw = aws_sdk_apigateway::Client::new(sdk);
    match existing_api(&gw, name).await? {
        Some(id) => Ok(id),
        None => create_api(&gw, name).await,
    }
}

async fn existing_api(
    gw: &aws_sdk_apigateway::Client,
    name: &str,
) -> Result<Option<String>, PortError> {
    let apis = gw
        .get_rest_apis()
        .limit(500)
        .send()
        .await
        .map_err(|e| port("API Gateway GetRestApis", e))?;
    if let Some(id) = apis
        .items
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.id)
    {
        let stage = gw
            .get_stage()
            .rest_api_id(&id)
            .stage_name(STAGE)
            .send()
            .await;
        if stage.is_ok() {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// A REST API with `POST /webhook` (MOCK: moto refuses a deployment of an API
/// without methods) deployed to the stage with `spigot_state=ON`.
async fn create_api(gw: &aws_sdk_apigateway::Client, name: &str) -> Result<String, PortError> {
    let api = gw
        .create_rest_api()
        .name(name)
        .send()
        .await
        .map_err(|e| port("API Gateway CreateRestApi", e))?;
    let id = api
        .id
        .ok_or_else(|| PortError::new("CreateRestApi returned no id"))?;
    let root = gw
        .get_resources()
        .rest_api_id(&id)
        .send()
        .await
        .map_err(|e| port("API Gateway GetResources", e))?
        .items
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.path.as_deref() == Some("/"))
        .and_then(|r| r.id)
        .ok_or_else(|| PortError::new("the API has no root resource"))?;
    let resource = gw
        .create_resource()
        .rest_api_id(&id)
        .parent_id(root)
        .path_part("webhook")
        .send()
        .await
        .map_err(|e| port("API Gateway CreateResource", e))?
        .id
        .ok_or_else(|| PortError::new("CreateResource returned no id"))?;
    gw.put_method()
        .rest_api_id(&id)
        .resource_id(&resource)
        .http_method("POST")
        .authorization_type("NONE")
        .send()
        .await
        .map_err(|e| port("API Gateway PutMethod", e))?;
    gw.put_integration()
        .rest_api_id(&id)
        .resource_id(&resource)
        .http_method("POST")
        .r#type(aws_sdk_apigateway::types::IntegrationType::Mock)
        .send()
        .await
        .map_err(|e| port("API Gateway PutIntegration", e))?;
    gw.create_deployment()
        .rest_api_id(&id)
        .stage_name(STAGE)
        .variables(spigot_core::spigot::STAGE_VARIABLE, "ON")
        .send()
        .await
        .map_err(|e| port("API Gateway CreateDeployment", e))?;
    Ok(id)
}
