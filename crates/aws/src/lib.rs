//! spigot-aws: adapters that implement spigot-core's ports with the AWS SDK and reqwest.

pub mod archive;
mod error;
pub mod github;
pub mod local;
pub mod logs;
pub mod pipelines;
pub mod s3;
pub mod sqs;
pub mod stage;
pub mod target;
pub mod tls;
pub mod triggers;

pub use archive::{FirehoseArchive, S3Archive};
pub use error::AwsError;
pub use github::{GitHubApi, GitHubAuth};
pub use pipelines::{CodePipelines, S3Filters};
pub use s3::S3Payloads;
pub use sqs::{SqsBuffer, SqsEvalLetters, SqsEvalQueue, queue_depth};
pub use stage::{ApiStages, StageSwitch};
pub use target::HttpTarget;
pub use triggers::S3Triggers;
pub use {
    aws_config, aws_sdk_apigateway, aws_sdk_apigatewayv2, aws_sdk_codepipeline, aws_sdk_firehose,
    aws_sdk_s3, aws_sdk_secretsmanager, aws_sdk_sqs,
};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sqs::config::{Credentials, Region};

/// 32 random hex digits (from the system's source; a clock reading if that fails).
pub fn random_id() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return format!("{nanos:032x}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shared SDK configuration: the default chain, or `endpoint` with test
/// credentials and `us-east-1` when they are not set (a local moto server).
pub async fn sdk_config(endpoint: Option<&str>) -> SdkConfig {
    sdk_config_with(endpoint, None, None).await
}

/// [`sdk_config`] with an explicit region and profile (CLI `--region`, `--profile`).
pub async fn sdk_config_with(
    endpoint: Option<&str>,
    region: Option<&str>,
    profile: Option<&str>,
) -> SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).http_client(tls::sdk_http_client());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    if let Some(profile) = profile {
        loader = loader.profile_name(profile);
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
        if profile.is_none()
            && std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && std::env::var_os("AWS_PROFILE").is_none()
        {
            loader = loader.credentials_provider(Credentials::new(
                "test",
                "test",
                None,
                None,
                "spigot-local",
            ));
        }
        if region.is_none()
            && std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            loader = loader.region(Region::new("us-east-1"));
        }
    }
    loader.load().await
}

/// An S3 client; path-style addressing when an endpoint override is set (moto).
pub fn s3_client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Reads the webhook secret(s) from Secrets Manager (`WEBHOOK_SECRET_ARN`).
pub async fn fetch_secret(sdk: &SdkConfig, arn: &str) -> Result<String, AwsError> {
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| AwsError::Secret(arn.to_string(), error::context(&e)))?;
    out.secret_string()
        .map(str::to_string)
        .ok_or_else(|| AwsError::Secret(arn.to_string(), "the secret has no string value".into()))
}

/// A secret in Secrets Manager, read again by a [`spigot_core::Keyring`].
pub struct SecretsManagerFetch {
    sdk: SdkConfig,
    arn: String,
}

impl SecretsManagerFetch {
    /// The secret `arn`.
    pub fn new(sdk: &SdkConfig, arn: &str) -> Self {
        Self {
            sdk: sdk.clone(),
            arn: arn.to_string(),
        }
    }
}

impl spigot_core::signature::SecretFetch for SecretsManagerFetch {
    fn fetch(
        &self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<spigot_core::Secrets, spigot_core::ports::PortError>,
                > + Send
                + '_,
        >,
    > {
        Box::pin(async move {
            let text = fetch_secret(&self.sdk, &self.arn)
                .await
                .map_err(|e| spigot_core::ports::PortError::new(e.to_string()))?;
            spigot_core::Secrets::parse(&text)
                .map_err(|e| spigot_core::ports::PortError::new(e.to_string()))
        })
    }
}

/// The full text of an error and its sources (an SDK error's Display alone says little).
pub fn error_text<E: std::error::Error>(e: &E) -> String {
    error::context(e)
}

/// The innermost cause of an error (`connection refused`, not `error sending request`).
pub fn root_cause(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
