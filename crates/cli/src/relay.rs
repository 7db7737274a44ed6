//! `spigot relay`: pull mode. An agent inside a private network pulls hooks
//! from the buffer and delivers them to a target GitHub cannot reach. The
//! deletion of a message is the receipt: nothing is deleted before the target
//! accepted it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use spigot_aws::{HttpTarget, S3Payloads, SqsBuffer};
use std::sync::atomic::AtomicBool;

use spigot_core::ports::{Clock, SystemClock, Target};
use spigot_core::resources::Resource;
use spigot_engine::policy::RateLimit;
use spigot_engine::{Counters, Engine, EngineConfig, Skipped, Stop, gate, watched};

/// How often a relay run re-reads the spigot (and its stop flag).
const WATCH_EVERY: Duration = Duration::from_millis(500);

use crate::CliError;
use crate::resources::{Resolved, Where};
use spigot_agent::daemon::{Exposition, pause, stop_on_signals};

#[derive(clap::Args)]
pub(crate) struct RelayArgs {
    /// The target inside your network (e.g. http://jenkins.internal:8080/github-webhook/).
    #[arg(long)]
    to: String,
    /// Allow an http:// target (inside your network); https is required otherwise.
    #[arg(long)]
    allow_http: bool,
    /// Hooks delivered at once (each FIFO group stays in order).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=100))]
    concurrency: u16,
    /// Deliver what is buffered now, then exit.
    #[arg(long)]
    once: bool,
    /// Serve Prometheus metrics here (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Long-poll wait of each receive, seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i32).range(0..=20))]
    poll_wait: i32,
    /// Timeout of one delivery, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Deliveries a second, all workers together [default: unlimited].
    #[arg(long)]
    rate: Option<f64>,
    /// Reach --rate over this many seconds, starting at a tenth of it.
    #[arg(long, default_value_t = 0, requires = "rate")]
    ramp_seconds: u64,
    /// Delivery attempts before a hook is dead-lettered with its last reason.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(spigot_core::config::MAX_ATTEMPTS_LIMIT)))]
    max_attempts: u32,
    /// Per-event paths on the target, e.g. push=/github-webhook/,pull_request=/ghprbhook/
    #[arg(long, default_value = "")]
    event_paths: String,
}

struct Shared {
    counters: Counters,
    resolved: Resolved,
    buffer_url: String,
}

type RelayEngine = Engine<SqsBuffer, S3Payloads, HttpTarget>;

fn engine(r: &Resolved, args: &RelayArgs) -> Result<RelayEngine, CliError> {
    let paths = spigot_core::config::EventPaths::parse(&args.event_paths)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let target = HttpTarget::new(
        &args.to,
        paths,
        spigot_core::config::origin(&args.to),
        Duration::from_millis(args.timeout_ms),
    )
    .context("cannot build the target client")?;
    // --once exits as soon as the buffer is empty: short polls, not 20 s ones.
    let poll_wait = if args.once {
        args.poll_wait.min(1)
    } else {
        args.poll_wait
    };
    let mut config = EngineConfig::relay(
        usize::from(args.concurrency),
        poll_wait,
        args.once,
        args.max_attempts,
    );
    config.rate = match args.rate {
        None => None,
        Some(rate) if rate.is_finite() && rate > 0.0 => Some(RateLimit {
            rate,
            ramp: Duration::from_secs(args.ramp_seconds),
        }),
        Some(rate) => {
            return Err(CliError::Usage(format!(
                "--rate {rate} is not a number of deliveries a second above 0"
            )));
        }
    };
    pull_engine(r, target, config)
}

/// The relay's engine on the buffer, delivering to `target` (`spigot relay`'s
/// HTTP target).
pub(crate) fn pull_engine<T: Target>(
    r: &Resolved,
    target: T,
    config: EngineConfig,
) -> Result<Engine<SqsBuffer, S3Payloads, T>, CliError> {
    Ok(Engine::new(
        SqsBuffer::new(
            spigot_aws::aws_sdk_sqs::Client::new(&r.sdk),
            r.need(Resource::BufferUrl)?,
            r.need(Resource::DlqUrl)?,
        ),
        r.get(Resource::Bucket)
            .map(|b| S3Payloads::new(spigot_aws::s3_client(&r.sdk), b)),
        target,
        config,
    )
    .with_timeline(r.timeline(), "relay"))
}

/// A `--to` target: https, unless `--allow-http` says it is inside the network.
pub(crate) fn check_to(to: &str, allow_http: bool) -> Result<(), CliError> {
    if to.starts_with("https://") || allow_http {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "--to {to} is not https; pass --allow-http for a target inside your network"
    )))
}

