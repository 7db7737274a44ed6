//! `spigot dlq list | redrive`: inspect and replay dead letters.

use std::collections::HashMap;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use spigot_aws::S3Payloads;
use spigot_aws::aws_sdk_sqs::Client;
use spigot_aws::aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use spigot_core::archive::{Step, What};
use spigot_core::envelope::Envelope;
use spigot_core::ports::{Bucket, PortErrorKind, Timeline};

use crate::CliError;
use crate::resources::{Resolved, Where};
use spigot_core::resources::Resource;

#[derive(clap::Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters: delivery, event, repository, reason, age.
    #[command(after_help = "Examples:\n  spigot dlq list --local\n  spigot dlq list --json")]
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// The evaluation queue's dead letters (pushes the evaluator gave up on).
        #[arg(long)]
        eval: bool,
    },
    /// Move dead letters back to the buffer (sent first, deleted after: an interrupted redrive duplicates, never loses).
    #[command(
        after_help = "Examples:\n  spigot dlq redrive --local\n  spigot dlq redrive --max 3\n  spigot dlq redrive --delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958"
    )]
    Redrive {
        /// Move at most this many.
        #[arg(long)]
        max: Option<usize>,
        /// Move only this delivery id.
        #[arg(long)]
        delivery: Option<String>,
        /// Use SQS StartMessageMoveTask where it is available: faster, but each
        /// letter keeps its own group, so letters of one repository are not
        /// redriven in their order (the default move loop keeps it).
        #[arg(long, conflicts_with = "no_move_task")]
        move_task: bool,
        /// The move loop (the default; kept for scripts).
        #[arg(long, hide = true)]
        no_move_task: bool,
        /// Seconds a dead letter stays hidden while the loop works on it (it reappears in the DLQ if the loop dies).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i32).range(1..=43_200))]
        hold: i32,
        /// The evaluation queue's dead letters, back to the evaluation queue.
        #[arg(long)]
        eval: bool,
    },
    /// One dead letter whole: why it is there, its headers and its body.
    #[command(
        after_help = "Examples:\n  spigot dlq show 72d3162e-cc78-11e3-81ab-4c9367dc0958 --local\n  spigot dlq show 72d3162e-cc78-11e3-81ab-4c9367dc0958 --json > letter.json"
    )]
    Show {
        /// Its delivery id (or SQS message id), as `dlq list` shows it.
        delivery: String,
        /// One JSON object (headers, body as text or base64).
        #[arg(long)]
        json: bool,
        /// The evaluation queue's dead letters.
        #[arg(long)]
        eval: bool,
    },
    /// Delete one dead letter for good: a poison hook nobody will want again.
    #[command(
        after_help = "Example:\n  spigot dlq delete 72d3162e-cc78-11e3-81ab-4c9367dc0958 --local"
    )]
    Delete {
        /// Its delivery id (or SQS message id), as `dlq list` shows it.
        delivery: String,
        /// The evaluation queue's dead letters.
        #[arg(long)]
        eval: bool,
    },
    /// Move a blocked repository's head hook (the one the target keeps
    /// refusing) to the dead-letter queue at its next attempt, so the
    /// repository goes on; `spigot status` names them.
    #[command(
        after_help = "Examples:\n  spigot dlq aside --delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958\n  spigot dlq aside --repo octo-org/web"
    )]
    Aside {
        /// The blocked hook's delivery id.
        #[arg(long, required_unless_present = "repo")]
        delivery: Option<String>,
        /// The blocked repository (its head hook).
        #[arg(long)]
        repo: Option<String>,
    },
}

/// How long `dlq list` keeps received dead letters hidden while it reads them.
const LIST_HOLD_SECONDS: i32 = 30;

struct Letter {
    message: Message,
    envelope: Option<Envelope>,
}

