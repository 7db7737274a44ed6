//! Claim-check payloads in the config bucket.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use spigot_core::ports::{PayloadStore, PortError};

use crate::error::port;

/// Bodies stored aside in S3.
#[derive(Debug, Clone)]
pub struct S3Payloads {
    client: Client,
    bucket: String,
}

impl S3Payloads {
    /// Payloads in `bucket`.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

impl PayloadStore for S3Payloads {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| port(&format!("S3 PutObject s3://{}/{key}", self.bucket), e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, PortError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| port(&format!("S3 GetObject s3://{}/{key}", self.bucket), e))?;
        let bytes = out.body.collect().await.map_err(|e| {
            PortError::new(format!("reading s3://{}/{key} failed: {e}", self.bucket))
        })?;
        Ok(bytes.into_bytes().to_vec())
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| port(&format!("S3 DeleteObject s3://{}/{key}", self.bucket), e))?;
        Ok(())
    }
}
