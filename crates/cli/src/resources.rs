//! Finding the resources a command acts on:
//! flags > environment (`SPIGOT_*`) > stack outputs (`--stack`) > `--local` (`.spigot/dev.json`).

use std::path::Path;

use spigot_aws::aws_config::SdkConfig;
use spigot_aws::local::LocalStack;

use crate::CliError;

/// Where `spigot dev` writes the ids of the local stack.
pub const DEV_FILE: &str = ".spigot/dev.json";

/// Flags that say where the Spigot resources are.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Where {
    /// Use the local stack of `spigot dev` (.spigot/dev.json).
    #[arg(long, global = true)]
    pub local: bool,
    /// CloudFormation stack whose outputs name the resources [default: stack_name in samconfig.toml, else spigot].
    #[arg(long, global = true, env = "SPIGOT_STACK")]
    pub stack: Option<String>,
    /// REST API id holding the stage variable spigot_state.
    #[arg(long, global = true, env = "SPIGOT_API_ID")]
    pub api_id: Option<String>,
    /// Stage name.
    #[arg(long, global = true, env = "SPIGOT_STAGE")]
    pub stage: Option<String>,
    /// Buffer (FIFO) queue URL.
    #[arg(long, global = true, env = "SPIGOT_BUFFER_URL")]
    pub buffer_url: Option<String>,
    /// Buffer dead-letter queue URL.
    #[arg(long, global = true, env = "SPIGOT_BUFFER_DLQ_URL")]
    pub dlq_url: Option<String>,
    /// Evaluation queue URL.
    #[arg(long, global = true, env = "SPIGOT_EVAL_QUEUE_URL")]
    pub eval_url: Option<String>,
    /// Evaluation dead-letter queue URL.
    #[arg(long, global = true, env = "SPIGOT_EVAL_DLQ_URL")]
    pub eval_dlq_url: Option<String>,
    /// Config bucket (filters, claim-check payloads).
    #[arg(long, global = true, env = "SPIGOT_CONFIG_BUCKET")]
    pub bucket: Option<String>,
    /// The drainer function (for `spigot on --drain`).
    #[arg(long, global = true, env = "SPIGOT_DRAINER_FUNCTION")]
    pub drainer_function: Option<String>,
    /// AWS endpoint override (a moto server, say).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// AWS region.
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// AWS profile.
    #[arg(long, global = true)]
    pub profile: Option<String>,
}

/// The resolved resources (any may still be missing; [`Resolved::need`] says how to give it).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// SDK configuration for them.
    pub sdk: SdkConfig,
    /// REST API id.
    pub api_id: Option<String>,
    /// Stage.
    pub stage: Option<String>,
    /// Buffer URL.
    pub buffer_url: Option<String>,
    /// Buffer DLQ URL.
    pub dlq_url: Option<String>,
    /// Evaluation queue URL.
    pub eval_url: Option<String>,
    /// Evaluation DLQ URL.
    pub eval_dlq_url: Option<String>,
    /// Config bucket.
    pub bucket: Option<String>,
    /// The drainer function (stack output `DrainerFunction`), for `spigot on --drain`.
    pub drainer_function: Option<String>,
    /// The local stack, with `--local`.
    pub local: Option<LocalStack>,
    /// Where the stack lookup went (for error messages).
    pub source: String,
}

