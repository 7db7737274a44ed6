//! The resources of one Spigot deployment (queues, bucket, API stage, drainer),
//! named once. A row of [`TABLE`] says how each is found: the Lambda
//! environment variable, the CLI flag and its `SPIGOT_*` variable, and the
//! stack output. A new resource is one variant and one row.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One resource of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// The API whose stage holds `spigot_state`.
    ApiId,
    /// That stage.
    Stage,
    /// The FIFO buffer queue.
    BufferUrl,
    /// The buffer's FIFO dead-letter queue.
    DlqUrl,
    /// The evaluation queue.
    EvalUrl,
    /// The evaluation queue's dead-letter queue.
    EvalDlqUrl,
    /// The config bucket (filters, claim-check payloads).
    Bucket,
    /// The drainer function (`spigot on --drain` invokes it).
    DrainerFunction,
    /// The Secrets Manager secret holding the webhook secret(s) (`spigot secret show`).
    WebhookSecret,
    /// The kind of API (`REST` or `HTTP`) whose stage holds `spigot_state`.
    ApiType,
    /// The Firehose delivery stream of the archive and the timeline.
    ArchiveStream,
}

/// How one resource is named in each place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The resource.
    pub resource: Resource,
    /// Field name in `.spigot/dev.json`.
    pub field: &'static str,
    /// CLI flag (without `--`).
    pub flag: &'static str,
    /// CLI environment variable.
    pub cli_env: &'static str,
    /// Lambda environment variable, when the functions read it.
    pub lambda_env: Option<&'static str>,
    /// CloudFormation stack output.
    pub output: &'static str,
    /// What it is, for help texts and errors.
    pub what: &'static str,
    /// Value when nothing names it.
    pub default: Option<&'static str>,
    /// Commands that need it usually can do without it (the stack is not read for it alone).
    pub optional: bool,
}

/// The stage that holds `spigot_state` unless told otherwise.
pub const DEFAULT_STAGE: &str = "live";

/// Every resource, how it is named everywhere.
pub const TABLE: &[Row] = &[
    Row {
        resource: Resource::ApiId,
        field: "api_id",
        flag: "api-id",
        cli_env: "SPIGOT_API_ID",
        lambda_env: Some("API_ID"),
        output: "ApiId",
        what: "the id of the API whose stage holds spigot_state",
        default: None,
        optional: false,
    },
    Row {
        resource: Resource::Stage,
        field: "stage",
        flag: "stage",
        cli_env: "SPIGOT_STAGE",
        lambda_env: Some("STAGE_NAME"),
        output: "StageName",
        what: "the stage name",
        default: Some(DEFAULT_STAGE),
        optional: true,
    },
    Row {
        resource: Resource::BufferUrl,
        field: "buffer_url",
        flag: "buffer-url",
        cli_env: "SPIGOT_BUFFER_URL",
        lambda_env: Some("BUFFER_QUEUE_URL"),
        output: "BufferQueueUrl",
        what: "the URL of the FIFO buffer queue",
        default: None,
        optional: false,
    },
    Row {
        resource: Resource::DlqUrl,
        field: "buffer_dlq_url",
        flag: "dlq-url",
        cli_env: "SPIGOT_BUFFER_DLQ_URL",
        lambda_env: Some("BUFFER_DLQ_URL"),
        output: "BufferDlqUrl",
        what: "the URL of the buffer's FIFO dead-letter queue",
        default: None,
        optional: false,
    },
    Row {
        resource: Resource::EvalUrl,
        field: "eval_url",
        flag: "eval-url",
        cli_env: "SPIGOT_EVAL_QUEUE_URL",
        lambda_env: Some("EVAL_QUEUE_URL"),
        output: "EvalQueueUrl",
        what: "the URL of the evaluation queue",
        default: None,
        optional: false,
    },
    Row {
        resource: Resource::EvalDlqUrl,
        field: "eval_dlq_url",
        flag: "eval-dlq-url",
        cli_env: "SPIGOT_EVAL_DLQ_URL",
        lambda_env: Some("EVAL_DLQ_URL"),
        output: "EvalDlqUrl",
        what: "the URL of the evaluation dead-letter queue",
        default: None,
        optional: false,
    },
    Row {
        resource: Resource::Bucket,
        field: "bucket",
        flag: "bucket",
        cli_env: "SPIGOT_CONFIG_BUCKET",
        lambda_env: Some("CONFIG_BUCKET"),
        output: "ConfigBucket",
        what: "the config bucket (filters/ and payloads/)",
        default: None,
        optional: false,
    },
    Row {
        resource: Resource::DrainerFunction,
        field: "drainer_function",
        flag: "drainer-function",
        cli_env: "SPIGOT_DRAINER_FUNCTION",
        lambda_env: None,
        output: "DrainerFunction",
        what: "the drainer function",
        default: None,
        optional: true,
    },
    Row {
        resource: Resource::WebhookSecret,
        field: "webhook_secret_arn",
        flag: "secret-arn",
        cli_env: "SPIGOT_SECRET_ARN",
        lambda_env: None,
        output: "WebhookSecretArn",
        what: "the ARN of the Secrets Manager secret holding the webhook secret(s)",
        default: None,
        optional: true,
    },
    Row {
        resource: Resource::ApiType,
        field: "api_type",
        flag: "api-type",
        cli_env: "SPIGOT_API_TYPE",
        lambda_env: Some("API_TYPE"),
        output: "ApiType",
        what: "the kind of API whose stage holds spigot_state: REST or HTTP",
        default: Some("REST"),
        optional: true,
    },
    Row {
        resource: Resource::ArchiveStream,
        field: "archive_stream",
        flag: "archive-stream",
        cli_env: "SPIGOT_ARCHIVE_STREAM",
        lambda_env: Some("ARCHIVE_STREAM"),
        output: "ArchiveStream",
        what: "the Firehose delivery stream of the archive and the timeline (none: ArchiveDays 0)",
        default: None,
        optional: true,
    },
];

