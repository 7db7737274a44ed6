//! `spigot filters list | put | delete | test`.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;
use spigot_aws::S3Filters;
use spigot_core::filter::{FilterSet, FilterSpec, PREFIX, is_filter_key, repository_prefix};
use spigot_core::ports::FilterStore;
use spigot_core::push::{Push, complete};

use crate::CliError;
use crate::resources::Where;
use spigot_core::resources::Resource;

#[derive(clap::Subcommand)]
pub(crate) enum FiltersCommand {
    /// List the filters in the config bucket.
    #[command(
        after_help = "Examples:\n  spigot filters list --local\n  spigot filters list --json"
    )]
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate a filter file and write it to the config bucket (nothing is written if it is invalid).
    #[command(after_help = "Example:\n  spigot filters put examples/filters/billing.json --local")]
    Put {
        /// The filter (JSON; the older GitHubRepo/... format is accepted).
        file: PathBuf,
        /// Overwrite a filter a CloudFormation stack declared (and owns).
        #[arg(long)]
        force: bool,
    },
    /// Delete a filter by key.
    #[command(
        after_help = "Example:\n  spigot filters delete filters/octo-org/mono/main/billing-service.json --local"
    )]
    #[command(
        after_help = "Examples:\n  spigot filters delete examples/filters/billing.json --local\n  spigot filters delete --pipeline billing-service --repo octo-org/mono\n  spigot filters delete filters/octo-org/mono/release%2F%2A/web.json"
    )]
    Delete {
        /// The key as `filters list` shows it, or the filter's file (its key is
        /// computed, percent-encoding and all).
        #[arg(required_unless_present = "pipeline")]
        key: Option<String>,
        /// Delete the filter that starts this pipeline (or `trigger:NAME`).
        #[arg(long, conflicts_with = "key")]
        pipeline: Option<String>,
        /// With --pipeline: only this repository's.
        #[arg(long, requires = "pipeline")]
        repo: Option<String>,
    },
    /// Dry run: which filters a push payload matches, and why. Starts nothing.
    #[command(
        after_help = "Examples:\n  spigot filters test --event examples/push-mono.json --filter examples/filters/billing.json --filter examples/filters/web.json\n  spigot filters test --event push.json --local"
    )]
    Test {
        /// A push payload (as GitHub sends it).
        #[arg(long)]
        event: PathBuf,
        /// Test these filter files instead of the bucket's filters.
        #[arg(long)]
        filter: Vec<PathBuf>,
        /// One JSON array of the decisions instead of text.
        #[arg(long)]
        json: bool,
        /// A push older than this many seconds (by its own push time) starts
        /// nothing, as the evaluator's MAX_PUSH_AGE; 0: no limit.
        #[arg(long, env = "MAX_PUSH_AGE", default_value_t = spigot_core::config::DEFAULT_MAX_PUSH_AGE)]
        max_push_age: u64,
    },
}