impl Letter {
    /// Why it is dead: Spigot's recorded reason, or (a letter SQS moved by itself
    /// after the buffer's maxReceiveCount) how many receives it took.
    fn reason(&self) -> String {
        if let Some(r) = self.attr("Reason") {
            return r;
        }
        if let Some(r) = self.envelope.as_ref().and_then(|e| e.last_error.clone()) {
            return r;
        }
        // This listing's own receive is one of them.
        let receives = self
            .message
            .attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|n| n.saturating_sub(1))
            .filter(|n| *n > 0);
        match receives {
            Some(n) => format!("moved by SQS after {n} receives (the buffer's maxReceiveCount); Spigot recorded no reason"),
            None => "moved by SQS after the buffer's maxReceiveCount of receives; Spigot recorded no reason".into(),
        }
    }

    fn attr(&self, name: &str) -> Option<String> {
        self.message
            .message_attributes
            .as_ref()?
            .get(name)?
            .string_value
            .clone()
    }
}

/// Receives everything receivable (holding it), so a scan sees each message once.
async fn receive_all(
    sqs: &Client,
    url: &str,
    limit: usize,
    hold: i32,
) -> anyhow::Result<Vec<Letter>> {
    let mut out = Vec::new();
    while out.len() < limit {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(hold)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .with_context(|| format!("cannot receive from {url}"))?
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            break;
        }
        out.extend(got.into_iter().map(|m| Letter {
            envelope: Envelope::decode(m.body.as_deref().unwrap_or_default()).ok(),
            message: m,
        }));
    }
    Ok(out)
}

async fn release(sqs: &Client, url: &str, letters: &[Letter]) {
    for l in letters {
        if let Some(r) = &l.message.receipt_handle {
            let _ = sqs
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(r)
                .visibility_timeout(0)
                .send()
                .await;
        }
    }
}

pub(crate) async fn run(place: &Where, cmd: DlqCommand) -> Result<(), CliError> {
    let r = place.resolve().await?;
    if let DlqCommand::Aside { delivery, repo } = &cmd {
        return aside(&r, delivery.as_deref(), repo.as_deref()).await;
    }
    let sqs = Client::new(&r.sdk);
    // The buffer's dead letters go back to the buffer; the evaluation queue's to it.
    let (from, to) = match cmd {
        DlqCommand::List { eval: true, .. }
        | DlqCommand::Redrive { eval: true, .. }
        | DlqCommand::Show { eval: true, .. }
        | DlqCommand::Delete { eval: true, .. } => (Resource::EvalDlqUrl, Resource::EvalUrl),
        _ => (Resource::DlqUrl, Resource::BufferUrl),
    };
    let dlq = r.need(from)?.to_string();
    let payloads = r
        .get(Resource::Bucket)
        .map(|b| S3Payloads::new(spigot_aws::s3_client(&r.sdk), b));
    match cmd {
        DlqCommand::Aside { .. } => Ok(()), // answered above
        DlqCommand::List { json, .. } => list(&sqs, &dlq, json).await,
        DlqCommand::Show { delivery, json, .. } => {
            show(&sqs, &dlq, &delivery, json, payloads.as_ref()).await
        }
        DlqCommand::Delete { delivery, .. } => delete(&sqs, &dlq, &delivery).await,
        DlqCommand::Redrive {
            max,
            delivery,
            move_task: server_side,
            hold,
            ..
        } => {
            let buffer = r.need(to)?.to_string();
            // The timeline follows hooks to the target: a push back to the
            // evaluation queue is not a step of its delivery.
            let timeline = match to {
                Resource::BufferUrl => r.timeline(),
                _ => Timeline::default(),
            };
            // Who redrives is asked only when it is recorded.
            let by = match timeline.is_on() {
                true => crate::trigger::who(&r.sdk).await,
                false => String::new(),
            };
            let queues = Queues {
                sqs: &sqs,
                dlq: &dlq,
                buffer: &buffer,
                payloads: payloads.as_ref(),
                timeline,
                by,
            };
            redrive_command(&queues, max, delivery.as_deref(), server_side, hold).await
        }
    }
}

