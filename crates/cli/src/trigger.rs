//! `spigot trigger NAME`: raise a pull-deployment trigger (a new request in
//! the config bucket) and, with `--wait`, follow the agents' receipts until
//! each expected agent is done or failed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use spigot_aws::S3Triggers;
use spigot_core::ports::{Clock, SystemClock};
use spigot_core::resources::Resource;
use spigot_core::trigger::{self, FOLLOWING_MS, Receipt, Request, Status};

use crate::CliError;
use crate::resources::Where;

#[derive(clap::Args)]
pub(crate) struct TriggerArgs {
    /// The trigger (agents follow it with `spigot-agent --trigger NAME`); or
    /// `receipts`, followed by a trigger, to read the receipts of its newest
    /// request (`--request N`: of request N) without raising anything.
    name: String,
    /// The trigger whose receipts to read (after `receipts`).
    #[arg(hide = true)]
    receipts_of: Option<String>,
    /// With `receipts`: the request [default: the newest].
    #[arg(long)]
    request: Option<u64>,
    /// Data for the steps, as environment variables: KEY=VALUE, repeatable.
    #[arg(long = "data", value_name = "KEY=VALUE")]
    data: Vec<String>,
    /// Who asks [default: the AWS identity, else $USER].
    #[arg(long)]
    by: Option<String>,
    /// Raise through the stack's POST /trigger endpoint instead of the bucket
    /// (CI without AWS credentials): the TriggerUrl output, e.g.
    /// https://abc.execute-api.eu-west-1.amazonaws.com/live/trigger
    #[arg(long, requires = "secret", conflicts_with = "wait")]
    url: Option<String>,
    /// The trigger secret that signs the request (with --url; or SPIGOT_TRIGGER_SECRET).
    #[arg(long, env = "SPIGOT_TRIGGER_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Wait for the agents' receipts; exit 0 only when every expected agent is done.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "15m", value_parser = spigot_core::duration::parse, requires = "wait")]
    timeout: Duration,
    /// Wait for this many agents [default: those that reported on the trigger in the last day].
    #[arg(long, requires = "wait", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    agents: Option<u32>,
    /// How often to read the receipts while waiting.
    #[arg(long, default_value = "1s", value_parser = spigot_core::duration::parse, hide = true)]
    poll: Duration,
    /// One JSON object on stdout instead of lines.
    #[arg(long)]
    json: bool,
}

/// `spigot trigger receipts NAME`: what each agent said about one request.
async fn receipts(
    place: &Where,
    name: &str,
    request: Option<u64>,
    json: bool,
) -> Result<(), CliError> {
    trigger::check_name("trigger", name).map_err(|e| CliError::Usage(e.to_string()))?;
    let r = place.resolve().await?;
    let store = S3Triggers::new(spigot_aws::s3_client(&r.sdk), r.need(Resource::Bucket)?);
    let failed = |e: trigger::TriggerError| CliError::Failed(e.into());
    let sequence = match request {
        Some(n) => n,
        None => match trigger::head(&store, name).await.map_err(failed)? {
            Some((head, _)) => head.sequence,
            None => {
                return Err(CliError::Failed(anyhow::anyhow!(
                    "trigger {name} was never raised"
                )));
            }
        },
    };
    let found = trigger::receipts(&store, name, sequence)
        .await
        .map_err(failed)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&found.values().collect::<Vec<_>>()).unwrap_or_default()
        );
        return Ok(());
    }
    match trigger::request(&store, name, sequence)
        .await
        .map_err(failed)?
    {
        Some(Ok(req)) => println!(
            "{name} #{sequence}, raised {} by {}",
            req.raised_at,
            spigot_core::text::printable(&req.by)
        ),
        Some(Err(why)) => println!("{name} #{sequence}: unreadable ({why})"),
        None => {
            return Err(CliError::Failed(anyhow::anyhow!(
                "trigger {name} has no request {sequence}"
            )));
        }
    }
    if found.is_empty() {
        println!("no receipt yet");
    }
    for receipt in found.values() {
        print_receipt(receipt);
    }
    Ok(())
}

