//! `spigot relay`: pull mode. An agent inside a private network pulls hooks
//! from the buffer and delivers them to a target GitHub cannot reach. The
//! deletion of a message is the receipt: nothing is deleted before the target
//! accepted it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use spigot_aws::{HttpTarget, S3Payloads, SqsBuffer, StageSwitch};
use spigot_core::ports::{Switch, Target};
use spigot_core::spigot::State;
use spigot_drainer::engine::{Counters, Engine, EngineConfig, Stop};

use crate::CliError;
use crate::resources::{Resolved, Where};

#[derive(clap::Args)]
pub struct RelayArgs {
    /// The target inside your network (e.g. http://jenkins.internal:8080/github-webhook/).
    #[arg(long)]
    to: String,
    /// Hooks delivered at once (each FIFO group stays in order).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Deliver what is buffered now, then exit.
    #[arg(long)]
    once: bool,
    /// Serve Prometheus metrics here (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Long-poll wait of each receive, seconds.
    #[arg(long, default_value_t = 20)]
    poll_wait: i32,
    /// Timeout of one delivery, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Per-event paths on the target, e.g. push=/github-webhook/,pull_request=/ghprbhook/
    #[arg(long, default_value = "")]
    event_paths: String,
}

struct Shared {
    counters: Counters,
    resolved: Resolved,
    buffer_url: String,
}

pub async fn run(place: &Where, args: RelayArgs) -> Result<(), CliError> {
    let r = place.resolve().await?;
    let buffer_url = r.buffer()?.to_string();
    let dlq_url = r.dlq()?.to_string();
    let (api, stage) = r.api()?;
    let switch = StageSwitch::new(
        spigot_aws::aws_sdk_apigateway::Client::new(&r.sdk),
        api,
        stage,
    );
    let paths = spigot_core::config::EventPaths::parse(&args.event_paths)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let engine = Engine {
        buffer: SqsBuffer::new(
            spigot_aws::aws_sdk_sqs::Client::new(&r.sdk),
            &buffer_url,
            &dlq_url,
        ),
        payloads: r
            .bucket
            .as_ref()
            .map(|b| S3Payloads::new(spigot_aws::s3_client(&r.sdk), b)),
        target: HttpTarget::new(
            &args.to,
            paths,
            spigot_core::config::origin(&args.to),
            timeout,
        )
        .context("cannot build the target client")?,
        config: EngineConfig {
            concurrency: args.concurrency.max(1),
            breaker_threshold: 3,
            wait_seconds: args.poll_wait.clamp(0, 20),
            stop_before: Duration::ZERO,
            until_empty: args.once,
            // Keep in-flight messages hidden while a slow target works.
            heartbeat: Some(Duration::from_secs(30)),
            backoff_base: 30,
            backoff_cap: 900,
        },
    };
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        resolved: r.clone(),
        buffer_url: buffer_url.clone(),
    });
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        let shared = shared.clone();
        tokio::spawn(async move {
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || metrics(shared.clone())),
            );
            axum::serve(listener, app).await.ok();
        });
    }

    // SIGINT / SIGTERM: finish in-flight deliveries, release the rest, exit 0.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("stopping: finishing in-flight deliveries");
            stop.store(true, Ordering::SeqCst);
        });
    }
    eprintln!("spigot relay: {buffer_url} -> {}", args.to);
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // OFF pauses the relay, like the drainer.
        match switch
            .read()
            .await
            .map(|v| State::from_stage_variable(v.as_deref()))
        {
            Ok(Ok(State::On)) => {}
            Ok(Ok(State::Off)) => {
                tracing::info!("spigot is OFF: relay paused");
                if args.once {
                    break;
                }
                pause(&stop, Duration::from_secs(5)).await;
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "relay paused");
                pause(&stop, Duration::from_secs(5)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the spigot state; retrying");
                pause(&stop, Duration::from_secs(5)).await;
                continue;
            }
        }
        if !engine.target.probe().await {
            tracing::warn!(target = %args.to, "target is down; waiting");
            if args.once {
                break;
            }
            pause(&stop, Duration::from_secs(2)).await;
            continue;
        }
        // Run until stopped, the breaker trips, or the spigot turns OFF.
        let cancel = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (cancel, stop) = (cancel.clone(), stop.clone());
            let switch = switch.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let off = !matches!(
                        switch
                            .read()
                            .await
                            .map(|v| State::from_stage_variable(v.as_deref())),
                        Ok(Ok(State::On))
                    );
                    if stop.load(Ordering::SeqCst) || off {
                        cancel.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            })
        };
        let summary = engine.run(None, &cancel, &shared.counters).await;
        watcher.abort();
        tracing::info!(?summary, "relay run ended");
        match summary.stop {
            Some(Stop::Empty) if args.once => break,
            Some(Stop::Breaker) | Some(Stop::BufferError) => {
                pause(&stop, Duration::from_secs(5)).await
            }
            _ => {}
        }
    }
    let s = shared.counters.summary(None);
    eprintln!(
        "spigot relay stopped: {} delivered, {} retried, {} dead-lettered, {} released",
        s.delivered, s.retried, s.dead_lettered, s.released
    );
    Ok(())
}

async fn pause(stop: &AtomicBool, d: Duration) {
    let until = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics(shared: Arc<Shared>) -> String {
    let s = shared.counters.summary(None);
    let depth = crate::switch::depth(&shared.resolved, &shared.buffer_url)
        .await
        .ok();
    let last = shared.counters.last_delivery_ms.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "spigot_relay_delivered_total",
        "counter",
        "Hooks delivered and deleted.",
        s.delivered.to_string(),
    );
    metric(
        "spigot_relay_retried_total",
        "counter",
        "Retryable delivery failures.",
        s.retried.to_string(),
    );
    metric(
        "spigot_relay_dead_lettered_total",
        "counter",
        "Hooks sent to the dead-letter queue.",
        s.dead_lettered.to_string(),
    );
    metric(
        "spigot_relay_released_total",
        "counter",
        "Hooks released unattempted.",
        s.released.to_string(),
    );
    if let Some(d) = depth {
        metric(
            "spigot_buffer_depth",
            "gauge",
            "Hooks waiting in the buffer (visible + in flight).",
            (d.visible + d.in_flight).to_string(),
        );
    }
    if last > 0 {
        let age = spigot_aws::now_ms().saturating_sub(last) as f64 / 1000.0;
        metric(
            "spigot_relay_last_delivery_age_seconds",
            "gauge",
            "Seconds since the last delivery.",
            format!("{age:.3}"),
        );
    }
    out
}
