//! The triggers mailbox in the config bucket: conditional reads (`If-None-Match`
//! with the last entity tag: 304 costs a GET and no body) and conditional
//! writes (`If-None-Match: *`, `If-Match`: 412 when the condition fails).

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use spigot_core::ports::{PortError, Read, Triggers, Write};

use crate::error::port;
use crate::s3::Objects;

/// How often a write that met a concurrent conditional write (409) is tried again.
const CONFLICT_RETRIES: u32 = 6;

/// Trigger objects in one bucket.
#[derive(Debug, Clone)]
pub struct S3Triggers {
    objects: Objects,
}

impl S3Triggers {
    /// Triggers in `bucket`.
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

/// The HTTP status of an SDK error's response, when there was one.
fn status<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl Triggers for S3Triggers {
    async fn read(&self, key: &str, known: Option<&str>) -> Result<Read, PortError> {
        self.get(key, known, spigot_core::trigger::MAX_OBJECT_BYTES)
            .await
    }

    async fn read_at_most(&self, key: &str, at_most: usize) -> Result<Read, PortError> {
        self.get(key, None, at_most).await
    }

    async fn write(&self, key: &str, bytes: Vec<u8>, when: Write<'_>) -> Result<bool, PortError> {
        let bucket = &self.objects.bucket;
        let mut attempt = 0;
        loop {
            let mut put = self
                .objects
                .client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_type("application/json")
                .body(ByteStream::from(bytes.clone()));
            put = match when {
                Write::Always => put,
                Write::IfAbsent => put.if_none_match("*"),
                Write::IfMatches(etag) => put.if_match(etag),
            };
            match put.send().await {
                Ok(_) => return Ok(true),
                Err(e) => match status(&e) {
                    // The condition failed: taken, or changed since read.
                    Some(412) => return Ok(false),
                    // If-Match on a key that is gone.
                    Some(404) if matches!(when, Write::IfMatches(_)) => return Ok(false),
                    // Another conditional write to this key was in progress: S3 asks for a retry.
                    Some(409) if attempt < CONFLICT_RETRIES => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt))).await;
                    }
                    _ => return Err(port(&format!("S3 PutObject s3://{bucket}/{key}"), e)),
                },
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        self.objects.keys(prefix).await
    }
}

impl S3Triggers {
    /// `key` (unless its entity tag is still `known`), cut at `at_most + 1` bytes.
    async fn get(&self, key: &str, known: Option<&str>, at_most: usize) -> Result<Read, PortError> {
        let bucket = &self.objects.bucket;
        let out = match self
            .objects
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_if_none_match(known.map(str::to_string))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(Read::Missing);
            }
            Err(e) if status(&e) == Some(304) => return Ok(Read::Unchanged),
            Err(e) if status(&e) == Some(404) => return Ok(Read::Missing),
            Err(e) => return Err(port(&format!("S3 GetObject s3://{bucket}/{key}"), e)),
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        // Read no more than the cap (and one byte past it, so that the reader
        // knows the object is larger): another principal may have written it.
        let cap = at_most.saturating_add(1);
        let mut bytes = Vec::new();
        let mut body = out.body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| PortError::new(format!("reading s3://{bucket}/{key} failed: {e}")))?
        {
            let room = cap.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if bytes.len() >= cap {
                break;
            }
        }
        Ok(Read::Found { bytes, etag })
    }
}
