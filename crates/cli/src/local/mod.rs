//! `spigot dev`: the whole system on one machine, on a moto server. The pieces
//! are the deployed ones (receiver, drainer, evaluator built by their crates'
//! `build`); only what Lambda and API Gateway would do around them is here.

mod drainer;
mod eval;
mod server;
mod sink;
mod stack;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use spigot_aws::local::LocalStack;
use spigot_core::Secrets;
use spigot_core::config::Settings;
use spigot_core::ports::QuietMetrics;
use spigot_core::resources::Resource;

pub(crate) use drainer::drainer;

use crate::CliError;
use crate::resources::{DEV_FILE, Where};

/// The secret `spigot dev` uses when none is given (the one the sample events are signed with).
pub(crate) const TEST_SECRET: &str = "spigot-local-test-secret";
/// The trigger secret `spigot dev` uses when none is given.
pub(crate) const TEST_TRIGGER_SECRET: &str = "spigot-test-trigger-secret";

#[derive(clap::Args)]
pub(crate) struct DevArgs {
    /// Serve POST /webhook here.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Forward hooks here [default: the built-in sink].
    #[arg(long)]
    target: Option<String>,
    /// Address of the built-in sink that prints each delivery (when no --target).
    #[arg(long, default_value = "127.0.0.1:3001")]
    sink: SocketAddr,
    /// Webhook secret(s), comma-separated [default: spigot-local-test-secret, the sample events' secret].
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Secret(s) signing POST /trigger/{name}, comma-separated [default: spigot-test-trigger-secret].
    #[arg(long, env = "TRIGGER_SECRET", hide_env_values = true)]
    trigger_secret: Option<String>,
    /// Name of the local resources (queues, bucket, API).
    #[arg(long, default_value = "spigot-dev")]
    name: String,
    /// Forward timeout in milliseconds.
    #[arg(long, default_value_t = 7000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    forward_timeout_ms: u64,
    /// Run the drainer every this many seconds (0: never).
    #[arg(long, default_value_t = 5)]
    drain_interval: u64,
    /// `push` (forward, and drain on a timer) or `pull` (buffer every hook and
    /// run no drainer, as DeliveryMode=pull deploys: try `spigot relay` and
    /// `spigot-agent` against it).
    #[arg(long, value_enum, default_value = "push")]
    delivery_mode: DevMode,
    /// Start pipelines through this CodePipeline endpoint [default: print "would start ..." instead].
    #[arg(long)]
    codepipeline_endpoint: Option<String>,
    /// Pushes older than this many seconds (by their own pushed_at) start nothing, as MAX_PUSH_AGE in production; 0: no limit (GitHub's sample payloads are from 2019).
    #[arg(long, default_value_t = spigot_core::config::DEFAULT_MAX_PUSH_AGE)]
    max_push_age: u64,
    /// Envelopes larger than this keep their body in the bucket.
    #[arg(long, default_value_t = 262_144)]
    claim_check_bytes: usize,
    /// Hand each request the stage variables as they were this many milliseconds
    /// ago, as API Gateway's edge does while an update spreads (0: at once).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    stage_lag_ms: u64,
    /// Before the timer's drain resumes a DRAINING spigot, the target's health
    /// URL must pass this many seconds in a row (deployed: RESUME_HEALTHY_SECONDS, 30).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=300))]
    resume_healthy_seconds: u64,
}

/// `spigot dev --delivery-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DevMode {
    /// Forward while ON; drain on a timer.
    Push,
    /// Buffer everything; nothing drains (a relay pulls).
    Pull,
}

/// The settings the local functions run with: the stack's, and what `spigot
/// dev`'s flags say.
fn dev_settings(stack: &LocalStack, args: &DevArgs, secret: String) -> Settings {
    let mut settings = stack.settings();
    settings.webhook_secret = Some(secret.into());
    settings.trigger_secret = Some(
        args.trigger_secret
            .clone()
            .unwrap_or_else(|| TEST_TRIGGER_SECRET.to_string())
            .into(),
    );
    settings.forward_timeout_ms = args.forward_timeout_ms;
    // Locally the trigger endpoint is on (deployed, TriggerEndpoint=on turns it on).
    settings.trigger_endpoint = true;
    settings.claim_check_bytes = args.claim_check_bytes;
    // The receiver's own DRAINING lasts as long as the stage takes to spread here.
    settings.drain_grace_seconds = args.stage_lag_ms.div_ceil(1000) + 1;
    if args.delivery_mode == DevMode::Pull {
        settings.delivery_mode = spigot_core::config::DeliveryMode::Pull;
    }
    settings
}

