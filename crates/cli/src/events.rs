//! `spigot events`: what happened to recent hooks, and to one of them.

use serde_json::json;
use spigot_aws::S3Archive;
use spigot_core::archive::{Entry, Query, Row, Step, What, rows, timeline};
use spigot_core::resources::Resource;
use spigot_core::time::format_rfc3339;

use crate::CliError;
use crate::resources::{Resolved, Where};

/// `spigot events` (a table of recent hooks, or one hook's timeline).
#[derive(Debug, clap::Args)]
pub(crate) struct EventsArgs {
    /// Only this repository (`owner/name`).
    #[arg(long)]
    repo: Option<String>,
    /// Only this event (`push`, `pull_request`, ...).
    #[arg(long)]
    event: Option<String>,
    /// Received since: a duration ago (`10m`, `6h`, `7d`) or a time
    /// (`2026-12-01T14:00Z`).
    #[arg(long, default_value = "1d")]
    since: String,
    /// Received before: a duration ago or a time [default: now].
    #[arg(long)]
    until: Option<String>,
    /// The whole timeline of this delivery id (received within --since).
    #[arg(long)]
    delivery: Option<String>,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// The archive keeps at most this long (the `ArchiveDays` maximum).
const MAX_LOOKBACK_DAYS: u64 = 3650;

/// Milliseconds since the epoch of `text`: a duration ago (`10m`; a unit is
/// required) or an RFC 3339 time (seconds may be left out: `2026-12-01T14:00Z`).
pub(crate) fn parse_moment(text: &str, now_ms: u64) -> Result<u64, String> {
    let t = text.trim();
    if t.len() >= 10 && t.as_bytes()[4] == b'-' {
        // `YYYY-MM-DDTHH:MMZ` has no seconds: RFC 3339 wants them.
        let full = match t.get(16..) {
            Some(rest)
                if t.len() >= 16
                    && t.as_bytes().get(13) == Some(&b':')
                    && !rest.starts_with(':') =>
            {
                format!("{}:00{rest}", &t[..16])
            }
            _ => t.to_string(),
        };
        return spigot_core::time::parse_rfc3339(&full)
            .map(|s| s.saturating_mul(1000))
            .ok_or_else(|| {
                format!("{text:?} is not a time: give 2026-12-01T14:00Z or a duration such as 10m")
            });
    }
    let ago = spigot_core::duration::parse_with_unit(text).map_err(|e| e.to_string())?;
    if ago.as_secs() > MAX_LOOKBACK_DAYS * 86_400 {
        return Err(format!("{text:?} is further back than the archive keeps"));
    }
    Ok(now_ms.saturating_sub(ago.as_millis() as u64))
}

/// The range and filters of `--since/--until/--repo/--event`.
pub(crate) fn query(
    since: &str,
    until: Option<&str>,
    repo: Option<String>,
    event: Option<String>,
) -> Result<Query, CliError> {
    let now = spigot_aws::now_ms();
    let since_ms =
        parse_moment(since, now).map_err(|e| CliError::Usage(format!("--since: {e}")))?;
    let until_ms = until
        .map(|u| parse_moment(u, now))
        .transpose()
        .map_err(|e| CliError::Usage(format!("--until: {e}")))?;
    if until_ms.is_some_and(|u| u <= since_ms) {
        return Err(CliError::Usage("--until is not after --since".into()));
    }
    Ok(Query {
        repository: repo,
        event,
        since_ms,
        until_ms,
    })
}

/// The archive of the resolved stack, or why there is none.
pub(crate) fn archive(r: &Resolved) -> Result<S3Archive, CliError> {
    if r.get(Resource::ArchiveStream).is_none() {
        return Err(CliError::Failed(anyhow::anyhow!(
            "this stack keeps no archive (ArchiveDays 0, or no output ArchiveStream): nothing was kept to show or replay"
        )));
    }
    Ok(S3Archive::new(&r.sdk, r.need(Resource::Bucket)?))
}

/// Every record of `query`'s range, saying on stderr which objects could not be read.
pub(crate) async fn read(archive: &S3Archive, query: &Query) -> Result<Vec<Entry>, CliError> {
    let until = query.until_ms.unwrap_or_else(spigot_aws::now_ms);
    let found = archive
        .read(query.since_ms, until, query.repository.as_deref())
        .await
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot read the archive: {e}")))?;
    for (key, problem) in &found.problems {
        eprintln!("warning: {key}: {problem}; the records after it are not shown");
    }
    Ok(found.entries)
}

pub(crate) async fn run(place: &Where, args: EventsArgs) -> Result<(), CliError> {
    let query = query(&args.since, args.until.as_deref(), args.repo, args.event)?;
    let r = place.resolve().await?;
    let entries = read(&archive(&r)?, &query).await?;
    match &args.delivery {
        Some(delivery) => show_timeline(&entries, delivery, args.json),
        None => {
            show_rows(&rows(&entries, &query), args.json);
            Ok(())
        }
    }
}

fn show_rows(rows: &[Row], json: bool) {
    if json {
        println!("{}", json!(rows));
        return;
    }
    if rows.is_empty() {
        println!("no hook received in that range");
        return;
    }
    println!(
        "{:<20}  {:<36}  {:<14}  {:<28}  {:<13}  ATTEMPTS",
        "TIME", "DELIVERY", "EVENT", "REPOSITORY", "OUTCOME"
    );
    for r in rows {
        println!(
            "{:<20}  {:<36}  {:<14}  {:<28}  {:<13}  {}{}",
            format_rfc3339(r.at_ms / 1000),
            r.delivery,
            r.event,
            r.repository,
            r.outcome,
            r.attempts,
            if r.replays > 0 {
                format!(" (replayed {}x)", r.replays)
            } else {
                String::new()
            }
        );
    }
    println!("{} hook(s)", rows.len());
}

fn show_timeline(entries: &[Entry], delivery: &str, json: bool) -> Result<(), CliError> {
    let steps = timeline(entries, delivery);
    if steps.is_empty() {
        return Err(CliError::Failed(anyhow::anyhow!(
            "no step of delivery {delivery} in that range (widen it with --since)"
        )));
    }
    if json {
        println!("{}", json!(steps));
        return Ok(());
    }
    for step in &steps {
        println!(
            "{}  {:<13}  {}",
            format_rfc3339(step.at_ms / 1000),
            step.name(),
            detail(step)
        );
    }
    Ok(())
}

/// One line about a step.
fn detail(step: &Step) -> String {
    match &step.what {
        What::Received { bytes } => format!(
            "{} of {} ({bytes} bytes, signature verified)",
            step.event, step.repository
        ),
        What::Forwarded { status, ms } => format!("live to the target: {status} in {ms} ms"),
        What::Buffered { why } => format!("into the buffer: {why}"),
        What::Attempt {
            by,
            status,
            ms,
            error,
        } => match status {
            Some(s) => format!("{by}: {s} in {ms} ms ({error})"),
            None => format!("{by}: failed after {ms} ms ({error})"),
        },
        What::Delivered { by, status, ms } => format!("{by}: {status} in {ms} ms"),
        What::DeadLettered { by, reason } => format!("{by}: {reason}"),
        What::Redriven { by } => format!("back to the buffer by {by}"),
        What::Replayed { by, to } => format!("to {to} by {by}"),
        What::Pipeline { name, started, why } => {
            let verb = if *started { "started" } else { "not started" };
            format!("{name} {verb}: {why}")
        }
        What::Duplicate => {
            "taken already within DEDUPE_WINDOW: answered 200, not taken again".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_durations_ago_or_times_and_bare_numbers_are_refused() {
        let now = 1_796_140_800_000; // 2026-12-01T16:00:00Z
        assert_eq!(parse_moment("10m", now), Ok(now - 600_000));
        assert_eq!(
            parse_moment("2026-12-01T14:00Z", now),
            Ok(1_796_133_600_000)
        );
        assert_eq!(
            parse_moment("2026-12-01T14:00:30Z", now),
            Ok(1_796_133_630_000)
        );
        assert!(parse_moment("2", now).unwrap_err().contains("no unit"));
        assert!(parse_moment("2026-13-01T14:00Z", now).is_err());
        assert!(parse_moment("99999d", now).is_err());
    }
}