/// `dlq redrive`: SQS's move task when asked for everything with
/// `--move-task` (where SQS has it), else the move loop, its moves recorded.
async fn redrive_command(
    queues: &Queues<'_>,
    max: Option<usize>,
    delivery: Option<&str>,
    server_side: bool,
    hold: i32,
) -> Result<(), CliError> {
    if max.is_none() && delivery.is_none() && server_side {
        match move_task(queues.sqs, queues.dlq, queues.buffer).await {
            Ok(handle) => {
                println!("started SQS message move task {handle} (DLQ -> buffer)");
                return Ok(());
            }
            Err(e) => {
                tracing::info!(error = %e, "StartMessageMoveTask unavailable; using the move loop")
            }
        }
    }
    let redriven = redrive(queues, max, delivery, hold).await;
    if let Err(e) = queues.timeline.flush().await {
        eprintln!("warning: the redrives could not be recorded on the timeline: {e}");
    }
    redriven
}

/// `dlq aside`: the blocked head hook goes to the DLQ at its next attempt.
async fn aside(r: &Resolved, delivery: Option<&str>, repo: Option<&str>) -> Result<(), CliError> {
    let by = crate::trigger::who(&r.sdk).await;
    let hook = crate::blocked::aside(r, delivery, repo, &by).await?;
    println!(
        "{} ({}, {} failed attempts) goes to the dead-letter queue at its next attempt (when its backoff ends: at most {} s, unless the target asked for longer); then {} goes on. `spigot dlq redrive --delivery {}` brings it back.",
        hook.record.delivery,
        hook.record.event,
        hook.record.attempts,
        spigot_engine::policy::MAX_BACKOFF_SECONDS,
        hook.record.repository,
        hook.record.delivery
    );
    Ok(())
}

async fn list(sqs: &Client, dlq: &str, json: bool) -> Result<(), CliError> {
    let letters = receive_all(sqs, dlq, 10_000, LIST_HOLD_SECONDS).await?;
    let now = spigot_aws::now_ms();
    let rows: Vec<serde_json::Value> = letters
        .iter()
        .map(|l| {
            let sent: Option<u64> = l
                .message
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|v| v.parse().ok());
            let e = l.envelope.as_ref();
            json!({
                "delivery": e.map(|e| e.delivery.clone()),
                "event": e.map(|e| e.event.clone()),
                "repository": e.and_then(|e| e.repository.clone()),
                "reason": l.reason(),
                "status": l.attr("Status"),
                "age_seconds": sent.map(|s| now.saturating_sub(s) / 1000),
                "message_id": l.message.message_id,
            })
        })
        .collect();
    release(sqs, dlq, &letters).await;
    if json {
        // One JSON array, as every listing's --json.
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<38} {:<14} {:<28} {:>7}  REASON",
        "DELIVERY", "EVENT", "REPOSITORY", "AGE"
    );
    for row in &rows {
        // Untrusted text (a delivery header, a target's answer): no terminal escapes.
        let s = |k: &str| spigot_core::text::printable(row[k].as_str().unwrap_or("-"));
        println!(
            "{:<38} {:<14} {:<28} {:>6}s  {}",
            s("delivery"),
            s("event"),
            s("repository"),
            row["age_seconds"]
                .as_u64()
                .map(|a| a.to_string())
                .unwrap_or("-".into()),
            s("reason")
        );
    }
    println!("{} dead letter(s)", rows.len());
    Ok(())
}

/// Receives every dead letter and takes out the one with delivery (or
/// message) id `id`; the others are released at once.
async fn take_one(sqs: &Client, dlq: &str, id: &str) -> Result<Letter, CliError> {
    let mut letters = receive_all(sqs, dlq, REDRIVE_LIMIT, LIST_HOLD_SECONDS).await?;
    let at = letters.iter().position(|l| {
        l.envelope.as_ref().is_some_and(|e| e.delivery == id)
            || l.message.message_id.as_deref() == Some(id)
    });
    let found = at.map(|i| letters.remove(i));
    release(sqs, dlq, &letters).await;
    found.ok_or_else(|| {
        CliError::Failed(anyhow::anyhow!(
            "no dead letter has delivery id {id} (see `spigot dlq list`)"
        ))
    })
}

