//! `spigot`: operate Spigot on AWS or locally.

mod blocked;
mod dlq;
mod events;
mod filters;
mod local;
mod paint;
mod reconcile;
mod relay;
mod replay;
mod resources;
mod secret;
mod send;
mod switch;
mod trigger;
mod words;

use clap::{Parser, Subcommand};

/// An error that reaches the user: exit code 2 for usage/configuration, 1 for a failed operation.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command cannot run as given (a missing id, a bad flag value).
    #[error("{0}")]
    Usage(String),
    /// The command ran and failed.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl From<spigot_agent::AgentError> for CliError {
    fn from(e: spigot_agent::AgentError) -> Self {
        match e {
            spigot_agent::AgentError::Usage(m) => CliError::Usage(m),
            spigot_agent::AgentError::Failed(e) => CliError::Failed(e),
        }
    }
}

/// `spigot agent`: what `spigot-agent` does, with the stack found as every command finds it.
async fn agent(place: &resources::Where, args: spigot_agent::AgentArgs) -> Result<(), CliError> {
    let r = place.resolve().await?;
    let bucket = r.need(spigot_core::resources::Resource::Bucket)?;
    Ok(spigot_agent::run(&r.sdk, bucket, args).await?)
}

#[derive(Parser)]
#[command(
    name = "spigot",
    version,
    about = "Operate Spigot, the webhook gateway: toggle the spigot, watch the buffer, replay hooks, run it all locally."
)]
struct Cli {
    /// Spigot's debug logs.
    #[arg(short, long, global = true, help_heading = "Where (any command)")]
    verbose: bool,
    #[command(flatten)]
    place: resources::Where,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn the spigot ON: hooks pass through, the buffer drains.
    #[command(after_help = "Examples:\n  spigot on --local\n  spigot on --stack spigot")]
    On(switch::OnArgs),
    /// Turn the spigot OFF: hooks wait in the buffer (maintenance).
    #[command(after_help = "Examples:\n  spigot off --local\n  spigot off --stack spigot --json")]
    Off(switch::OffArgs),
    /// Show the state, buffer and dead-letter depths.
    #[command(after_help = "Examples:\n  spigot status --local\n  spigot status --json")]
    Status(switch::StatusArgs),
    /// What happened to recent hooks (from the archive), or to one of them (--delivery).
    #[command(
        after_help = "Examples:\n  spigot events --local --since 10m\n  spigot events --repo octo-org/web --since 2026-12-01T14:00Z --until 2026-12-01T15:00Z\n  spigot events --delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958 --json"
    )]
    Events(events::EventsArgs),
    /// Send archived hooks again, byte for byte (X-Spigot-Replay names the original), in order per repository.
    #[command(
        after_help = "Examples:\n  spigot replay --repo octo-org/web --since 2026-12-01T14:00Z\n  spigot replay --all --since 2h --dry-run\n  spigot replay --repo octo-org/web --since 1d --to https://jenkins-restore.example.com"
    )]
    Replay(replay::ReplayArgs),
    /// Inspect and redrive the buffer's dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Manage and dry-run pipeline filters.
    #[command(subcommand)]
    Filters(filters::FiltersCommand),
    /// The webhook secret to paste into GitHub.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Print the X-Hub-Signature-256 GitHub would send for a file.
    #[command(
        after_help = "Example:\n  spigot sign --secret \"$WEBHOOK_SECRET\" tests/fixtures/push.json"
    )]
    Sign(send::SignArgs),
    /// POST a payload as GitHub would (headers, signature, delivery id).
    #[command(
        after_help = "Example:\n  spigot send tests/fixtures/push.json --url http://127.0.0.1:3000/webhook --secret spigot-local-test-secret --event push"
    )]
    Send(send::SendArgs),
    /// Pull mode: deliver buffered hooks to a target inside your network (runs until stopped).
    #[command(
        after_help = "Examples:\n  spigot relay --to https://jenkins.internal/github-webhook/ --stack spigot\n  spigot relay --to http://127.0.0.1:8080/ --allow-http --local --once\n  spigot relay --to http://jenkins:8080/ --allow-http --metrics-listen 127.0.0.1:9464"
    )]
    Relay(relay::RelayArgs),
    /// Ask GitHub to redeliver the hooks that never reached Spigot (GitHub keeps 3 days of deliveries).
    #[command(
        after_help = "Needs GITHUB_TOKEN (a token with admin:repo_hook or admin:org_hook read) or a GitHub App; GITHUB_API_URL names GitHub Enterprise's API (default https://api.github.com).\n\nExamples:\n  GITHUB_HOOKS=repo/octo-org/mono/12345 spigot reconcile --dry-run\n  spigot reconcile --since 6h --hooks org/octo-org/678 --stack spigot\n  spigot reconcile --json --local"
    )]
    Reconcile(reconcile::ReconcileArgs),
    /// Raise a pull-deployment trigger; with --wait, wait for the agents' receipts.
    #[command(
        after_help = "Examples:\n  spigot trigger web-prod --data VERSION=1.4.2 --wait --stack spigot\n  spigot trigger web-prod --wait --agents 3 --timeout 30m --json\n  spigot trigger receipts web-prod --request 7"
    )]
    Trigger(trigger::TriggerArgs),
    /// Follow a trigger (or GitHub pushes) and run a deployment script for each request (runs until stopped).
    #[command(
        after_help = "Examples:\n  spigot agent --trigger web-prod --script /etc/spigot/deploy.yaml --stack spigot\n  spigot agent --trigger web-prod --script deploy.yaml --local --once\n  spigot agent --trigger deploy-web --script deploy.yaml --webhook-secret-file /etc/spigot/webhook-secret"
    )]
    Agent(spigot_agent::AgentArgs),
    /// Run Spigot locally on a moto server: queues, bucket, API stage, receiver on 127.0.0.1:3000.
    #[command(
        after_help = "Example:\n  python -m moto.server -p 5000 &\n  spigot dev --endpoint http://127.0.0.1:5000"
    )]
    Dev(local::DevArgs),
    /// Where the resources are: each one's flag, variable and stack output,
    /// and the value they resolve to here (the flags every command takes).
    #[command(
        after_help = "Examples:\n  spigot where --local\n  spigot where --stack spigot\n  spigot where --buffer-url https://sqs.eu-west-1.amazonaws.com/123/spigot-buffer.fifo"
    )]
    Where,
}

