//! `spigot replay`: send archived hooks again, byte for byte, in their order
//! per repository: through the buffer (so the order, the rate limit, the
//! breaker and OFF apply) or straight to another target.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use spigot_aws::{HttpTarget, S3Payloads, SqsBuffer, SqsEvalQueue};
use spigot_core::archive::{Kept, REPLAY_HEADER, Step, What, kept};
use spigot_core::claim::stow;
use spigot_core::config::{EventPaths, Settings};
use spigot_core::delivery::Delivery;
use spigot_core::ports::{Buffer, EvalQueue, Target, Timeline};
use spigot_core::resources::Resource;
use spigot_core::webhook::Hook;
use spigot_core::{Secrets, Verifier};

use crate::CliError;
use crate::events::{archive, query, read};
use crate::resources::{Resolved, Where};

/// `spigot replay`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// Replay this repository's hooks (`owner/name`).
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    repo: Option<String>,
    /// Replay every repository's hooks.
    #[arg(long)]
    all: bool,
    /// Only this event (`push`, `pull_request`, ...).
    #[arg(long)]
    event: Option<String>,
    /// Received since: a duration ago (`10m`, `6h`) or a time (`2026-12-01T14:00Z`).
    #[arg(long)]
    since: String,
    /// Received before: a duration ago or a time [default: now].
    #[arg(long)]
    until: Option<String>,
    /// Only these delivery ids (repeat the flag, or separate with commas).
    #[arg(long = "delivery", value_delimiter = ',')]
    deliveries: Vec<String>,
    /// Deliver to this URL instead of through the buffer (another target;
    /// https unless --allow-http).
    #[arg(long)]
    to: Option<String>,
    /// Accept an http:// --to (a target inside your network).
    #[arg(long, requires = "to")]
    allow_http: bool,
    /// Also queue replayed pushes for pipeline evaluation (by default a
    /// replay starts no pipeline again). The evaluator's guards still apply
    /// (MAX_PUSH_AGE, a newer push already started).
    #[arg(long, conflicts_with = "to")]
    pipelines: bool,
    /// Replay hooks whose GitHub signature does not verify with the webhook
    /// secret in use (after a rotation). By default they are refused: the
    /// archive is a bucket prefix, and a hook Spigot never verified must not
    /// reach the target.
    #[arg(long)]
    unverified: bool,
    /// List what would be replayed; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Where replayed hooks go.
enum Destination {
    /// The buffer (and, with --pipelines, the evaluation queue).
    Buffer {
        buffer: SqsBuffer,
        payloads: Option<S3Payloads>,
        eval: Option<SqsEvalQueue>,
        run: String,
    },
    /// Another target.
    Target { target: HttpTarget, url: String },
}

/// What a replay did.
#[derive(Default)]
struct Outcome {
    replayed: Vec<String>,
    failed: Vec<(String, String)>,
}

pub(crate) async fn run(place: &Where, args: ReplayArgs) -> Result<(), CliError> {
    if let Some(to) = &args.to {
        crate::relay::check_to(to, args.allow_http)?;
    }
    let q = query(
        &args.since,
        args.until.as_deref(),
        args.repo.clone(),
        args.event.clone(),
    )?;
    let r = place.resolve().await?;
    let entries = read(&archive(&r)?, &q).await?;
    let wanted: HashSet<&str> = args.deliveries.iter().map(String::as_str).collect();
    let chosen: Vec<&Kept> = kept(&entries, &q)
        .into_iter()
        .filter(|k| wanted.is_empty() || wanted.contains(k.head.delivery.as_str()))
        .collect();
    let found: HashSet<&str> = chosen.iter().map(|k| k.head.delivery.as_str()).collect();
    let missing: Vec<&str> = args
        .deliveries
        .iter()
        .map(String::as_str)
        .filter(|d| !found.contains(d))
        .collect();
    if args.dry_run {
        return dry_run(&chosen, &missing, args.json);
    }
    let verifier = match args.unverified {
        true => None,
        false => Some(verifier(&r).await?),
    };
    let destination = destination(&r, &args)?;
    let by = crate::trigger::who(&r.sdk).await;
    let timeline = r.timeline();
    let mut outcome = replay(&chosen, &destination, verifier.as_ref(), &timeline, &by).await;
    for d in missing {
        let why = "not in the archive in that range (or not of that repository or event)";
        outcome.failed.push((d.to_string(), why.into()));
    }
    if let Err(e) = timeline.flush().await {
        eprintln!("warning: the replay's steps could not be recorded on the timeline: {e}");
    }
    report(&outcome, &destination, args.json)
}

