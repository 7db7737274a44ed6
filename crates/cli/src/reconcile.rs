//! `spigot reconcile`: the reconciler's run from the command line — list the
//! deliveries GitHub failed to make to Spigot and ask GitHub to redeliver them.

use indicatif::{ProgressBar, ProgressStyle};
use spigot_aws::S3Payloads;
use spigot_core::ports::{Clock, SystemClock};
use spigot_core::reconcile::{Action, HookSource, MAX_WINDOW_SECS, Options, Report, reconcile};
use spigot_core::resources::Resource;

use crate::CliError;
use crate::resources::Where;

#[derive(clap::Args)]
pub(crate) struct ReconcileArgs {
    /// How far back to look: 90m, 2h, 3d (GitHub keeps deliveries 3 days).
    #[arg(long, default_value = "2h", value_parser = parse_since)]
    since: u64,
    /// List the failed deliveries; redeliver nothing.
    #[arg(long)]
    dry_run: bool,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Redeliver at most this many (the rest are left for the next run).
    #[arg(long, env = "RECONCILE_MAX", default_value_t = spigot_core::reconcile::DEFAULT_MAX as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max: u64,
    /// The hooks: org/ORG/HOOK_ID, repo/OWNER/NAME/HOOK_ID or app, comma-separated.
    #[arg(long, env = "GITHUB_HOOKS", value_name = "LIST")]
    hooks: String,
}

/// `90m`, `2h`, `3d` or `600s` (a unit is required), at most 3 days.
fn parse_since(text: &str) -> Result<u64, String> {
    let secs = spigot_core::duration::parse_with_unit(text)
        .map_err(|e| e.to_string())?
        .as_secs();
    if secs == 0 || secs > MAX_WINDOW_SECS {
        return Err(format!(
            "{text:?} is outside 1s..3d: GitHub keeps deliveries 3 days"
        ));
    }
    Ok(secs)
}