/// `dlq show`: the letter's reason, headers and body; it stays in the queue.
async fn show(
    sqs: &Client,
    dlq: &str,
    id: &str,
    json: bool,
    payloads: Option<&S3Payloads>,
) -> Result<(), CliError> {
    let letter = take_one(sqs, dlq, id).await?;
    release(sqs, dlq, std::slice::from_ref(&letter)).await;
    let Some(env) = &letter.envelope else {
        return Err(CliError::Failed(anyhow::anyhow!(
            "dead letter {id} is not an envelope (a poison message): {}",
            spigot_core::text::printable(letter.message.body.as_deref().unwrap_or(""))
        )));
    };
    let body = match env.inline_body() {
        Ok(Some(bytes)) => Some(bytes),
        Ok(None) => match (payloads, env.claim_key()) {
            (Some(store), Some(key)) => {
                use spigot_core::ports::Bucket;
                store.get(key).await.ok()
            }
            _ => None,
        },
        Err(_) => None,
    };
    match json {
        true => println!("{}", letter_json(&letter, env, body.as_deref())),
        false => print_letter(&letter, env, body.as_deref()),
    }
    Ok(())
}

/// A dead letter whole, as one JSON object (the body as text, or base64).
fn letter_json(letter: &Letter, env: &Envelope, body: Option<&[u8]>) -> serde_json::Value {
    use base64::Engine as _;
    let body_json = match body {
        Some(b) => match std::str::from_utf8(b) {
            Ok(t) => json!({"text": t}),
            Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)}),
        },
        None => json!(null),
    };
    json!({
        "delivery": env.delivery, "event": env.event, "repository": env.repository,
        "reason": letter.reason(), "attempts": env.attempts,
        "received": spigot_core::time::format_rfc3339(env.received_at_ms / 1000),
        "headers": env.headers, "body": body_json,
    })
}

/// A dead letter whole, for people. Everything here came from outside:
/// printed without control characters.
fn print_letter(letter: &Letter, env: &Envelope, body: Option<&[u8]>) {
    let p = spigot_core::text::printable;
    println!("delivery    {}", p(&env.delivery));
    println!("event       {}", p(&env.event));
    println!(
        "repository  {}",
        p(env.repository.as_deref().unwrap_or("-"))
    );
    println!(
        "received    {}",
        spigot_core::time::format_rfc3339(env.received_at_ms / 1000)
    );
    println!("attempts    {}", env.attempts);
    println!("reason      {}", p(&letter.reason()));
    println!();
    for (k, v) in &env.headers {
        println!("{}: {}", p(k), p(v));
    }
    println!();
    match body {
        Some(b) => {
            for line in String::from_utf8_lossy(b).lines() {
                println!("{}", p(line));
            }
        }
        None => println!(
            "(the body is not readable here: {})",
            env.claim_key()
                .map(|k| format!("claim-checked at {k}, and the bucket could not be read"))
                .unwrap_or_else(|| "it does not decode".into())
        ),
    }
}

/// `dlq delete`: the letter is removed for good.
async fn delete(sqs: &Client, dlq: &str, id: &str) -> Result<(), CliError> {
    let letter = take_one(sqs, dlq, id).await?;
    sqs.delete_message()
        .queue_url(dlq)
        .receipt_handle(letter.message.receipt_handle.clone().unwrap_or_default())
        .send()
        .await
        .with_context(|| format!("cannot delete dead letter {id}"))?;
    let e = letter.envelope.as_ref();
    println!(
        "deleted dead letter {} ({}, {}); it cannot be redriven now{}",
        spigot_core::text::printable(id),
        e.map_or("-".into(), |e| e.event.clone()),
        e.and_then(|e| e.repository.clone())
            .unwrap_or_else(|| "-".into()),
        if e.is_some_and(|e| e.claim_key().is_some()) {
            "; its claim-checked body expires with the bucket's lifecycle rule"
        } else {
            ""
        }
    );
    Ok(())
}

