//! `spigot on|off|status`.

use anyhow::Context;
use serde_json::json;
use spigot_aws::StageSwitch;
use spigot_core::ports::{ApiKind, StageRef, Switch, SwitchError};
use spigot_core::resources::Resource;
use spigot_core::spigot::{State, StateError};

use crate::CliError;
use crate::resources::{Resolved, Where};
use crate::words::hooks;

#[derive(clap::Args)]
pub(crate) struct OnArgs {
    /// Drain the buffer right away (invokes the drainer; with --local, drains in this process).
    #[arg(long)]
    drain: bool,
    /// Drain right away without waiting for the target's health probe to
    /// pass RESUME_HEALTHY_SECONDS in a row (implies --drain).
    #[arg(long)]
    now: bool,
    /// One JSON object: the flip (`from`, `to`), with --drain also the drain's summary.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub(crate) struct OffArgs {
    /// One JSON object: the flip (`from`, `to`).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Refresh the view until Ctrl-C (as `kubectl get -w`).
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    /// How often --watch refreshes.
    #[arg(long, default_value = "2s", value_parser = spigot_core::duration::parse, requires = "watch")]
    every: std::time::Duration,
    /// Stop --watch after this many views (scripts, tests).
    #[arg(long, requires = "watch", hide = true)]
    count: Option<u64>,
    /// Per blocked repository also its failed attempts' timing: when the next
    /// attempt is due (the buffer's oldest age per repository is not known
    /// without receiving, which status never does).
    #[arg(long)]
    wide: bool,
}

/// The switch of the resolved stack (a REST or an HTTP API stage, by its `ApiType`).
pub(crate) fn switch(r: &Resolved) -> Result<StageSwitch, CliError> {
    let kind = r.get(Resource::ApiType).unwrap_or("REST");
    let stage = StageRef {
        api_id: r.need(Resource::ApiId)?.to_string(),
        stage: r.need(Resource::Stage)?.to_string(),
        kind: ApiKind::parse(kind).ok_or_else(|| {
            CliError::Usage(format!("--api-type {kind:?} is neither REST nor HTTP"))
        })?,
    };
    Ok(StageSwitch::new(&r.sdk, stage))
}

/// The switch of a local stack (a REST API stage in moto).
pub(crate) fn stage_switch(
    sdk: &spigot_aws::aws_config::SdkConfig,
    stack: &spigot_aws::local::LocalStack,
) -> StageSwitch {
    StageSwitch::new(
        sdk,
        StageRef {
            api_id: stack.get(Resource::ApiId).to_string(),
            stage: stack.get(Resource::Stage).to_string(),
            kind: ApiKind::Rest,
        },
    )
}

/// What the switch reads, as shown to an operator: the state, "unset", or the bad value.
fn shown(read: Result<State, SwitchError>) -> Result<Option<String>, CliError> {
    match read {
        Ok(s) => Ok(Some(s.to_string())),
        Err(SwitchError::State(StateError::Missing)) => Ok(None),
        Err(SwitchError::State(StateError::Unknown(v))) => Ok(Some(v)),
        Err(SwitchError::Port(e)) => Err(CliError::Failed(
            anyhow::Error::new(e).context("cannot read the spigot state"),
        )),
    }
}

/// Flips the switch; says so unless `quiet`. The state before and after.
async fn flip(
    place: &Where,
    state: State,
    quiet: bool,
) -> Result<(Option<String>, State), CliError> {
    let r = place.resolve().await?;
    let switch = switch(&r)?;
    let old = shown(switch.read().await).context("cannot flip the spigot")?;
    let waiting = match r.get(Resource::BufferUrl) {
        Some(url) => depth(&r, url).await.map(|d| d.visible + d.in_flight).ok(),
        None => None,
    };
    // Never fail open: a queue depth is approximate (and may be unreadable), so
    // ON from any other state is DRAINING — new hooks queue behind whatever is
    // buffered, and the drainer sets ON once a run finds the buffer empty.
    let state = match (state, old.as_deref()) {
        (State::On, Some("ON")) => State::On,
        (State::On, _) => State::Draining,
        (state, _) => state,
    };
    switch.set(state).await.context("cannot flip the spigot")?;
    // No sentence for machines (`--json`), but an operator's OFF is held all the same.
    if !quiet {
        say_flip(old.as_deref(), state, waiting);
    }
    if state == State::Off {
        reassert_off(&switch, quiet).await?;
    }
    Ok((old, state))
}

