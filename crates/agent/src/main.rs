//! `spigot-agent`: the pull-deployment agent on its own, for deploy hosts. It
//! finds the config bucket from a flag, `SPIGOT_CONFIG_BUCKET` or the local
//! stack's file (`--local`), never from CloudFormation.

use std::path::Path;

use clap::Parser;
use spigot_agent::{AgentArgs, AgentError};

#[derive(Parser)]
#[command(
    name = "spigot-agent",
    version,
    about = "Follow a Spigot trigger and run a deployment script for each request, with receipts.",
    after_help = "Examples:\n  spigot-agent --bucket spigot-config-123 --trigger web-prod --script /etc/spigot/deploy.yaml\n  spigot-agent --local --trigger web --script deploy.yaml --once"
)]
struct Cli {
    #[command(flatten)]
    args: AgentArgs,
    /// The config bucket (the stack's output ConfigBucket).
    #[arg(long, env = "SPIGOT_CONFIG_BUCKET", required_unless_present = "local")]
    bucket: Option<String>,
    /// Use the local stack of `spigot dev` in this directory (.spigot/dev.json).
    #[arg(long)]
    local: bool,
    /// AWS endpoint override (a moto server, say).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
    /// AWS region.
    #[arg(long)]
    region: Option<String>,
    /// AWS profile.
    #[arg(long)]
    profile: Option<String>,
    /// Debug logging.
    #[arg(long, short)]
    verbose: bool,
}

/// The local stack file `spigot dev` writes.
const DEV_FILE: &str = ".spigot/dev.json";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = if cli.verbose { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!(
                    "warn,spigot_agent={level},spigot_core={level},spigot_aws={level}"
                ))
            }),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    match start(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                AgentError::Usage(_) => std::process::ExitCode::from(2),
                AgentError::Failed(_) => std::process::ExitCode::FAILURE,
            }
        }
    }
}

async fn start(cli: Cli) -> Result<(), AgentError> {
    let (region, profile) = (cli.region.as_deref(), cli.profile.as_deref());
    let (endpoint, bucket) = if cli.local {
        let text = std::fs::read_to_string(Path::new(DEV_FILE)).map_err(|_| {
            AgentError::Usage(format!(
                "no local stack: {DEV_FILE} does not exist; start one with `make run` in this directory"
            ))
        })?;
        let stack: spigot_aws::local::LocalStack = serde_json::from_str(&text)
            .map_err(|e| AgentError::Usage(format!("{DEV_FILE} is not a spigot dev file ({e})")))?;
        let bucket = cli.bucket.clone().unwrap_or_else(|| {
            stack
                .get(spigot_core::resources::Resource::Bucket)
                .to_string()
        });
        (
            Some(cli.endpoint.clone().unwrap_or(stack.endpoint.clone())),
            bucket,
        )
    } else {
        (cli.endpoint.clone(), cli.bucket.clone().unwrap_or_default())
    };
    let sdk = spigot_aws::sdk_config_with(endpoint.as_deref(), region, profile).await;
    spigot_agent::run(&sdk, &bucket, cli.args).await
}