async fn queue_arn(sqs: &Client, url: &str) -> anyhow::Result<String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .context("the queue has no ARN")
}

/// Server-side redrive (SQS StartMessageMoveTask); errors where it is not available.
async fn move_task(sqs: &Client, dlq: &str, buffer: &str) -> anyhow::Result<String> {
    let out = sqs
        .start_message_move_task()
        .source_arn(queue_arn(sqs, dlq).await?)
        .destination_arn(queue_arn(sqs, buffer).await?)
        .send()
        .await?;
    Ok(out.task_handle.unwrap_or_default())
}

/// `ApproximateNumberOfMessages` of the DLQ.
async fn dlq_depth(sqs: &Client, dlq: &str) -> Result<u64, CliError> {
    let (waiting, _) = spigot_aws::queue_depth(sqs, dlq)
        .await
        .context("cannot read the DLQ depth")?;
    Ok(waiting)
}

/// What a redrive did so far.
#[derive(Default)]
struct Moves {
    moved: usize,
    /// Received but not moved (not wanted, over --max, or failed): released at the end.
    kept: Vec<Letter>,
    failed: HashMap<String, String>,
}

/// Where a redrive moves letters from and to.
struct Queues<'a> {
    sqs: &'a Client,
    dlq: &'a str,
    buffer: &'a str,
    /// Claim-checked bodies get a copy of their own on the way back.
    payloads: Option<&'a S3Payloads>,
    /// Where each redrive is recorded, and by whom.
    timeline: Timeline,
    by: String,
}

async fn redrive(
    q: &Queues<'_>,
    max: Option<usize>,
    only: Option<&str>,
    hold: i32,
) -> Result<(), CliError> {
    let (sqs, dlq) = (q.sqs, q.dlq);
    let total = dlq_depth(sqs, dlq).await?;
    let goal = max.map(|m| (m as u64).min(total)).unwrap_or(total);
    let bar = ProgressBar::new(goal).with_style(
        ProgressStyle::with_template("redrive {bar:30} {pos}/{len} {msg}").expect("valid template"),
    );
    let full = |m: &Moves| max.is_some_and(|max| m.moved >= max);
    // Every letter first (each is in a group of its own), oldest first: the
    // letters of a repository rejoin its group in the order they arrived.
    let mut letters = receive_all(sqs, dlq, REDRIVE_LIMIT, hold).await?;
    letters.sort_by_key(|l| {
        l.envelope
            .as_ref()
            .map_or((u64::MAX, 0), |e| (e.received_at_ms, e.attempts))
    });
    let mut moves = Moves::default();
    let mut held_since = std::time::Instant::now();
    let mut rest = letters.into_iter();
    while let Some(letter) = rest.next() {
        // The letters still waiting stay hidden while the others move.
        if held_since.elapsed().as_secs_f64() > f64::from(hold) / 2.0 {
            let waiting: Vec<Letter> = rest.collect();
            keep_hidden(sqs, dlq, std::iter::once(&letter).chain(&waiting), hold).await;
            rest = waiting.into_iter();
            held_since = std::time::Instant::now();
        }
        let wanted =
            only.is_none_or(|id| letter.envelope.as_ref().is_some_and(|e| e.delivery == id));
        if !wanted || full(&moves) {
            moves.kept.push(letter);
            continue;
        }
        match move_one(q, &letter).await {
            Ok(()) => {
                moves.moved += 1;
                bar.inc(1);
            }
            Err(e) => {
                let id = letter.message.message_id.clone().unwrap_or_default();
                moves.failed.insert(id, e.to_string());
                moves.kept.push(letter);
            }
        }
    }
    bar.finish_and_clear();
    release(sqs, dlq, &moves.kept).await;
    report(&moves, total)?;
    match only {
        // Asked for one delivery that is not there: not "fine".
        Some(id) if moves.moved == 0 && moves.failed.is_empty() => Err(CliError::Failed(
            anyhow::anyhow!("no dead letter has delivery id {id} (see `spigot dlq list`)"),
        )),
        _ => Ok(()),
    }
}

