//! Objects in the config bucket: claim-check payloads here, filters in `pipelines`.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use spigot_core::config::Settings;
use spigot_core::ports::{Bucket, PortError, PortErrorKind};
use spigot_core::resources::Resource;

use crate::error::port;

/// Get/put/delete of objects in one bucket, shared by the payload and filter stores.
#[derive(Debug, Clone)]
pub(crate) struct Objects {
    pub(crate) client: Client,
    pub(crate) bucket: String,
}

impl Objects {
    /// The object at `key`, `None` when there is none.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(port(&format!("S3 GetObject s3://{}/{key}", self.bucket), e)),
        };
        let bytes = out.body.collect().await.map_err(|e| {
            PortError::new(format!("reading s3://{}/{key} failed: {e}", self.bucket))
        })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    /// Writes `bytes` at `key`, with a Content-Type when given.
    pub(crate) async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<(), PortError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(content_type.map(str::to_string))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| port(&format!("S3 PutObject s3://{}/{key}", self.bucket), e))?;
        Ok(())
    }

    /// The keys under `prefix`, every page, in key order.
    pub(crate) async fn keys(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| {
                    port(
                        &format!("S3 ListObjectsV2 s3://{}/{prefix}", self.bucket),
                        e,
                    )
                })?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token {
                Some(t) if out.is_truncated == Some(true) => token = Some(t),
                _ => break,
            }
        }
        Ok(keys)
    }

    /// True when an object is at `key` (HeadObject: a GET request, a
    /// twelfth of a PUT's price). Needs s3:ListBucket for a 404 on an absent
    /// key; a 403 is an error, never "absent".
    pub(crate) async fn exists(&self, key: &str) -> Result<bool, PortError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(false),
            Err(e) => Err(port(
                &format!("S3 HeadObject s3://{}/{key}", self.bucket),
                e,
            )),
        }
    }

    /// Writes `bytes` at `key` only when nothing is there (`If-None-Match:
    /// *`): false when the key was taken.
    pub(crate) async fn create(&self, key: &str, bytes: Vec<u8>) -> Result<bool, PortError> {
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(412) => Ok(false),
            Err(e) => Err(port(&format!("S3 PutObject s3://{}/{key}", self.bucket), e)),
        }
    }

    /// Deletes `key` (absent is fine).
    pub(crate) async fn delete(&self, key: &str) -> Result<(), PortError> {
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

/// Bodies stored aside in S3.
#[derive(Debug, Clone)]
pub struct S3Payloads {
    objects: Objects,
}

impl S3Payloads {
    /// Payloads in `bucket`.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            objects: Objects {
                client,
                bucket: bucket.into(),
            },
        }
    }
}

impl S3Payloads {
    /// Payloads in `CONFIG_BUCKET`, when set.
    pub fn from_settings(sdk: &aws_config::SdkConfig, settings: &Settings) -> Option<Self> {
        settings
            .resources
            .get(Resource::Bucket)
            .map(|b| Self::new(crate::s3_client(sdk), b))
    }
}

impl Bucket for S3Payloads {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
        self.objects.put(key, bytes, None).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, PortError> {
        self.objects.get(key).await?.ok_or_else(|| {
            PortError::of(
                PortErrorKind::NotFound,
                format!(
                    "claim-check payload s3://{}/{key} is missing",
                    self.objects.bucket
                ),
            )
        })
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), PortError> {
        let bucket = &self.objects.bucket;
        self.objects
            .client
            .copy_object()
            .bucket(bucket)
            .copy_source(format!("{bucket}/{from}"))
            .key(to)
            .send()
            .await
            .map_err(|e| port(&format!("S3 CopyObject s3://{bucket}/{from} to {to}"), e))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.objects.delete(key).await
    }

    async fn create(&self, key: &str, bytes: Vec<u8>) -> Result<bool, PortError> {
        self.objects.create(key, bytes).await
    }
}