pub(crate) async fn run(place: &Where, args: RelayArgs) -> Result<(), CliError> {
    check_to(&args.to, args.allow_http)?;
    let r = place.resolve().await?;
    let switch = crate::switch::switch(&r)?;
    let engine = engine(&r, &args)?;
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        buffer_url: r.need(Resource::BufferUrl)?.to_string(),
        resolved: r,
    });
    if let Some(addr) = args.metrics_listen {
        let shared = shared.clone();
        spigot_agent::daemon::serve_metrics(addr, move || metrics(shared.clone())).await?;
    }
    let stop = stop_on_signals();
    eprintln!("spigot relay: {} -> {}", shared.buffer_url, args.to);
    let paused = pull(&switch, &engine, &shared.counters, args.once, &stop).await;
    let s = shared.counters.summary(None);
    eprintln!(
        "spigot relay stopped: {} delivered, {} retried, {} dead-lettered, {} released",
        s.delivered, s.retried, s.dead_lettered, s.released
    );
    if args.once {
        // "Deliver what is buffered now": hooks left behind are not "fine".
        let left = crate::switch::depth(&shared.resolved, &shared.buffer_url)
            .await
            .map(|d| d.visible + d.in_flight)
            .unwrap_or(0);
        if left > 0 {
            let why = match paused {
                Some(Skipped::Off) => "the spigot is OFF".to_string(),
                Some(Skipped::TargetDown) => format!("the target {} is down", args.to),
                Some(other) => other.to_string(),
                None if s.retried > 0 => format!(
                    "{} failed and wait in backoff (next attempt in about {} s)",
                    crate::words::hooks(s.retried),
                    s.next_retry_secs.unwrap_or(0)
                ),
                None => "they are held by another consumer or not yet visible".to_string(),
            };
            return Err(CliError::Failed(anyhow::anyhow!(
                "{} still in the buffer: {why}",
                crate::words::hooks(left)
            )));
        }
    }
    Ok(())
}

/// Pulls from the buffer into the engine's target until `stop` (or, with
/// `once`, until the buffer is empty): paused while the spigot is OFF or the
/// target is down, each run cancelled when the spigot stops draining.
pub(crate) async fn pull<B, P, T, S>(
    switch: &S,
    engine: &Engine<B, P, T>,
    counters: &Counters,
    once: bool,
    stop: &Arc<AtomicBool>,
) -> Option<Skipped>
where
    B: spigot_core::ports::Buffer,
    P: spigot_core::ports::Bucket,
    T: Target,
    S: spigot_core::ports::Switch + Clone + 'static,
{
    while !stop.load(Ordering::SeqCst) {
        // OFF pauses the relay, like the drainer; a target down waits.
        if let Err(skipped) = gate(switch, &engine.target).await {
            match &skipped {
                Skipped::Off => tracing::info!("spigot is OFF: relay paused"),
                Skipped::StateInvalid(e) => tracing::error!(error = %e, "relay paused"),
                Skipped::SwitchUnreachable(e) => {
                    tracing::warn!(error = %e, "cannot read the spigot state; retrying")
                }
                Skipped::TargetDown | Skipped::TargetUnsteady(_) => {
                    tracing::warn!("target is down; waiting")
                }
            }
            if once && matches!(skipped, Skipped::Off | Skipped::TargetDown) {
                return Some(skipped);
            }
            let seconds = if skipped == Skipped::TargetDown { 2 } else { 5 };
            pause(stop, Duration::from_secs(seconds)).await;
            continue;
        }
        // Run until stopped, the breaker trips, or the spigot stops draining.
        // Until stopped, or the spigot reads OFF: then no more deliveries start.
        let cancel = AtomicBool::new(false);
        let run = engine.run(None, &cancel, counters);
        let summary = watched(switch, WATCH_EVERY, &cancel, Some(&**stop), run).await;
        tracing::info!(
            delivered = summary.delivered,
            retried = summary.retried,
            dead_lettered = summary.dead_lettered,
            released = summary.released,
            stop = ?summary.stop,
            "relay run ended"
        );
        match summary.stop {
            Some(Stop::Empty) if once => break,
            Some(Stop::Breaker) | Some(Stop::BufferError) => {
                pause(stop, Duration::from_secs(5)).await
            }
            _ => {}
        }
    }
    None
}

async fn metrics(shared: Arc<Shared>) -> String {
    let s = shared.counters.summary(None);
    let depth = crate::switch::depth(&shared.resolved, &shared.buffer_url)
        .await
        .ok();
    let last = shared.counters.last_delivery_ms.load(Ordering::Relaxed);
    let mut out = Exposition::default();
    out.metric(
        "spigot_relay_delivered_total",
        "counter",
        "Hooks delivered and deleted.",
        s.delivered,
    );
    out.metric(
        "spigot_relay_retried_total",
        "counter",
        "Retryable delivery failures.",
        s.retried,
    );
    out.metric(
        "spigot_relay_dead_lettered_total",
        "counter",
        "Hooks sent to the dead-letter queue.",
        s.dead_lettered,
    );
    out.metric(
        "spigot_relay_released_total",
        "counter",
        "Hooks released unattempted.",
        s.released,
    );
    if let Some(d) = depth {
        out.metric(
            "spigot_buffer_depth",
            "gauge",
            "Hooks waiting in the buffer (visible + in flight).",
            d.visible + d.in_flight,
        );
    }
    if last > 0 {
        let age = SystemClock.now_ms().saturating_sub(last) as f64 / 1000.0;
        out.metric(
            "spigot_relay_last_delivery_age_seconds",
            "gauge",
            "Seconds since the last delivery.",
            format!("{age:.3}"),
        );
    }
    out.text()
}