/// Who is asking: the caller's AWS identity, else the user's name.
pub(crate) async fn who(sdk: &spigot_aws::aws_config::SdkConfig) -> String {
    let sts = aws_sdk_sts::Client::new(sdk);
    let asked = tokio::time::timeout(Duration::from_secs(3), sts.get_caller_identity().send());
    if let Ok(Ok(id)) = asked.await
        && let Some(arn) = id.arn()
    {
        return arn.to_string();
    }
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub(crate) async fn run(place: &Where, args: TriggerArgs) -> Result<(), CliError> {
    if let (true, Some(of)) = (args.name == "receipts", &args.receipts_of) {
        return receipts(place, of, args.request, args.json).await;
    }
    if let Some(extra) = &args.receipts_of {
        return Err(CliError::Usage(format!(
            "unexpected {extra:?}: give one trigger, or `spigot trigger receipts NAME` to read receipts"
        )));
    }
    trigger::check_name("trigger", &args.name).map_err(|e| CliError::Usage(e.to_string()))?;
    let data = trigger::parse_data(args.data.iter().map(String::as_str))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(url) = &args.url {
        return raise_over_https(url, &args, data).await;
    }
    let r = place.resolve().await?;
    let store = S3Triggers::new(spigot_aws::s3_client(&r.sdk), r.need(Resource::Bucket)?);
    let by = match &args.by {
        Some(b) => b.clone(),
        None => who(&r.sdk).await,
    };
    let now = SystemClock.now_ms();
    // Known before the raise: the agents that follow the trigger.
    let known = if args.wait {
        trigger::agents_since(&store, &args.name, now.saturating_sub(FOLLOWING_MS))
            .await
            .map_err(|e| CliError::Failed(e.into()))?
    } else {
        Vec::new()
    };
    let request = trigger::raise(&store, &args.name, &by, data, now, &spigot_aws::random_id())
        .await
        .map_err(|e| CliError::Failed(e.into()))?;
    match args.wait {
        false if args.json => println!("{}", raised_json(&request)),
        _ if !args.json => println!(
            "raised {} #{} (by {})",
            request.trigger, request.sequence, request.by
        ),
        _ => {}
    }
    if !args.wait {
        return Ok(());
    }
    wait_for_agents(&store, &request, &known, &args).await
}

/// `--wait`: the receipts of the agents expected, reported; an error when
/// one failed or the wait timed out.
async fn wait_for_agents(
    store: &S3Triggers,
    request: &Request,
    known: &[String],
    args: &TriggerArgs,
) -> Result<(), CliError> {
    let expected = args.agents.map_or(known.len().max(1), |n| n as usize);
    if !args.json {
        let names = if known.is_empty() {
            "none reported on it in the last day".to_string()
        } else {
            known.join(", ")
        };
        println!(
            "waiting for {} ({names}); timeout {}",
            crate::words::count(expected as u64, "agent"),
            humanize(args.timeout)
        );
    }
    let (receipts, finished) = wait(store, request, known, expected, args).await?;
    let count = |status| receipts.values().filter(|r| r.status == status).count();
    let (done, failed) = (count(Status::Done), count(Status::Failed));
    let all_done = finished && done >= expected && failed == 0;
    if args.json {
        let mut out = raised_json(request);
        out["expected"] = json!(expected);
        out["agents"] = agents_json(known, &receipts);
        out["done"] = json!(all_done);
        out["timed_out"] = json!(!finished);
        println!("{out}");
    } else if finished {
        println!(
            "{} of {} done, {failed} failed",
            done,
            crate::words::count(expected as u64, "agent")
        );
    }
    if all_done {
        return Ok(());
    }
    let why = match finished {
        false => timed_out(known, &receipts, expected, args),
        true => format!(
            "{} of {} failed",
            crate::words::count(failed as u64, "agent"),
            expected
        ),
    };
    Err(CliError::Failed(anyhow::anyhow!(
        "trigger {} #{}: {why}",
        request.trigger,
        request.sequence
    )))
}

/// Every agent known or heard from: its receipt, or pending.
fn agents_json(known: &[String], receipts: &BTreeMap<String, Receipt>) -> serde_json::Value {
    json!(
        known
            .iter()
            .filter(|a| !receipts.contains_key(*a))
            .map(|a| json!({"agent": a, "status": "pending"}))
            .chain(receipts.values().map(|r| json!(r)))
            .collect::<Vec<_>>()
    )
}

/// Why a wait timed out: the agents still without a final receipt.
fn timed_out(
    known: &[String],
    receipts: &BTreeMap<String, Receipt>,
    expected: usize,
    args: &TriggerArgs,
) -> String {
    let waiting: Vec<String> = known
        .iter()
        .filter(|a| !receipts.get(*a).is_some_and(|r| r.status.is_final()))
        .map(|a| {
            let status = receipts.get(a).map_or(Status::Pending, |r| r.status);
            format!("{a} {}", status.as_str())
        })
        .collect();
    format!(
        "timed out after {} waiting for {}{}",
        humanize(args.timeout),
        crate::words::count(expected as u64, "agent"),
        if waiting.is_empty() {
            String::new()
        } else {
            format!(": {}", waiting.join(", "))
        }
    )
}

fn raised_json(r: &Request) -> serde_json::Value {
    json!({"trigger": r.trigger, "sequence": r.sequence, "by": r.by, "raised_at": r.raised_at, "data": r.data})
}

/// Reads the receipts until `expected` agents (the `known` ones, when they are
/// the expectation) reported done or failed, or the timeout; prints each change.
async fn wait(
    store: &S3Triggers,
    request: &Request,
    known: &[String],
    expected: usize,
    args: &TriggerArgs,
) -> Result<(BTreeMap<String, Receipt>, bool), CliError> {
    let deadline = Instant::now() + args.timeout;
    let mut shown: BTreeMap<String, Status> = BTreeMap::new();
    if !args.json {
        for a in known {
            println!("{a}: pending");
            shown.insert(a.clone(), Status::Pending);
        }
    }
    loop {
        let receipts = match trigger::receipts(store, &request.trigger, request.sequence).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the receipts; retrying");
                BTreeMap::new()
            }
        };
        for (agent, receipt) in &receipts {
            if shown.get(agent) != Some(&receipt.status) {
                shown.insert(agent.clone(), receipt.status);
                if !args.json {
                    print_receipt(receipt);
                }
            }
        }
        let finals = |r: &&Receipt| r.status.is_final();
        let finished = if args.agents.is_some() || known.is_empty() {
            receipts.values().filter(finals).count() >= expected
        } else {
            known
                .iter()
                .all(|a| receipts.get(a).is_some_and(|r| r.status.is_final()))
        };
        if finished {
            return Ok((receipts, true));
        }
        if Instant::now() >= deadline {
            return Ok((receipts, false));
        }
        tokio::time::sleep(
            args.poll
                .min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}

fn print_receipt(r: &Receipt) {
    let took = r
        .duration_ms
        .map(|ms| humanize(Duration::from_millis(ms)))
        .unwrap_or_default();
    match r.status {
        Status::Pending => println!("{}: pending", r.agent),
        Status::InProgress => {
            let again = if r.attempt > 1 {
                format!(" (attempt {})", r.attempt)
            } else {
                String::new()
            };
            println!("{}: in_progress{again}", r.agent);
        }
        Status::Done => println!(
            "{}: done in {took} ({})",
            r.agent,
            crate::words::count(r.steps.len() as u64, "step")
        ),
        Status::Skipped => println!("{}: skipped", r.agent),
        Status::Failed => {
            match &r.failed_step {
                Some(s) => println!(
                    "{}: failed at step {} ({}){}, after {took}: {}",
                    r.agent,
                    s.index,
                    s.kind,
                    s.exit_code
                        .map(|c| format!(", exit code {c}"))
                        .unwrap_or_default(),
                    spigot_core::text::printable(s.error.as_deref().unwrap_or(""))
                ),
                None => println!("{}: failed after {took}", r.agent),
            }
            for line in &r.output_tail {
                println!("  | {}", spigot_core::text::printable(line));
            }
        }
    }
    if let Some(note) = &r.note {
        println!("  ({})", spigot_core::text::printable(note));
    }
}

/// `POST {url}/{name}` signed with the trigger secret (X-Spigot-Signature
/// over the method, path, time, a fresh nonce and the body).
async fn raise_over_https(
    url: &str,
    args: &TriggerArgs,
    data: BTreeMap<String, String>,
) -> Result<(), CliError> {
    let secret = args.secret.as_deref().unwrap_or_default();
    let mut body = json!({ "data": data });
    if let Some(by) = &args.by {
        body["by"] = json!(by);
    }
    let body = body.to_string().into_bytes();
    let t = SystemClock.now_ms() / 1000;
    let signature = trigger::sign(
        secret.as_bytes(),
        &args.name,
        t,
        &spigot_aws::random_id(),
        &body,
    );
    let target = format!("{}/{}", url.trim_end_matches('/'), &args.name);
    let resp = spigot_aws::tls::http_client()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot build an HTTPS client: {e}")))?
        .post(&target)
        .header("Content-Type", "application/json")
        .header(trigger::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot POST {target}: {e}")))?;
    let status = resp.status().as_u16();
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    if status != 202 {
        return Err(CliError::Failed(anyhow::anyhow!(
            "{target} answered {status}: {}",
            answer["error"].as_str().unwrap_or("no reason given")
        )));
    }
    if args.json {
        println!("{answer}");
    } else {
        println!(
            "raised {} #{} (over {target})",
            &args.name,
            answer["sequence"].as_u64().unwrap_or(0)
        );
    }
    Ok(())
}

/// `1.2s`, `15m`, `2h`.
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}
