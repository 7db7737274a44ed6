//! Filters in the config bucket, and CodePipeline executions.

use aws_sdk_codepipeline::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_codepipeline::types::{SourceRevisionOverride, SourceRevisionType};
use futures::future::try_join_all;
use spigot_core::ports::{FilterStore, Pipelines, PortError, Start, StartError, StoredFilter};

use crate::error::context;
use crate::s3::Objects;

/// Filter objects in S3.
#[derive(Debug, Clone)]
pub struct S3Filters {
    objects: Objects,
}

impl S3Filters {
    /// Filters in `bucket`.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            objects: Objects {
                client,
                bucket: bucket.into(),
            },
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.objects.bucket
    }
}

impl FilterStore for S3Filters {
    async fn list(&self, prefix: &str) -> Result<Vec<StoredFilter>, PortError> {
        let keys = self.objects.keys(prefix).await?;
        try_join_all(keys.into_iter().map(|key| async move {
            let bytes = self.objects.get(&key).await?.unwrap_or_default();
            Ok(StoredFilter { key, bytes })
        }))
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.objects.get(key).await
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
        self.objects.put(key, bytes, Some("application/json")).await
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.objects.delete(key).await
    }
}

/// AWS CodePipeline.
#[derive(Debug, Clone)]
pub struct CodePipelines {
    client: aws_sdk_codepipeline::Client,
}

impl CodePipelines {
    /// Starts executions through `client`.
    pub fn new(client: aws_sdk_codepipeline::Client) -> Self {
        Self { client }
    }
}

impl Pipelines for CodePipelines {
    async fn start(&self, start: &Start) -> Result<String, StartError> {
        let mut req = self
            .client
            .start_pipeline_execution()
            .name(&start.pipeline)
            .client_request_token(&start.token);
        if let Some((action, commit)) = &start.source {
            let revision = SourceRevisionOverride::builder()
                .action_name(action)
                .revision_type(SourceRevisionType::CommitId)
                .revision_value(commit)
                .build()
                .map_err(|e| StartError::Rejected(e.to_string()))?;
            req = req.source_revisions(revision);
        }
        match req.send().await {
            Ok(out) => Ok(out.pipeline_execution_id.unwrap_or_default()),
            Err(SdkError::ServiceError(se)) => {
                let status = se.raw().status().as_u16();
                let err = se.into_err();
                let message = format!(
                    "{}: {}",
                    err.code().unwrap_or("error"),
                    err.message().unwrap_or("")
                );
                Err(match err.code() {
                    Some("PipelineNotFoundException") => StartError::NotFound(message),
                    Some(
                        "ThrottlingException"
                        | "ConflictException"
                        | "ConcurrentPipelineExecutionsLimitExceededException"
                        | "LimitExceededException",
                    ) => StartError::Throttled(message),
                    _ if status >= 500 => StartError::Transient(message),
                    _ => StartError::Rejected(message),
                })
            }
            Err(e) => Err(StartError::Transient(context(&e))),
        }
    }
}