impl Resource {
    /// Its row of [`TABLE`].
    pub fn row(self) -> &'static Row {
        TABLE
            .iter()
            .find(|r| r.resource == self)
            .expect("every resource has a row")
    }
}

/// The named resources of a deployment (any may be unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources(BTreeMap<Resource, String>);

impl Resources {
    /// The value of `r`, or its default.
    pub fn get(&self, r: Resource) -> Option<&str> {
        self.0.get(&r).map(String::as_str).or(r.row().default)
    }

    /// Names `r` (a blank value counts as unset).
    pub fn set(&mut self, r: Resource, value: impl Into<String>) {
        let value = value.into();
        if value.trim().is_empty() {
            self.0.remove(&r);
        } else {
            self.0.insert(r, value.trim().to_string());
        }
    }

    /// Builder form of [`Resources::set`].
    pub fn with(mut self, r: Resource, value: impl Into<String>) -> Self {
        self.set(r, value);
        self
    }

    /// Every value of `other` replaces this one's.
    pub fn overlay(&mut self, other: &Resources) {
        for (r, v) in &other.0 {
            self.0.insert(*r, v.clone());
        }
    }

    /// True when `r` was named (not defaulted).
    pub fn is_named(&self, r: Resource) -> bool {
        self.0.contains_key(&r)
    }

    /// Reads the Lambda environment variables of every row through `lookup`.
    pub fn from_lambda_env(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut out = Self::default();
        for row in TABLE {
            if let Some(v) = row.lambda_env.and_then(&lookup) {
                out.set(row.resource, v);
            }
        }
        out
    }

    /// Reads stack outputs (name, value).
    pub fn from_outputs<'a>(outputs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out = Self::default();
        for (name, value) in outputs {
            if let Some(row) = TABLE.iter().find(|r| r.output == name) {
                out.set(row.resource, value);
            }
        }
        out
    }
}

impl Serialize for Resources {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (r, v) in &self.0 {
            map.serialize_entry(r.row().field, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Resources {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        let mut out = Self::default();
        for row in TABLE {
            if let Some(serde_json::Value::String(v)) = map.get(row.field) {
                out.set(row.resource, v.clone());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_has_one_row_with_distinct_names() {
        let column = |f: fn(&Row) -> &'static str| {
            let names: std::collections::BTreeSet<_> = TABLE.iter().map(f).collect();
            names.len()
        };
        assert_eq!(column(|r| r.field), TABLE.len());
        assert_eq!(column(|r| r.flag), TABLE.len());
        assert_eq!(column(|r| r.cli_env), TABLE.len());
        assert_eq!(column(|r| r.output), TABLE.len());
        for row in TABLE {
            assert_eq!(row.resource.row(), row);
        }
    }

    #[test]
    fn defaults_apply_until_named_and_round_trip_through_json() {
        let r = Resources::default().with(Resource::BufferUrl, "q");
        assert_eq!(r.get(Resource::Stage), Some(DEFAULT_STAGE));
        assert!(!r.is_named(Resource::Stage));
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"buffer_url":"q"}"#);
        assert_eq!(serde_json::from_str::<Resources>(&text).unwrap(), r);
    }

    #[test]
    fn reads_lambda_env_and_stack_outputs() {
        let env = Resources::from_lambda_env(|k| (k == "CONFIG_BUCKET").then(|| "b".to_string()));
        assert_eq!(env.get(Resource::Bucket), Some("b"));
        let out = Resources::from_outputs([("BufferDlqUrl", "d"), ("Other", "x")]);
        assert_eq!(out.get(Resource::DlqUrl), Some("d"));
        assert_eq!(out.0.len(), 1);
    }
}