fn destination(r: &Resolved, args: &ReplayArgs) -> Result<Destination, CliError> {
    if let Some(url) = &args.to {
        let target = HttpTarget::new(
            url,
            EventPaths::default(),
            spigot_core::config::origin(url),
            Duration::from_millis(Settings::default().forward_timeout_ms),
        )
        .map_err(|e| CliError::Usage(format!("--to {url}: {e}")))?;
        return Ok(Destination::Target {
            target,
            url: url.clone(),
        });
    }
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(&r.sdk);
    Ok(Destination::Buffer {
        buffer: SqsBuffer::new(
            sqs.clone(),
            r.need(Resource::BufferUrl)?,
            r.need(Resource::DlqUrl)?,
        ),
        payloads: r
            .get(Resource::Bucket)
            .map(|b| S3Payloads::new(spigot_aws::s3_client(&r.sdk), b)),
        eval: match args.pipelines {
            true => Some(SqsEvalQueue::new(sqs, r.need(Resource::EvalUrl)?)),
            false => None,
        },
        run: spigot_aws::random_id()[..12].to_string(),
    })
}

/// What checks an archived hook's GitHub signature: the webhook secret the
/// receiver verifies with (`WEBHOOK_SECRET`, else the stack's secret, else
/// the local stack's public test secret).
async fn verifier(r: &Resolved) -> Result<Verifier, CliError> {
    let text = match (std::env::var("WEBHOOK_SECRET").ok().filter(|s| !s.is_empty()), r.get(Resource::WebhookSecret)) {
        (Some(secret), _) => secret,
        (None, Some(arn)) => spigot_aws::fetch_secret(&r.sdk, arn).await.map_err(|e| {
            CliError::Failed(anyhow::anyhow!(
                "cannot read the webhook secret to check the archived signatures ({e}); --unverified replays without checking"
            ))
        })?,
        (None, None) if r.local.is_some() => crate::local::TEST_SECRET.to_string(),
        (None, None) => {
            return Err(CliError::Usage(
                "no webhook secret to check the archived signatures with: set WEBHOOK_SECRET, name the stack (output WebhookSecretArn), or pass --unverified".into(),
            ));
        }
    };
    let secrets =
        Secrets::parse(&text).map_err(|e| CliError::Usage(format!("the webhook secret: {e}")))?;
    Ok(Verifier::new(Some(secrets), false))
}