/// The run's progress, hidden for machines and dry runs.
fn progress_bar(hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("reconcile {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    if hidden {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// No hook's deliveries could be read: why, naming the API once.
fn unreachable_github(report: &spigot_core::reconcile::Report) -> CliError {
    let github = std::env::var("GITHUB_API_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "https://api.github.com".into());
    CliError::Failed(anyhow::anyhow!(
        "no hook's deliveries could be read from {github} ({}); check the network and GITHUB_API_URL, then run it again",
        report
            .hook_errors
            .iter()
            .map(|e| e.replace(&github, "the API"))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

pub(crate) async fn run(place: &Where, args: ReconcileArgs) -> Result<(), CliError> {
    let hooks = HookSource::parse_list(&args.hooks).map_err(|e| CliError::Usage(e.to_string()))?;
    let github = place.github().await?.ok_or_else(|| {
        CliError::Usage(
            "no GitHub credentials: set GITHUB_TOKEN (or GITHUB_TOKEN_SECRET_ARN), or GITHUB_APP_ID with GITHUB_APP_KEY_SECRET_ARN and GITHUB_APP_INSTALLATION_ID".into(),
        )
    })?;
    // The bucket keeps what was redelivered, shared with the scheduled reconciler.
    let r = place.resolve().await?;
    let state = r
        .get(Resource::Bucket)
        .map(|b| S3Payloads::new(spigot_aws::s3_client(&r.sdk), b));
    if state.is_none() && !args.dry_run {
        eprintln!(
            "warning: no config bucket known: what this run redelivers is not remembered (pass --local, --stack or --bucket)"
        );
    }
    let now = SystemClock.now_ms() / 1000;
    let options = Options {
        hooks,
        since: now.saturating_sub(args.since),
        now,
        max: args.max as usize,
        dry_run: args.dry_run,
        // The operator's --since is the window asked for.
        resume: false,
    };
    let bar = progress_bar(args.json || args.dry_run);
    let report = reconcile(&github, state.as_ref(), &options, |f, total| {
        bar.set_length(total as u64);
        bar.set_message(f.delivery.guid.clone());
        bar.inc(1);
    })
    .await;
    bar.finish_and_clear();
    let report = report.map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    // Nothing could be read: nothing reassuring is printed, only why.
    if !args.json && report.hook_errors.len() == options.hooks.len() {
        return Err(unreachable_github(&report));
    }
    if args.json {
        println!("{}", json(&report, args.since));
    } else {
        print_table(&report, now, args.since);
    }
    if !report.hook_errors.is_empty() {
        return Err(CliError::Failed(anyhow::anyhow!(
            "{}",
            report.hook_errors.join("; ")
        )));
    }
    if report.count(|a| matches!(a, Action::Error { .. })) > 0 {
        return Err(CliError::Failed(anyhow::anyhow!(
            "GitHub refused some redeliveries (see the table)"
        )));
    }
    Ok(())
}

fn json(report: &Report, since: u64) -> serde_json::Value {
    serde_json::json!({
        "since_seconds": since,
        "listed": report.listed,
        "failed": report.failed,
        "redelivered": report.redelivered(),
        "skipped": report.skipped(),
        "left": report.count(|a| matches!(a, Action::Left)),
        "unrecovered": report.unrecovered(),
        "hook_errors": report.hook_errors,
    })
}

/// `45s`, `12m`, `2h`, `1h30m`, `3d`.
fn span(s: u64) -> String {
    let two = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => two(s / 3_600, "h", s % 3_600 / 60, "m"),
        _ => two(s / 86_400, "d", s % 86_400 / 3_600, "h"),
    }
}

/// `12m ago`.
fn ago(now: u64, at: u64) -> String {
    format!("{} ago", span(now.saturating_sub(at)))
}

fn action(a: &Action, now: u64) -> String {
    match a {
        Action::Redelivered => "redelivered".into(),
        Action::WouldRedeliver => "would redeliver".into(),
        Action::Skipped { at } => format!("skipped (redelivered {})", ago(now, *at)),
        Action::Left => "left for the next run".into(),
        Action::Error { error } => format!("error: {error}"),
    }
}

fn print_table(report: &Report, now: u64, since: u64) {
    let window = span(since);
    if report.failed.is_empty() {
        println!(
            "no failed deliveries in the last {window} ({} listed)",
            report.listed
        );
        return;
    }
    println!(
        "{:<36}  {:<14}  {:<28}  {:>6}  {:<10}  ACTION",
        "GUID", "EVENT", "REPOSITORY", "STATUS", "WHEN"
    );
    for f in &report.failed {
        let d = &f.delivery;
        let event = match &d.action {
            Some(a) => format!("{}.{a}", d.event),
            None => d.event.clone(),
        };
        println!(
            "{:<36}  {:<14}  {:<28}  {:>6}  {:<10}  {}",
            d.guid,
            event,
            d.repository.as_deref().unwrap_or("-"),
            d.status_code,
            ago(now, d.delivered_at),
            action(&f.action, now)
        );
    }
    let left = report.count(|a| matches!(a, Action::Left));
    let verb = if report.count(|a| matches!(a, Action::WouldRedeliver)) > 0 {
        "would redeliver"
    } else {
        "redelivered"
    };
    println!(
        "{} failed in the last {window} ({} deliveries listed): {verb} {}, skipped {}, left {left}{}",
        report.failed.len(),
        report.listed,
        report.redelivered(),
        report.skipped(),
        if left > 0 {
            " (raise --max or run again)"
        } else {
            ""
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_durations_up_to_three_days() {
        assert_eq!(parse_since("2h"), Ok(7_200));
        assert_eq!(parse_since("90m"), Ok(5_400));
        assert_eq!(parse_since("3d"), Ok(259_200));
        assert_eq!(parse_since("600s"), Ok(600));
        // A bare number is refused (2 what?), saying so.
        assert!(parse_since("600").unwrap_err().contains("no unit"));
        assert!(parse_since("4d").unwrap_err().contains("3 days"));
        assert!(parse_since("2w").is_err());
        assert!(parse_since("0").is_err());
        assert!(parse_since("h").is_err());
        assert_eq!(
            [span(45), span(7_200), span(5_400), span(259_200)],
            ["45s", "2h", "1h30m", "3d"]
        );
    }
}