/// "spigot ON -> OFF (2 hooks in the buffer)".
fn say_flip(old: Option<&str>, state: State, waiting: Option<u64>) {
    let change = match old {
        Some(o) if o == state.as_str() => format!("spigot is already {state}"),
        o => format!("spigot {} -> {state}", o.unwrap_or("unset")),
    };
    println!(
        "{change}{}",
        match (state, waiting) {
            (State::Draining, Some(n)) => format!(
                " ({} in the buffer; new hooks queue behind them, ON once the drainer finds the buffer empty)",
                hooks(n)
            ),
            (State::Draining, None) => {
                " (new hooks queue behind the buffered ones; ON once the drainer finds the buffer empty)"
                    .to_string()
            }
            (_, Some(n)) => format!(" ({} in the buffer)", hooks(n)),
            (_, None) => String::new(),
        }
    );
}

/// How long after `spigot off` an automatic flip that read the state just
/// before it could still land (one control-plane call: API Gateway has no
/// compare-and-swap).
const OFF_SETTLES: std::time::Duration = std::time::Duration::from_millis(1500);

/// An operator's OFF always wins: read again once a concurrent flip (a
/// drainer's DRAINING -> ON, a receiver's ON -> DRAINING) could have landed
/// over it, and set OFF again if one did (said on stderr when stdout is
/// `quiet`, kept for one JSON document).
async fn reassert_off(switch: &StageSwitch, quiet: bool) -> Result<(), CliError> {
    tokio::time::sleep(OFF_SETTLES).await;
    match switch.read().await {
        Ok(State::Off) => Ok(()),
        found => {
            let found = found
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            switch
                .set(State::Off)
                .await
                .context("cannot flip the spigot")?;
            let said = format!(
                "an automatic flip landed at the same moment ({found}); spigot set OFF again"
            );
            if quiet {
                eprintln!("{said}");
            } else {
                println!("{said}");
            }
            Ok(())
        }
    }
}

pub(crate) async fn on(place: &Where, args: OnArgs) -> Result<(), CliError> {
    let drain = args.drain || args.now;
    let (old, new) = flip(place, State::On, args.json).await?;
    let flipped = json!({"from": old, "to": new.to_string()});
    if drain {
        drain_now(place, args.json.then_some(flipped), args.now).await?;
    } else if args.json {
        println!("{flipped}");
    }
    Ok(())
}

/// Runs a drain now: in process for the local stack, else by invoking the drainer function.
/// With `json` (the flip it follows), the summary is printed as JSON.
async fn drain_now(
    place: &Where,
    json: Option<serde_json::Value>,
    now: bool,
) -> Result<(), CliError> {
    let r = place.resolve().await?;
    let buffer = r.need(Resource::BufferUrl)?.to_string();
    let start = depth(&r, &buffer).await?;
    let (bar, watch) = progress(&r, &buffer, start.visible + start.in_flight);
    let drained = match &r.local {
        Some(stack) => drain_locally(&r, stack).await,
        None => invoke_drainer(&r, now).await.map(|summary| (summary, None)),
    };
    watch.abort();
    bar.finish_and_clear();
    let (summary, target) = drained?;
    let left = depth(&r, &buffer)
        .await
        .map(|d| d.visible + d.in_flight)
        .ok();
    if let Some(flipped) = json {
        let mut out = summary.clone();
        out["buffer_left"] = json!(left);
        out["spigot"] = flipped;
        println!("{out}");
    } else {
        println!("{}", drain_sentence(&summary, target.as_deref(), left));
    }
    match drain_failure(&summary, left) {
        Some(why) => Err(CliError::Failed(anyhow::anyhow!(why))),
        None => Ok(()),
    }
}

