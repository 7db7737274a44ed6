//! The archive: records put to a Kinesis Data Firehose delivery stream,
//! which batches them into the config bucket under `archive/`; read back
//! from S3 by hour.

use aws_sdk_firehose::Client;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;
use spigot_core::archive::{
    ArchiveError, Entry, hour_prefixes, indexed_hour_prefixes, read_object, repository_prefix,
};
use spigot_core::config::Settings;
use std::sync::Arc;

use spigot_core::ports::{Archive, PortError, Timeline};
use spigot_core::resources::{Resource, Resources};

use crate::error::port;
use crate::s3::Objects;

/// Records a PutRecordBatch takes at most.
const BATCH_RECORDS: usize = 500;
/// Bytes a PutRecordBatch takes at most (4 MiB).
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Index marks a process remembers having written (then it forgets them all).
const MARKS_REMEMBERED: usize = 10_000;

/// A Firehose delivery stream, and the repository index in its bucket.
#[derive(Debug)]
pub struct FirehoseArchive {
    client: Client,
    stream: String,
    /// Where index marks go (`None`: not marked).
    index: Option<Objects>,
    marked: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl FirehoseArchive {
    /// The stream named `stream`, marking the repository index in `bucket`.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        stream: impl Into<String>,
        bucket: Option<&str>,
    ) -> Self {
        Self {
            client: Client::new(sdk),
            stream: stream.into(),
            index: bucket.map(|b| Objects {
                client: crate::s3_client(sdk),
                bucket: b.to_string(),
            }),
            marked: Default::default(),
        }
    }

    /// The stream `resources` name (`ARCHIVE_STREAM`), marking the index in
    /// their bucket; none when unnamed (`ArchiveDays` 0).
    pub fn from_resources(sdk: &aws_config::SdkConfig, resources: &Resources) -> Option<Self> {
        let bucket = resources.get(Resource::Bucket);
        resources
            .get(Resource::ArchiveStream)
            .filter(|s| !s.is_empty())
            .map(|s| Self::new(sdk, s, bucket))
    }

    /// [`FirehoseArchive::from_resources`] of a function's settings, shared.
    pub fn shared(sdk: &aws_config::SdkConfig, settings: &Settings) -> Option<Arc<dyn Archive>> {
        Self::from_resources(sdk, &settings.resources).map(|a| Arc::new(a) as Arc<dyn Archive>)
    }

    /// The timeline a component writes its steps to (off without an archive).
    pub fn timeline(sdk: &aws_config::SdkConfig, resources: &Resources) -> Timeline {
        Timeline::new(Self::from_resources(sdk, resources).map(|a| Arc::new(a) as Arc<dyn Archive>))
    }