/// Dead letters a redrive reads at once (and orders).
const REDRIVE_LIMIT: usize = 10_000;

/// Hides `letters` for `hold` seconds more (best effort: one that reappears is
/// received again by a later redrive; moves are send-then-delete, never lost).
async fn keep_hidden<'a>(
    sqs: &Client,
    dlq: &str,
    letters: impl Iterator<Item = &'a Letter>,
    hold: i32,
) {
    for l in letters {
        let _ = sqs
            .change_message_visibility()
            .queue_url(dlq)
            .receipt_handle(l.message.receipt_handle.clone().unwrap_or_default())
            .visibility_timeout(hold)
            .send()
            .await;
    }
}

fn report(moves: &Moves, total: u64) -> Result<(), CliError> {
    println!(
        "moved {} dead letter(s) to the buffer; {} left in the DLQ",
        moves.moved,
        total.saturating_sub(moves.moved as u64)
    );
    for (id, e) in &moves.failed {
        eprintln!("not moved {id}: {e}");
    }
    if moves.failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(anyhow::anyhow!(
            "{} dead letter(s) could not be moved",
            moves.failed.len()
        )))
    }
}

/// Send a copy to the buffer first (fresh deduplication id, its own copy of a
/// claim-checked body), then delete the dead letter.
async fn move_one(q: &Queues<'_>, letter: &Letter) -> anyhow::Result<()> {
    let body = letter.message.body.clone().unwrap_or_default();
    let (body, group, dedup) = match &letter.envelope {
        Some(e) => {
            let mut e = e.clone();
            e.resend(None);
            copy_claim(q.payloads, &mut e).await?;
            (e.encode(), e.group_id(), e.dedup_id())
        }
        // Not an envelope (a poison message): moved as it is, so nothing is lost.
        None => {
            let id = letter.message.message_id.clone().unwrap_or_default();
            (body, "poison".to_string(), format!("redrive-{id}"))
        }
    };
    q.sqs
        .send_message()
        .queue_url(q.buffer)
        .message_body(body)
        .message_group_id(group)
        .message_deduplication_id(dedup)
        .send()
        .await
        .context("cannot send to the buffer")?;
    q.sqs
        .delete_message()
        .queue_url(q.dlq)
        .receipt_handle(letter.message.receipt_handle.clone().unwrap_or_default())
        .send()
        .await
        .context("sent to the buffer but cannot delete from the DLQ (it will be redriven twice)")?;
    if let Some(e) = &letter.envelope {
        let what = What::Redriven { by: q.by.clone() };
        let repository = e.repository.as_deref().unwrap_or("");
        let at = spigot_aws::now_ms();
        q.timeline
            .note(Step::of(at, &e.delivery, repository, &e.event, what));
    }
    Ok(())
}

/// Points a redriven claim-checked envelope at a copy of its own, so that an
/// interrupted redrive's two copies never share one object. A body already
/// gone stays referenced as it is: the drainer dead-letters it with that reason.
async fn copy_claim(payloads: Option<&S3Payloads>, e: &mut Envelope) -> anyhow::Result<()> {
    let Some(store) = payloads else {
        return Ok(());
    };
    let before = e.clone();
    let Some((old, new)) = e.recheck_body(&format!("redrive-{}", e.attempts)) else {
        return Ok(());
    };
    match store.copy(&old, &new).await {
        Ok(()) => Ok(()),
        Err(err) if err.kind == PortErrorKind::NotFound => {
            *e = before;
            Ok(())
        }
        Err(err) => Err(anyhow::Error::new(err).context("cannot copy the claim-check payload")),
    }
}