impl Where {
    /// Resolves every id, consulting the stack or the local file only for what flags and env leave out.
    pub async fn resolve(&self) -> Result<Resolved, CliError> {
        let mut r;
        if self.local {
            let stack = read_dev_file(Path::new(DEV_FILE))?;
            let endpoint = self.endpoint.clone().unwrap_or(stack.endpoint.clone());
            r = Resolved {
                sdk: spigot_aws::sdk_config_with(
                    Some(&endpoint),
                    self.region.as_deref(),
                    self.profile.as_deref(),
                )
                .await,
                api_id: Some(stack.api_id.clone()),
                stage: Some(stack.stage.clone()),
                buffer_url: Some(stack.buffer_url.clone()),
                dlq_url: Some(stack.buffer_dlq_url.clone()),
                eval_url: Some(stack.eval_url.clone()),
                eval_dlq_url: Some(stack.eval_dlq_url.clone()),
                bucket: Some(stack.bucket.clone()),
                drainer_function: None,
                local: Some(stack),
                source: format!("local stack in {DEV_FILE}"),
            };
        } else {
            let sdk = spigot_aws::sdk_config_with(
                self.endpoint.as_deref(),
                self.region.as_deref(),
                self.profile.as_deref(),
            )
            .await;
            r = Resolved {
                sdk,
                api_id: None,
                stage: None,
                buffer_url: None,
                dlq_url: None,
                eval_url: None,
                eval_dlq_url: None,
                bucket: None,
                drainer_function: None,
                local: None,
                source: String::new(),
            };
            let all_given = self.api_id.is_some()
                && self.buffer_url.is_some()
                && self.dlq_url.is_some()
                && self.eval_url.is_some()
                && self.eval_dlq_url.is_some()
                && self.bucket.is_some();
            if !all_given {
                let name = self.stack.clone().unwrap_or_else(stack_from_samconfig);
                match stack_outputs(&r.sdk, &name).await {
                    Ok(out) => {
                        let get =
                            |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                        r.api_id = get("ApiId");
                        r.stage = get("StageName");
                        r.buffer_url = get("BufferQueueUrl");
                        r.dlq_url = get("BufferDlqUrl");
                        r.eval_url = get("EvalQueueUrl");
                        r.eval_dlq_url = get("EvalDlqUrl");
                        r.bucket = get("ConfigBucket");
                        r.drainer_function = get("DrainerFunction");
                        r.source = format!("outputs of stack {name}");
                    }
                    Err(e) => r.source = format!("stack {name} could not be read: {e}"),
                }
            }
        }
        let pick = |flag: &Option<String>, found: &mut Option<String>| {
            if flag.is_some() {
                *found = flag.clone();
            }
        };
        pick(&self.api_id, &mut r.api_id);
        pick(&self.stage, &mut r.stage);
        pick(&self.buffer_url, &mut r.buffer_url);
        pick(&self.dlq_url, &mut r.dlq_url);
        pick(&self.eval_url, &mut r.eval_url);
        pick(&self.eval_dlq_url, &mut r.eval_dlq_url);
        pick(&self.bucket, &mut r.bucket);
        pick(&self.drainer_function, &mut r.drainer_function);
        if r.stage.is_none() {
            r.stage = Some("live".into());
        }
        Ok(r)
    }
}

impl Resolved {
    /// The value of `field`, or the error naming the three ways to give it.
    pub fn need<'a>(
        &self,
        value: &'a Option<String>,
        flag: &str,
        env: &str,
        output: &str,
    ) -> Result<&'a str, CliError> {
        value.as_deref().ok_or_else(|| {
            CliError::Usage(format!(
                "no {output} known: pass --{flag}, set {env}, or name the deployed stack with --stack (its output {output}); \
                 for the local stack add --local. ({})",
                if self.source.is_empty() { "no stack consulted".to_string() } else { self.source.clone() }
            ))
        })
    }

    /// The buffer URL.
    pub fn buffer(&self) -> Result<&str, CliError> {
        self.need(
            &self.buffer_url,
            "buffer-url",
            "SPIGOT_BUFFER_URL",
            "BufferQueueUrl",
        )
    }

    /// The buffer's dead-letter queue URL.
    pub fn dlq(&self) -> Result<&str, CliError> {
        self.need(
            &self.dlq_url,
            "dlq-url",
            "SPIGOT_BUFFER_DLQ_URL",
            "BufferDlqUrl",
        )
    }

    /// The config bucket.
    pub fn config_bucket(&self) -> Result<&str, CliError> {
        self.need(
            &self.bucket,
            "bucket",
            "SPIGOT_CONFIG_BUCKET",
            "ConfigBucket",
        )
    }

    /// The REST API id and stage.
    pub fn api(&self) -> Result<(&str, &str), CliError> {
        Ok((
            self.need(&self.api_id, "api-id", "SPIGOT_API_ID", "ApiId")?,
            self.stage.as_deref().unwrap_or("live"),
        ))
    }
}

/// Reads the local stack file written by `spigot dev`.
pub fn read_dev_file(path: &Path) -> Result<LocalStack, CliError> {
    let text = std::fs::read_to_string(path).map_err(|_| {
        CliError::Usage(format!(
            "no local stack: {} does not exist; start one with `make run` (or `spigot dev`) in this directory",
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a spigot dev file ({e}); restart `spigot dev`",
            path.display()
        ))
    })
}

/// `stack_name` from `samconfig.toml` in the current directory, else `spigot`.
pub fn stack_from_samconfig() -> String {
    std::fs::read_to_string("samconfig.toml")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "stack_name").then(|| v.trim().trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "spigot".to_string())
}

async fn stack_outputs(sdk: &SdkConfig, name: &str) -> Result<Vec<(String, String)>, String> {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let out = cfn
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .map_err(|e| {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(x) = src {
                s = x.to_string();
                src = x.source();
            }
            s
        })?;
    Ok(out
        .stacks
        .unwrap_or_default()
        .into_iter()
        .next()
        .map(|s| {
            s.outputs
                .unwrap_or_default()
                .into_iter()
                .filter_map(|o| Some((o.output_key?, o.output_value?)))
                .collect()
        })
        .unwrap_or_default())
}