/// A progress bar of `total` hooks, moved by the buffer's depth every 250 ms.
fn progress(
    r: &Resolved,
    buffer: &str,
    total: u64,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("drain {bar:30} {pos}/{len} delivered")
            .expect("valid template"),
    );
    let (r, moved, buffer) = (r.clone(), bar.clone(), buffer.to_string());
    let watch = tokio::spawn(async move {
        loop {
            if let Ok(d) = depth(&r, &buffer).await {
                moved.set_position(total.saturating_sub(d.visible + d.in_flight));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    });
    (bar, watch)
}

/// The local stack's drain, in this process: its summary and the target.
/// Ctrl-C stops it as it stops `spigot relay`: what is under way finishes
/// and is deleted, the rest goes back, and it says so.
async fn drain_locally(
    r: &Resolved,
    stack: &spigot_aws::local::LocalStack,
) -> Result<(serde_json::Value, Option<String>), CliError> {
    let url = stack.target.clone().ok_or_else(|| {
        CliError::Usage("the local stack names no target; restart `spigot dev` (make run)".into())
    })?;
    // Drain now and report: stragglers after ON are the dev drainer's; an
    // operator's explicit drain has no resume window locally.
    let mut drainer = crate::local::drainer(
        &r.sdk,
        stack,
        &url,
        std::time::Duration::from_secs(7),
        std::time::Duration::ZERO,
        std::time::Duration::ZERO,
    )?;
    drainer.stop = Some(spigot_agent::daemon::stop_on_signals());
    let summary = drainer.drain(None).await;
    if drainer.stopped() {
        return Err(CliError::Failed(anyhow::anyhow!(
            "interrupted: {} delivered (and deleted), {} released back to the buffer in order, {} retried later; nothing is delivered twice",
            hooks(summary.delivered),
            hooks(summary.released + summary.held),
            hooks(summary.retried)
        )));
    }
    Ok((serde_json::to_value(summary).unwrap_or_default(), Some(url)))
}

/// The deployed drainer, invoked now: its summary.
async fn invoke_drainer(r: &Resolved, now: bool) -> Result<serde_json::Value, CliError> {
    let function = r.need(Resource::DrainerFunction)?;
    let out = aws_sdk_lambda::Client::new(&r.sdk)
        .invoke()
        .function_name(function)
        .payload(aws_sdk_lambda::primitives::Blob::new(
            json!({ "now": now }).to_string().into_bytes(),
        ))
        .send()
        .await
        .with_context(|| format!("cannot invoke the drainer {function}"))?;
    if let Some(err) = out.function_error {
        return Err(CliError::Failed(anyhow::anyhow!(
            "the drainer failed: {err}"
        )));
    }
    Ok(out
        .payload
        .and_then(|p| serde_json::from_slice(p.as_ref()).ok())
        .unwrap_or_default())
}

/// "drained 12 hooks to http://…; 0 dead-lettered; buffer empty".
fn drain_sentence(summary: &serde_json::Value, target: Option<&str>, left: Option<u64>) -> String {
    let n = |k: &str| summary[k].as_u64().unwrap_or(0);
    let to = target.map(|t| format!(" to {t}")).unwrap_or_default();
    let left = match left {
        Some(0) => "buffer empty".to_string(),
        Some(n) => format!("{} still in the buffer", hooks(n)),
        None => "buffer depth unknown".to_string(),
    };
    format!(
        "drained {}{to}; {} dead-lettered; {left}",
        hooks(n("delivered")),
        n("dead_lettered")
    )
}

/// Why the drain did not do its job, in one sentence (`None`: it did).
fn drain_failure(summary: &serde_json::Value, left: Option<u64>) -> Option<String> {
    if let Some(why) = summary["skipped"].as_str() {
        return Some(format!("the drain did not run: {why}"));
    }
    let waiting = left
        .filter(|n| *n > 0)
        .map(|n| format!("; {} wait in the buffer", hooks(n)))
        .unwrap_or_default();
    match summary["stop"].as_str() {
        Some("Breaker") => Some(format!(
            "the drain stopped: the target failed {} times in a row (circuit breaker open){waiting}",
            summary["retried"].as_u64().unwrap_or(0)
        )),
        Some("BufferError") => Some(format!(
            "the drain stopped: the buffer could not be read{waiting}"
        )),
        // Hooks left behind after failed attempts: not "fine".
        _ if left.is_some_and(|n| n > 0) && summary["retried"].as_u64().unwrap_or(0) > 0 => {
            Some(format!(
                "{} failed and wait{} in backoff{}; the next attempt is in about {} s (the drainer retries on its schedule, or run this again then)",
                hooks(summary["retried"].as_u64().unwrap_or(0)),
                if summary["retried"].as_u64() == Some(1) {
                    "s"
                } else {
                    ""
                },
                waiting,
                summary["next_retry_secs"].as_u64().unwrap_or(0)
            ))
        }
        _ => None,
    }
}

pub(crate) async fn off(place: &Where, args: OffArgs) -> Result<(), CliError> {
    let (old, new) = flip(place, State::Off, args.json).await?;
    if args.json {
        println!("{}", json!({"from": old, "to": new.to_string()}));
    }
    // By design, and easy to forget during a maintenance window.
    eprintln!(
        "note: OFF holds the hooks for the target only; pipeline filters go on starting pipelines (and raising triggers) for pushes"
    );
    Ok(())
}

/// Depth of a queue.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub(crate) struct Depth {
    pub visible: u64,
    pub in_flight: u64,
}

pub(crate) async fn depth(r: &Resolved, url: &str) -> anyhow::Result<Depth> {
    let client = spigot_aws::aws_sdk_sqs::Client::new(&r.sdk);
    let (visible, in_flight) = spigot_aws::queue_depth(&client, url)
        .await
        .with_context(|| format!("cannot read the depth of {url}"))?;
    Ok(Depth { visible, in_flight })
}

/// The depth of queue `q`, when the stack names it.
async fn optional_depth(r: &Resolved, q: Resource) -> anyhow::Result<Option<Depth>> {
    match r.get(q) {
        Some(url) => Ok(Some(depth(r, url).await?)),
        None => Ok(None),
    }
}