/// The drainer, on a timer of `--drain-interval`; locally the stage spreads
/// as fast as `--stage-lag-ms` says.
fn start_drainer(
    sdk: &spigot_aws::aws_config::SdkConfig,
    stack: &LocalStack,
    target_url: &str,
    args: &DevArgs,
) -> Result<(), CliError> {
    let timeout = Duration::from_millis(args.forward_timeout_ms);
    let grace = Duration::from_millis(args.stage_lag_ms) + Duration::from_secs(1);
    let resume = Duration::from_secs(args.resume_healthy_seconds);
    let drainer = drainer(sdk, stack, target_url, timeout, grace, resume)?;
    drainer::every(drainer, Duration::from_secs(args.drain_interval));
    Ok(())
}

/// What `spigot dev` says when it is up.
fn announce(args: &DevArgs, stack: &LocalStack, target_url: &str, endpoint: &str) {
    eprintln!(
        "spigot dev: POST webhooks to http://{}/webhook -> {target_url}\n  local stack {} (API {} stage {}) in {endpoint}; ids in {DEV_FILE}\n  spigot off --local / spigot on --local flips the spigot; Ctrl-C stops",
        args.listen,
        args.name,
        stack.get(Resource::ApiId),
        stack.get(Resource::Stage),
    );
    if args.delivery_mode == DevMode::Pull {
        eprintln!(
            "  pull mode: every hook is buffered and nothing drains; deliver with `spigot relay --local --to {target_url} --allow-http`"
        );
    }
}

pub(crate) async fn run(place: &Where, args: DevArgs) -> Result<(), CliError> {
    // The ports first: a second `spigot dev` fails here, before it provisions or writes anything.
    let listener = server::bind(args.listen).await?;
    let endpoint = place
        .endpoint
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:5000".to_string());
    let sdk = spigot_aws::sdk_config_with(
        Some(&endpoint),
        place.region.as_deref(),
        place.profile.as_deref(),
    )
    .await;
    let secret = args.secret.clone().unwrap_or_else(|| {
        // Expected locally (the samples are signed with it): said, not warned.
        tracing::info!(
            "no --secret or WEBHOOK_SECRET: using the public test secret {TEST_SECRET:?}"
        );
        TEST_SECRET.to_string()
    });
    let secrets = Secrets::parse(&secret).map_err(|e| CliError::Usage(e.to_string()))?;
    let target_url = match &args.target {
        Some(t) => t.clone(),
        None => sink::start(args.sink, secrets).await?,
    };
    let mut stack = stack::provision_with_retry(&sdk, &endpoint, &args.name).await?;
    stack.target = Some(target_url.clone());
    stack.webhook_url = listener
        .local_addr()
        .ok()
        .map(|a| format!("http://{a}/webhook"));
    stack::write(&stack)?;

    let settings = dev_settings(&stack, &args, secret);
    let mut receiver = spigot_receiver::build(&sdk, &settings)
        .await
        .context("cannot build the receiver")?;
    receiver.metrics = std::sync::Arc::new(QuietMetrics);
    let mut door = spigot_receiver::trigger::build(&sdk, &settings)
        .await
        .context("cannot build the trigger door")?;
    door.metrics = std::sync::Arc::new(QuietMetrics);
    if args.drain_interval > 0 && args.delivery_mode == DevMode::Push {
        start_drainer(&sdk, &stack, &target_url, &args)?;
    }
    let max_push_age = match args.max_push_age {
        0 => Duration::MAX,
        s => Duration::from_secs(s),
    };
    eval::spawn(
        &sdk,
        &stack,
        args.codepipeline_endpoint.as_deref(),
        max_push_age,
    );
    announce(&args, &stack, &target_url, &endpoint);
    let switch = crate::switch::stage_switch(&sdk, &stack);
    let stage = switch.stage().clone();
    server::serve(listener, receiver, door, switch, stage, args.stage_lag_ms).await
}