fn read(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

async fn store(place: &Where) -> Result<S3Filters, CliError> {
    let r = place.resolve().await?;
    Ok(S3Filters::new(
        spigot_aws::s3_client(&r.sdk),
        r.need(Resource::Bucket)?,
    ))
}

pub(crate) async fn run(place: &Where, cmd: FiltersCommand) -> Result<(), CliError> {
    match cmd {
        FiltersCommand::List { json } => list(place, json).await,
        FiltersCommand::Put { file, force } => put(place, &file, force).await,
        FiltersCommand::Delete {
            key,
            pipeline,
            repo,
        } => {
            let key = match (key, pipeline) {
                (Some(k), _) => key_of(&k)?,
                (None, Some(p)) => key_by_pipeline(place, &p, repo.as_deref()).await?,
                (None, None) => unreachable!("clap requires one"),
            };
            delete(place, &key).await
        }
        FiltersCommand::Test {
            event,
            filter,
            json,
            max_push_age,
        } => test(place, &event, &filter, json, max_push_age).await,
    }
}

async fn list(place: &Where, json: bool) -> Result<(), CliError> {
    let store = store(place).await?;
    let all = store.list(PREFIX).await.context("cannot list filters")?;
    if !json {
        println!(
            "{:<28} {:<20} {:<24} {:<7} KEY",
            "REPOSITORY", "BRANCH", "PIPELINE", "PATHS"
        );
    }
    if json {
        // One JSON array, as every listing's --json.
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|f| match FilterSpec::from_json(&f.bytes) {
                Ok(s) => {
                    json!({"key": f.key, "filter": serde_json::to_value(&s).unwrap_or_default()})
                }
                Err(e) => json!({"key": f.key, "error": e.to_string()}),
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    for f in &all {
        match FilterSpec::from_json(&f.bytes) {
            Ok(s) => println!(
                "{:<28} {:<20} {:<24} {:<7} {}",
                s.repository,
                s.branch,
                s.action().label(),
                format!("+{}/-{}", s.include.len(), s.exclude.len()),
                f.key
            ),
            Err(e) => println!("{:<28} {e}  {}", "(invalid)", f.key),
        }
    }
    println!("{}", crate::words::count(all.len() as u64, "filter"));
    Ok(())
}

async fn put(place: &Where, file: &PathBuf, force: bool) -> Result<(), CliError> {
    let invalid = |e: spigot_core::filter::FilterError| {
        CliError::Failed(anyhow::anyhow!("{}: {e}", file.display()))
    };
    // Ownership comes from the stack that declared a filter, never from a file.
    let mut spec = FilterSpec::from_json(&read(file)?).map_err(invalid)?;
    spec.owner_stack = None;
    let filter = spec.compile().map_err(invalid)?;
    let key = filter.spec.key();
    let store = store(place).await?;
    let owner = store
        .get(&key)
        .await
        .context("cannot read the filter it would replace")?
        .and_then(|bytes| FilterSpec::from_json(&bytes).ok())
        .and_then(|old| old.owner_stack);
    match owner {
        Some(stack) if !force => {
            return Err(CliError::Failed(anyhow::anyhow!(
                "{key} is owned by stack {stack} (a PipelineFilter custom resource): change it there, or give --force"
            )));
        }
        Some(stack) => {
            eprintln!("{key} was owned by stack {stack}; --force: replaced, now unowned")
        }
        None => {}
    }
    spigot_core::filter::admit(&store, &filter)
        .await
        .map_err(|e| CliError::Failed(anyhow::anyhow!("{}: {e}", file.display())))?;
    store
        .put(&key, filter.spec.to_json().into_bytes())
        .await
        .context("cannot write the filter")?;
    println!("{key}");
    Ok(())
}

/// A key as given, or the key of the filter in the file at that path.
fn key_of(given: &str) -> Result<String, CliError> {
    let path = std::path::Path::new(given);
    if is_filter_key(given) || !path.is_file() {
        return Ok(given.to_string());
    }
    let bytes = read(&path.to_path_buf())?;
    FilterSpec::from_json(&bytes)
        .map(|s| s.key())
        .map_err(|e| CliError::Usage(format!("{given}: {e}")))
}

/// The key of the one filter whose pipeline (or `trigger:NAME`) is `pipeline`.
async fn key_by_pipeline(
    place: &Where,
    pipeline: &str,
    repo: Option<&str>,
) -> Result<String, CliError> {
    let all = store(place)
        .await?
        .list(PREFIX)
        .await
        .context("cannot list filters")?;
    let keys: Vec<String> = all
        .iter()
        .filter_map(|f| Some((f.key.clone(), FilterSpec::from_json(&f.bytes).ok()?)))
        .filter(|(_, s)| s.action().label() == pipeline)
        .filter(|(_, s)| repo.is_none_or(|r| s.repository.eq_ignore_ascii_case(r)))
        .map(|(k, _)| k)
        .collect();
    match keys.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CliError::Failed(anyhow::anyhow!(
            "no filter starts {pipeline}{}",
            repo.map(|r| format!(" for {r}")).unwrap_or_default()
        ))),
        many => Err(CliError::Usage(format!(
            "{} filters start {pipeline}: {}; give --repo or the key",
            many.len(),
            many.join(", ")
        ))),
    }
}

async fn delete(place: &Where, key: &str) -> Result<(), CliError> {
    if !is_filter_key(key) {
        return Err(CliError::Usage(format!(
            "{key:?} is not a filter key (filters/{{owner}}/{{repo}}/{{branch}}/{{pipeline}}.json); see `spigot filters list`"
        )));
    }
    let store = store(place).await?;
    let found = store.get(key).await.context("cannot read the filter")?;
    if found.is_none() {
        return Err(CliError::Failed(anyhow::anyhow!("no filter at {key}")));
    }
    store
        .delete(key)
        .await
        .context("cannot delete the filter")?;
    println!("deleted {key}");
    Ok(())
}

/// The filters to test: the given files, else the bucket's filters of the push's repository.
async fn filters_for(
    place: &Where,
    repository: &str,
    files: &[PathBuf],
) -> Result<FilterSet, CliError> {
    let stored: Vec<(String, Vec<u8>)> = if files.is_empty() {
        store(place)
            .await?
            .list(&repository_prefix(repository))
            .await
            .context("cannot list filters")?
            .into_iter()
            .map(|f| (f.key, f.bytes))
            .collect()
    } else {
        files
            .iter()
            .map(|p| read(p).map(|b| (p.display().to_string(), b)))
            .collect::<Result<_, _>>()?
    };
    // Files given to test are what a CI check is about: a broken one fails
    // the check (exit 2). The bucket's are skipped as the evaluator skips them.
    let strict = !files.is_empty();
    let mut filters = Vec::new();
    for (name, bytes) in stored {
        match FilterSpec::from_json(&bytes).and_then(FilterSpec::compile) {
            Ok(f) => filters.push(f),
            Err(e) if strict => return Err(CliError::Usage(format!("{name}: {e}"))),
            Err(e) => eprintln!("skipping {name}: {e}"),
        }
    }
    let (set, unfit) = FilterSet::new(filters);
    for u in unfit {
        if strict {
            return Err(CliError::Usage(u.reason));
        }
        eprintln!("skipping {}", u.reason);
    }
    Ok(set)
}

async fn test(
    place: &Where,
    event: &PathBuf,
    files: &[PathBuf],
    json: bool,
    max_push_age: u64,
) -> Result<(), CliError> {
    let payload = read(event)?;
    let push =
        Push::parse(&payload).map_err(|e| CliError::Usage(format!("{}: {e}", event.display())))?;
    if too_old(&push, max_push_age, json) {
        return Ok(());
    }
    let set = filters_for(place, &push.repository, files).await?;
    // The evaluator's reasoning: an incomplete push asks the compare API
    // (GITHUB_TOKEN or GITHUB_TOKEN_SECRET_ARN, GITHUB_API_URL, or a GitHub App).
    let github = place.github().await?;
    let (push, how) = complete(github.as_ref(), push).await;
    // The push's text comes from outside: no terminal escapes on the screen.
    let branch = spigot_core::text::printable(push.branch().unwrap_or(&push.git_ref));
    let repository = spigot_core::text::printable(&push.repository);
    let decisions = set.evaluate(&push);
    if json {
        // One JSON array, as every listing's --json.
        let rows: Vec<serde_json::Value> = decisions
            .iter()
            .map(|d| {
                let f = &set.filters[d.filter].spec;
                json!({"pipeline": f.pipeline, "trigger": f.trigger, "start": d.start, "why": d.why.to_string(), "key": f.key()})
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "push to {repository}@{branch}: {} changed path(s), {how}",
        push.paths.len()
    );
    let for_this_branch = decisions.iter().filter(|d| {
        !matches!(
            d.why,
            spigot_core::filter::Why::OtherRepository | spigot_core::filter::Why::OtherBranch
        )
    });
    if for_this_branch.count() == 0 {
        println!("no filter for {repository}@{branch}");
    }
    for d in decisions {
        let f = &set.filters[d.filter].spec;
        println!(
            "{} {:<24} {}",
            if d.start { "START" } else { "skip " },
            f.action().label(),
            spigot_core::text::printable(&d.why.to_string())
        );
    }
    Ok(())
}

/// The evaluator's first rule: a push older than MAX_PUSH_AGE starts
/// nothing. True (and said) when `push` is that old.
fn too_old(push: &Push<'_>, max_push_age: u64, json: bool) -> bool {
    let now = spigot_aws::now_ms() / 1000;
    let Some(at) = push.pushed_at else {
        return false;
    };
    if max_push_age == 0 || now.saturating_sub(at) <= max_push_age {
        return false;
    }
    let why = format!(
        "too old (pushed {}, more than MAX_PUSH_AGE {max_push_age} s ago): the evaluator starts nothing for it",
        spigot_core::time::format_rfc3339(at)
    );
    if json {
        println!("{}", json!([{"start": false, "why": why}]));
    } else {
        println!(
            "push to {}@{}: {why}",
            spigot_core::text::printable(&push.repository),
            spigot_core::text::printable(push.branch().unwrap_or(&push.git_ref))
        );
    }
    true
}