/// Age in seconds of the oldest buffered hook, from CloudWatch's
/// `ApproximateAgeOfOldestMessage` (last 5 minutes). Never a receive: any
/// `ReceiveMessage`, even with visibility 0, raises the head message's receive
/// count towards the dead-letter threshold. `None` locally (moto keeps no SQS
/// metrics) and where CloudWatch cannot be read.
async fn oldest_age(r: &Resolved, url: &str) -> Option<u64> {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Statistic};
    if r.local.is_some() {
        return None;
    }
    let queue = url.rsplit('/').next()?;
    let now = std::time::SystemTime::now();
    let out = aws_sdk_cloudwatch::Client::new(&r.sdk)
        .get_metric_statistics()
        .namespace("AWS/SQS")
        .metric_name("ApproximateAgeOfOldestMessage")
        .dimensions(Dimension::builder().name("QueueName").value(queue).build())
        .start_time(DateTime::from(now - std::time::Duration::from_secs(300)))
        .end_time(DateTime::from(now))
        .period(60)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .ok()?;
    out.datapoints()
        .iter()
        .filter_map(|d| Some((d.timestamp()?.secs(), d.maximum()?)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, age)| age as u64)
}

pub(crate) async fn status(place: &Where, args: StatusArgs) -> Result<(), CliError> {
    if !args.watch {
        return status_once(place, &args).await;
    }
    let stop = spigot_agent::daemon::stop_on_signals();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut views = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if terminal {
            // Clear the screen and go home: a view that refreshes in place.
            print!("\x1b[2J\x1b[H");
        } else if views > 0 {
            println!();
        }
        println!(
            "spigot status at {} (every {:?}; Ctrl-C stops)",
            spigot_core::time::format_rfc3339(spigot_aws::now_ms() / 1000),
            args.every
        );
        if let Err(e) = status_once(place, &args).await {
            println!("{} {e}", crate::paint::error(crate::paint::on(false)));
        }
        views += 1;
        if args.count.is_some_and(|n| views >= n) {
            break;
        }
        spigot_agent::daemon::pause(&stop, args.every).await;
    }
    Ok(())
}

/// One view of the state, the queues and what blocks a repository.
/// Each blocked repository's head hook (`--wide`: when it is tried again),
/// and how to move one aside.
fn print_blocked(blocked: &[crate::blocked::Blocked], wide: bool) {
    let now = spigot_core::ports::Clock::now_ms(&spigot_core::ports::SystemClock);
    for b in blocked {
        println!("{:<20} {}", "blocked", crate::blocked::line(b, now));
        if wide {
            println!("{:<20} {}", "", crate::blocked::next_attempt(b, now));
        }
    }
    if let Some(b) = blocked.iter().find(|b| b.record.queue != "evaluation") {
        println!(
            "{:<20} spigot dlq aside --delivery {} (then `spigot dlq redrive` when it can go)",
            "to move one aside", b.record.delivery
        );
    }
}

async fn status_once(place: &Where, args: &StatusArgs) -> Result<(), CliError> {
    let r = place.resolve().await?;
    let state = shown(switch(&r)?.read().await)?;
    let buffer_url = r.need(Resource::BufferUrl)?;
    let buffer = depth(&r, buffer_url).await?;
    let oldest = if buffer.visible > 0 {
        oldest_age(&r, buffer_url).await
    } else {
        None
    };
    let dlq = optional_depth(&r, Resource::DlqUrl).await?;
    let eval = optional_depth(&r, Resource::EvalUrl).await?;
    let eval_dlq = optional_depth(&r, Resource::EvalDlqUrl).await?;
    let blocked = crate::blocked::blocked(&r).await?;
    if args.json {
        println!(
            "{}",
            json!({
                "state": state,
                "buffer": buffer,
                "oldest_buffered_seconds": oldest,
                "dead_letters": dlq,
                "eval": eval,
                "eval_dead_letters": eval_dlq,
                "blocked": blocked,
            })
        );
        return Ok(());
    }
    let show = |d: Option<Depth>| match d {
        Some(d) => format!("{} waiting, {} in flight", d.visible, d.in_flight),
        None => "unknown".into(),
    };
    println!(
        "{:<20} {}",
        "spigot",
        match state.as_deref() {
            Some(s) => crate::paint::state(s, crate::paint::on(false)),
            None => "unset (hooks buffer)".into(),
        }
    );
    println!("{:<20} {}", "buffer", show(Some(buffer)));
    if let Some(age) = oldest {
        println!("{:<20} {age} s", "oldest buffered");
    }
    println!("{:<20} {}", "dead letters", show(dlq));
    println!("{:<20} {}", "eval queue", show(eval));
    println!("{:<20} {}", "eval dead letters", show(eval_dlq));
    print_blocked(&blocked, args.wide);
    Ok(())
}