/// The crates whose log lines are Spigot's.
const SPIGOT_CRATES: &[&str] = &[
    "spigot",
    "spigot_core",
    "spigot_aws",
    "spigot_engine",
    "spigot_receiver",
    "spigot_drainer",
    "spigot_evaluator",
    "spigot_reconciler",
    "spigot_agent",
];

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Spigot's own lines at the chosen level; everyone else's (the SDK's) only when they warn.
    let ours = match (&cli.command, cli.verbose) {
        (_, true) => "debug",
        (Command::Dev(_) | Command::Relay(_) | Command::Agent(_), false) => "info",
        _ => "warn",
    };
    let filter = SPIGOT_CRATES.iter().fold(
        "warn,aws_config=error,aws_smithy_runtime=error".to_string(),
        |f, c| format!("{f},{c}={ours}"),
    );
    // Colour only for a person at a terminal, and never with NO_COLOR.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::On(args) => switch::on(&cli.place, args).await,
        Command::Off(args) => switch::off(&cli.place, args).await,
        Command::Status(args) => switch::status(&cli.place, args).await,
        Command::Events(args) => events::run(&cli.place, args).await,
        Command::Replay(args) => replay::run(&cli.place, args).await,
        Command::Dlq(cmd) => dlq::run(&cli.place, cmd).await,
        Command::Filters(cmd) => filters::run(&cli.place, cmd).await,
        Command::Secret(cmd) => secret::run(&cli.place, cmd).await,
        Command::Sign(args) => send::sign(args),
        Command::Send(args) => send::send(args).await,
        Command::Dev(args) => local::run(&cli.place, args).await,
        Command::Where => resources::show(&cli.place).await,
        Command::Relay(args) => relay::run(&cli.place, args).await,
        Command::Reconcile(args) => reconcile::run(&cli.place, args).await,
        Command::Trigger(args) => trigger::run(&cli.place, args).await,
        Command::Agent(args) => agent(&cli.place, args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{} {e}", paint::error(paint::on(true)));
            match e {
                CliError::Usage(_) => std::process::ExitCode::from(2),
                CliError::Failed(_) => std::process::ExitCode::from(1),
            }
        }
    }
}