/// Sends each hook in turn; once one of a repository fails, that
/// repository's later hooks are not sent (they would overtake it).
async fn replay(
    chosen: &[&Kept],
    to: &Destination,
    verifier: Option<&Verifier>,
    timeline: &Timeline,
    by: &str,
) -> Outcome {
    let bar = ProgressBar::new(chosen.len() as u64).with_style(
        ProgressStyle::with_template("replay {bar:30} {pos}/{len} {msg}").expect("valid template"),
    );
    let mut outcome = Outcome::default();
    let mut stopped: HashSet<String> = HashSet::new();
    for kept in chosen {
        let head = &kept.head;
        let repository = head.repository.clone().unwrap_or_default();
        let result = if stopped.contains(&repository) {
            Err(format!(
                "not sent: an earlier hook of {repository} could not be replayed"
            ))
        } else {
            send(kept, to, verifier, timeline).await
        };
        match result {
            Ok(()) => {
                let where_to = match to {
                    Destination::Buffer { .. } => "buffer".to_string(),
                    Destination::Target { url, .. } => url.clone(),
                };
                timeline.note(step(
                    head.delivery.as_str(),
                    &repository,
                    &head.event,
                    What::Replayed {
                        by: by.to_string(),
                        to: where_to,
                    },
                ));
                outcome.replayed.push(head.delivery.clone());
            }
            Err(why) => {
                stopped.insert(repository);
                outcome.failed.push((head.delivery.clone(), why));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    outcome
}

fn step(delivery: &str, repository: &str, event: &str, what: What) -> Step {
    Step::of(spigot_aws::now_ms(), delivery, repository, event, what)
}

/// The archived hook again, byte for byte, with `X-Spigot-Replay` naming it;
/// its GitHub signature checked when `verifier` is given.
fn replayed(kept: &Kept, verifier: Option<&Verifier>) -> Result<Hook, String> {
    let mut hook = kept.hook().map_err(|e| e.to_string())?;
    if let Some(v) = verifier {
        let header = |name: &str| {
            hook.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        v.verify(&hook.body, header("x-hub-signature-256"), header("x-hub-signature"))
            .map_err(|e| {
                format!("its GitHub signature does not verify with the webhook secret ({e}): not written by Spigot, or the secret was rotated since (--unverified)")
            })?;
    }
    hook.headers
        .push((REPLAY_HEADER.to_string(), hook.delivery.clone()));
    Ok(hook)
}

async fn send(
    kept: &Kept,
    to: &Destination,
    verifier: Option<&Verifier>,
    timeline: &Timeline,
) -> Result<(), String> {
    let hook = replayed(kept, verifier)?;
    match to {
        Destination::Buffer {
            buffer,
            payloads,
            eval,
            run,
        } => {
            let copy = format!("replay-{run}");
            let mut env = stow(
                &hook,
                payloads.as_ref(),
                spigot_receiver::BUFFER_PAYLOADS,
                Settings::default().claim_check_bytes,
                &copy,
            )
            .await
            .map_err(|e| e.to_string())?;
            env.replay = Some(run.clone());
            buffer.send(&env).await.map_err(|e| e.to_string())?;
            if let (Some(eval), "push") = (eval, hook.event.as_str()) {
                eval.enqueue(&env).await.map_err(|e| {
                    format!("buffered, but not queued for pipeline evaluation: {e}")
                })?;
            }
            Ok(())
        }
        Destination::Target { target, .. } => {
            let started = Instant::now();
            let delivered = target.deliver(&hook).await;
            let ms = started.elapsed().as_millis() as u64;
            let repository = hook.repository.as_deref().unwrap_or("");
            let by = "replay".to_string();
            let (what, result) = match delivered {
                Delivery::Delivered(status) => (What::Delivered { by, status, ms }, Ok(())),
                Delivery::Retryable(f) | Delivery::Permanent(f) => (
                    What::Attempt {
                        by,
                        status: f.status,
                        ms,
                        error: f.reason.clone(),
                    },
                    Err(f.reason),
                ),
            };
            timeline.note(step(&hook.delivery, repository, &hook.event, what));
            result
        }
    }
}

fn dry_run(chosen: &[&Kept], missing: &[&str], json: bool) -> Result<(), CliError> {
    if json {
        let hooks: Vec<_> = chosen
            .iter()
            .map(|k| {
                json!({"delivery": k.head.delivery, "event": k.head.event,
                       "repository": k.head.repository, "received_at_ms": k.head.received_at_ms,
                       "bytes": k.head.bytes})
            })
            .collect();
        println!(
            "{}",
            json!({"dry_run": true, "would_replay": hooks, "missing": missing})
        );
    } else {
        for k in chosen {
            println!(
                "would replay {}  {}  {}  {}",
                spigot_core::time::format_rfc3339(k.head.received_at_ms / 1000),
                k.head.delivery,
                k.head.event,
                k.head.repository.as_deref().unwrap_or("-")
            );
        }
        for d in missing {
            println!("not found: {d}");
        }
        println!("{} hook(s) would be replayed (dry run)", chosen.len());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(anyhow::anyhow!(
            "{} delivery id(s) not in the archive in that range",
            missing.len()
        )))
    }
}

fn report(outcome: &Outcome, to: &Destination, json: bool) -> Result<(), CliError> {
    let where_to = match to {
        Destination::Buffer { run, .. } => format!("the buffer (replay {run})"),
        Destination::Target { url, .. } => url.clone(),
    };
    if json {
        let failed: Vec<_> = outcome
            .failed
            .iter()
            .map(|(d, why)| json!({"delivery": d, "error": why}))
            .collect();
        println!(
            "{}",
            json!({"replayed": outcome.replayed.len(), "deliveries": outcome.replayed,
                   "failed": failed, "to": where_to})
        );
    } else {
        for (d, why) in &outcome.failed {
            eprintln!("not replayed {d}: {why}");
        }
        println!(
            "replayed {} hook(s) to {where_to}; {} not replayed",
            outcome.replayed.len(),
            outcome.failed.len()
        );
    }
    if outcome.failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(anyhow::anyhow!(
            "{} hook(s) could not be replayed",
            outcome.failed.len()
        )))
    }
}