    /// Writes the marks not written by this process yet: each is looked at
    /// first (a HEAD), then created (If-None-Match: a mark another process
    /// wrote meanwhile is left as it is).
    async fn mark(&self, keys: Vec<String>) -> Result<(), PortError> {
        let Some(objects) = &self.index else {
            return Ok(());
        };
        for key in keys {
            if self
                .marked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&key)
            {
                continue;
            }
            // Looked at first: a HEAD costs a twelfth of a PUT, and another
            // process has usually marked the hour already.
            if !objects.exists(&key).await? {
                objects.create(&key, Vec::new()).await?;
            }
            let mut marked = self
                .marked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if marked.len() >= MARKS_REMEMBERED {
                marked.clear();
            }
            marked.insert(key);
        }
        Ok(())
    }

    async fn put_one(&self, record: Vec<u8>) -> Result<(), PortError> {
        self.client
            .put_record()
            .delivery_stream_name(&self.stream)
            .record(record_of(record)?)
            .send()
            .await
            .map_err(|e| port(&format!("Firehose PutRecord {}", self.stream), e))?;
        Ok(())
    }

    /// One PutRecordBatch; the records Firehose did not take are tried once more.
    async fn put_batch(&self, records: Vec<Vec<u8>>) -> Result<(), PortError> {
        let mut left = records;
        for round in 0..2 {
            let built = left
                .iter()
                .map(|r| record_of(r.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .put_record_batch()
                .delivery_stream_name(&self.stream)
                .set_records(Some(built))
                .send()
                .await
                .map_err(|e| port(&format!("Firehose PutRecordBatch {}", self.stream), e))?;
            if out.failed_put_count == 0 {
                return Ok(());
            }
            let answers = out.request_responses();
            left = left
                .into_iter()
                .zip(answers)
                .filter(|(_, a)| a.error_code().is_some())
                .map(|(r, _)| r)
                .collect();
            if round == 1 || left.is_empty() {
                break;
            }
        }
        Err(PortError::new(format!(
            "Firehose PutRecordBatch {}: {} records not taken after a second try",
            self.stream,
            left.len()
        )))
    }
}

fn record_of(bytes: Vec<u8>) -> Result<Record, PortError> {
    Record::builder()
        .data(Blob::new(bytes))
        .build()
        .map_err(|e| PortError::new(format!("an archive record: {e}")))
}

impl Archive for FirehoseArchive {
    fn put(
        &self,
        records: Vec<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PortError>> + Send + '_>>
    {
        Box::pin(async move {
            if records.len() == 1 {
                let record = records.into_iter().next().unwrap_or_default();
                return self.put_one(record).await;
            }
            let mut batch = Vec::new();
            let mut bytes = 0;
            for record in records {
                if !batch.is_empty()
                    && (batch.len() == BATCH_RECORDS || bytes + record.len() > BATCH_BYTES)
                {
                    self.put_batch(std::mem::take(&mut batch)).await?;
                    bytes = 0;
                }
                bytes += record.len();
                batch.push(record);
            }
            if !batch.is_empty() {
                self.put_batch(batch).await?;
            }
            Ok(())
        })
    }

    fn index(
        &self,
        keys: Vec<String>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PortError>> + Send + '_>>
    {
        Box::pin(self.mark(keys))
    }
}

/// The archive as the bucket holds it.
#[derive(Debug, Clone)]
pub struct S3Archive {
    objects: Objects,
}

/// What a reading of the archive found.
#[derive(Debug, Default)]
pub struct Found {
    /// The records, object by object, in key order.
    pub entries: Vec<Entry>,
    /// Objects read.
    pub objects: usize,
    /// Hours listed.
    pub hours: usize,
    /// Objects (or their tails) that could not be read, with why.
    pub problems: Vec<(String, ArchiveError)>,
}

impl S3Archive {
    /// The archive in `bucket`.
    pub fn new(sdk: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        Self {
            objects: Objects {
                client: crate::s3_client(sdk),
                bucket: bucket.into(),
            },
        }
    }

    /// Every record that arrived between `since_ms` and `until_ms`: one
    /// listing per hour in the range, never the whole archive. With
    /// `repository`, only the hours its index marks (and the hour before
    /// each): one listing of its marks, then those hours.
    pub async fn read(
        &self,
        since_ms: u64,
        until_ms: u64,
        repository: Option<&str>,
    ) -> Result<Found, PortError> {
        let prefixes = match repository {
            None => hour_prefixes(since_ms, until_ms),
            Some(r) => {
                let prefix = repository_prefix(r);
                let marks = self.objects.keys(&prefix).await?;
                indexed_hour_prefixes(&marks, &prefix, since_ms, until_ms)
            }
        };
        let mut found = Found {
            hours: prefixes.len(),
            ..Found::default()
        };
        for prefix in prefixes {
            for key in self.objects.keys(&prefix).await? {
                let Some(bytes) = self.objects.get(&key).await? else {
                    continue; // expired between the listing and the read
                };
                let (entries, problem) = read_object(&bytes);
                found.entries.extend(entries);
                found.objects += 1;
                if let Some(p) = problem {
                    found.problems.push((key, p));
                }
            }
        }
        Ok(found)
    }
}
