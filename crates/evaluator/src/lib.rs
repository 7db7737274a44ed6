//! The evaluator: SQS batch of push events → pipeline filters → StartPipelineExecution.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::{AwsError, CodePipelines, GitHubApi, S3Filters, S3Payloads};
use spigot_core::archive::{Step, What};
use spigot_core::claim::{DENIED_READS, OpenError, Opened, dead_letter, open, poison_letter};
use spigot_core::config::Settings;
use spigot_core::envelope::Envelope;
use spigot_core::filter::{
    Action, Filter, FilterSet, FilterSpec, execution_token, repository_prefix,
};
use spigot_core::metrics::Metrics;
use spigot_core::ports::{
    Bucket, Clock, EvalLetters, FilterStore, GitHub, MetricsSink, NoLetters, NoTriggers, Pipelines,
    PortErrorKind, Received, Start, StartError, StdoutMetrics, SystemClock, Timeline, Triggers,
};
use spigot_core::push::{Completion, Push, complete};
use spigot_core::resources::Resource;
use spigot_core::trigger::{self, TriggerError};
use spigot_core::webhook::Hook;
use spigot_engine::attempts;

/// The evaluator on AWS adapters.
pub type AwsEvaluator = Evaluator<
    S3Filters,
    CodePipelines,
    S3Payloads,
    GitHubApi,
    spigot_aws::SqsEvalLetters,
    spigot_aws::S3Triggers,
>;
/// The environment the template gives the evaluator (every variable its
/// settings read when deployed; `tests/tests/template.rs` checks the template sets exactly these).
pub const ENVIRONMENT: &[&str] = &[
    "CONFIG_BUCKET",
    "FILTER_CACHE_SECONDS",
    "MAX_PUSH_AGE",
    "GITHUB_API_URL",
    "GITHUB_TOKEN_SECRET_ARN",
    "GITHUB_APP_ID",
    "GITHUB_APP_KEY_SECRET_ARN",
    "GITHUB_APP_INSTALLATION_ID",
    "EVAL_DLQ_URL",
    "ARCHIVE_STREAM",
];

/// The evaluator of a deployment: filters and payloads in `CONFIG_BUCKET`, CodePipeline.
/// With GitHub credentials, incomplete pushes get their files from the compare API.
pub async fn build(sdk: &SdkConfig, settings: &Settings) -> Result<AwsEvaluator, AwsError> {
    let bucket = settings.require(Resource::Bucket)?;
    let s3 = spigot_aws::s3_client(sdk);
    let mut evaluator = Evaluator::new(
        S3Filters::new(s3.clone(), bucket),
        CodePipelines::new(spigot_aws::aws_sdk_codepipeline::Client::new(sdk)),
        Some(S3Payloads::new(s3, bucket)),
        Duration::from_secs(settings.filter_cache_seconds),
    );
    evaluator.max_push_age = Duration::from_secs(settings.max_push_age);
    evaluator.github = GitHubApi::from_settings(sdk, settings).await?;
    evaluator.timeline = spigot_aws::FirehoseArchive::timeline(sdk, &settings.resources);
    Ok(evaluator
        .with_letters(spigot_aws::SqsEvalLetters::from_settings(sdk, settings))
        .with_triggers(Some(spigot_aws::S3Triggers::new(
            spigot_aws::s3_client(sdk),
            bucket,
        ))))
}

/// Counts of one batch (also the EMF metrics).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Push events evaluated.
    pub pushes: u64,
    /// Filters evaluated.
    pub filters_evaluated: u64,
    /// Pipelines started.
    pub started: u64,
    /// Pipelines a dry run would have started (`spigot dev` without CodePipeline): not counted as started.
    pub would_start: u64,
    /// Starts refused because the pipeline does not exist (not retried).
    pub not_found: u64,
    /// Invalid filter objects skipped.
    pub invalid_filters: u64,
    /// Records left for SQS to retry.
    pub retried: u64,
    /// Records that are not envelopes or not pushes.
    pub unreadable: u64,
    /// Pushes older than `MAX_PUSH_AGE` (a replayed body), not evaluated.
    pub too_old: u64,
    /// Incomplete pushes whose files came from the compare API.
    pub compared: u64,
    /// Incomplete pushes matched on repository and branch alone (the compare API could not help).
    pub fallbacks: u64,
    /// Records held back behind a failed push of their group (retried with it).
    pub held: u64,
    /// Starts skipped because a newer push of the branch already started the pipeline.
    pub superseded: u64,
    /// Reads S3 refused (403: a claim-check body or a start record), metric `StoreDenied`.
    pub denied: u64,
    /// Pushes given up on after [`EVAL_ATTEMPTS`] and sent to the evaluation DLQ.
    pub dead_lettered: u64,
    /// Triggers raised (a filter's `Trigger`), for the agents that follow them.
    pub raised: u64,
}

/// Evaluation attempts of a push before the evaluator dead-letters it itself
/// (its repository's later pushes then go on). The queue's maxReceiveCount is
/// only a backstop: it also counts receives of pushes held behind a failing one.
pub const EVAL_ATTEMPTS: u32 = 5;

/// The evaluator and its ports: `F` filters, `C` CodePipeline, `P` the
/// bucket's payloads (as everywhere), `G` GitHub, `L` the evaluation
/// dead-letter queue, `T` triggers.
pub struct Evaluator<F, C, P, G, L = NoLetters, T = NoTriggers> {
    /// Filter objects.
    pub filters: F,
    /// CodePipeline.
    pub pipelines: C,
    /// Claim-check payloads.
    pub payloads: Option<P>,
    /// How long a repository's compiled filters stay cached.
    pub cache_ttl: Duration,
    /// Where each batch's EMF metrics go.
    pub metrics: Arc<dyn MetricsSink>,
    /// Pushes older than this (by the payload's own push time) start nothing.
    pub max_push_age: Duration,
    /// Now, for the push age.
    pub clock: Arc<dyn Clock>,
    /// GitHub's compare API, for pushes whose payload does not list every changed file.
    pub github: Option<G>,
    /// The evaluation dead-letter queue, for pushes given up on after [`EVAL_ATTEMPTS`].
    pub letters: Option<L>,
    /// Where filters with a `Trigger` raise it (the config bucket's `triggers/`).
    pub triggers: Option<T>,
    /// Where each pipeline started or skipped is recorded (off unless set).
    pub timeline: Timeline,
    cache: Mutex<HashMap<String, Cached>>,
}

/// A repository's compiled filters, when they were loaded, and how many were invalid.
struct Cached {
    at: Instant,
    set: Arc<FilterSet>,
    invalid: u64,
}

enum Failure {
    Retry(String),
    Unreadable(String),
}

impl<F, C, P, G> Evaluator<F, C, P, G> {
    /// An evaluator with an empty cache (no evaluation dead-letter queue).
    pub fn new(filters: F, pipelines: C, payloads: Option<P>, cache_ttl: Duration) -> Self {
        Self {
            filters,
            pipelines,
            payloads,
            cache_ttl,
            metrics: Arc::new(StdoutMetrics),
            max_push_age: Duration::from_secs(spigot_core::config::DEFAULT_MAX_PUSH_AGE),
            clock: Arc::new(SystemClock),
            github: None,
            letters: None,
            triggers: None,
            timeline: Timeline::default(),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl<F, C, P, G, T> Evaluator<F, C, P, G, NoLetters, T> {
    /// The same evaluator, dead-lettering through `letters`.
    pub fn with_letters<L>(mut self, letters: Option<L>) -> Evaluator<F, C, P, G, L, T> {
        let triggers = self.triggers.take();
        self.with_outlets(letters, triggers)
    }
}

impl<F, C, P, G, L> Evaluator<F, C, P, G, L, NoTriggers> {
    /// The same evaluator, raising the triggers that filters name in `triggers`.
    pub fn with_triggers<T>(mut self, triggers: Option<T>) -> Evaluator<F, C, P, G, L, T> {
        let letters = self.letters.take();
        self.with_outlets(letters, triggers)
    }
}

impl<F, C, P, G, L, T> Evaluator<F, C, P, G, L, T> {
    /// The same evaluator with these dead-letter queue and trigger store.
    fn with_outlets<L2, T2>(
        self,
        letters: Option<L2>,
        triggers: Option<T2>,
    ) -> Evaluator<F, C, P, G, L2, T2> {
        Evaluator {
            filters: self.filters,
            pipelines: self.pipelines,
            payloads: self.payloads,
            cache_ttl: self.cache_ttl,
            metrics: self.metrics,
            max_push_age: self.max_push_age,
            clock: self.clock,
            github: self.github,
            letters,
            triggers,
            timeline: self.timeline,
            cache: self.cache,
        }
    }
}

impl<F: FilterStore, C: Pipelines, P: Bucket, G: GitHub, L: EvalLetters, T: Triggers>
    Evaluator<F, C, P, G, L, T>
{
    /// Handles a batch; records to retry are returned as `batchItemFailures`.
    /// The queue is FIFO, grouped by repository: once a record fails, the later
    /// records of its group are returned unprocessed, so pushes start in order.
    pub async fn handle(&self, event: SqsEvent) -> (SqsBatchResponse, Stats) {
        let mut stats = Stats::default();
        let mut response = SqsBatchResponse::default();
        let mut held_groups: Vec<String> = Vec::new();
        for record in &event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let group = record.attributes.get("MessageGroupId").cloned();
            let retry = |response: &mut SqsBatchResponse| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id.clone();
                response.batch_item_failures.push(failure);
            };
            if group.as_ref().is_some_and(|g| held_groups.contains(g)) {
                stats.held += 1;
                retry(&mut response);
                continue;
            }
            match self.record(record, &mut stats).await {
                Ok(()) => {}
                Err(Failure::Retry(why)) => {
                    if self.give_up(record, &why, &mut stats).await {
                        continue;
                    }
                    tracing::warn!(message = %id, %why, "evaluation will be retried, and its group's later pushes with it");
                    stats.retried += 1;
                    retry(&mut response);
                    held_groups.extend(group);
                }
                Err(Failure::Unreadable(why)) => {
                    // Not retried: retrying cannot make it readable. Logged and counted.
                    tracing::error!(message = %id, %why, "unreadable evaluation record dropped");
                    stats.unreadable += 1;
                }
            }
        }
        if let Err(e) = self.timeline.flush().await {
            tracing::warn!(error = %e, "cannot record this batch's pipeline steps on the timeline");
        }
        let m = Metrics::new("evaluator")
            .count("FiltersEvaluated", stats.filters_evaluated)
            .count("PipelinesStarted", stats.started)
            .count("PipelinesWouldStart", stats.would_start)
            .count("PipelineNotFound", stats.not_found)
            .count("InvalidFilters", stats.invalid_filters)
            .count("TooOld", stats.too_old)
            .count("Superseded", stats.superseded)
            .count("ComparedPushes", stats.compared)
            .count("CompareFallbacks", stats.fallbacks)
            .count("StoreDenied", stats.denied)
            .count("DeadLettered", stats.dead_lettered)
            .count("TriggersRaised", stats.raised)
            .count("Errors", stats.retried + stats.unreadable);
        self.metrics.emit(&m, SystemClock.now_ms());
        (response, stats)
    }

    /// After its [`EVAL_ATTEMPTS`]th failed evaluation (its own count, not the
    /// receive count, which holds behind another push also raise), a push goes
    /// to the evaluation DLQ with the reason: true when it did (it is then done
    /// here, and its repository's later pushes go on).
    async fn give_up(&self, record: &SqsMessage, why: &str, stats: &mut Stats) -> bool {
        let m = Received {
            message_id: record.message_id.clone().unwrap_or_default(),
            receipt: String::new(),
            body: record.body.clone().unwrap_or_default(),
            receive_count: record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
            group: String::new(),
            sent_ms: 0,
        };
        let prior = attempts::prior(self.payloads.as_ref(), &m).await.attempts;
        let (true, Some(letters)) = (prior + 1 >= EVAL_ATTEMPTS, &self.letters) else {
            let failed =
                attempts::Record::of(&m, "evaluation", prior + 1, why, SystemClock.now_ms());
            attempts::record(self.payloads.as_ref(), &m, &failed).await;
            return false;
        };
        let reason = format!(
            "gave up after {} evaluation attempts; last: {why}",
            prior + 1
        );
        let letter = match Envelope::decode(&m.body) {
            Ok(env) => dead_letter(env, reason.clone(), None),
            Err(_) => poison_letter(&m, reason.clone()),
        };
        match letters.dead_letter(&letter).await {
            Ok(()) => {
                tracing::error!(message = %m.message_id, %reason, "push dead-lettered; its repository's later pushes go on");
                attempts::clear(self.payloads.as_ref(), &m).await;
                stats.dead_lettered += 1;
                true
            }
            Err(e) => {
                tracing::error!(message = %m.message_id, error = %e, "cannot dead-letter the push; retrying it");
                false
            }
        }
    }

    async fn record(&self, record: &SqsMessage, stats: &mut Stats) -> Result<(), Failure> {
        let opened = self.open(record, stats).await?;
        let hook = &opened.hook;
        let payload = hook
            .payload()
            .map_err(|e| Failure::Unreadable(e.to_string()))?;
        let push = Push::parse(&payload).map_err(|e| Failure::Unreadable(e.to_string()))?;
        stats.pushes += 1;
        if let Some(age) = self.age(&push)
            && age > self.max_push_age
        {
            // A signed body replayed long after GitHub sent it: never restart pipelines for it.
            tracing::warn!(delivery = %hook.delivery, repository = %push.repository, age_seconds = age.as_secs(), "push older than MAX_PUSH_AGE; not evaluated");
            let why = format!("older than MAX_PUSH_AGE ({} s)", age.as_secs());
            self.note(hook, "*", false, why);
            stats.too_old += 1;
            return Ok(());
        }
        let (push, how) = complete(self.github.as_ref(), push).await;
        match &how {
            Completion::Payload => {}
            Completion::CompareApi(n) => {
                stats.compared += 1;
                tracing::info!(delivery = %hook.delivery, files = n, "files from the compare API");
            }
            Completion::Fallback(why) => {
                stats.fallbacks += 1;
                tracing::warn!(delivery = %hook.delivery, %why, "matching on repository and branch alone");
            }
        }
        let set = self.filter_set(&push.repository, stats).await?;
        self.start_matching(hook, &opened.sha256, &push, &set, stats)
            .await?;
        if let (Some(store), Some(key)) = (&self.payloads, opened.claim) {
            let _ = store.delete(&key).await;
        }
        Ok(())
    }

    /// Where the push time of the newest start of `pipeline` (an action's
    /// label: a pipeline, or `trigger:NAME`) from a branch is kept.
    fn start_key(pipeline: &str, push: &Push<'_>) -> Option<String> {
        push.pushed_at?;
        let branch = push.branch()?;
        Some(format!(
            "{}{}/{}/{}",
            spigot_core::layout::STARTS,
            pipeline,
            spigot_core::envelope::sha256_hex(push.repository.as_bytes()),
            spigot_core::envelope::sha256_hex(branch.as_bytes())
        ))
    }

    /// True when a push newer than `push` already started `pipeline` from its branch.
    async fn superseded(&self, pipeline: &str, push: &Push<'_>) -> bool {
        let (Some(store), Some(key), Some(at)) = (
            &self.payloads,
            Self::start_key(pipeline, push),
            push.pushed_at,
        ) else {
            return false;
        };
        let newest = match store.get(&key).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).trim().parse::<u64>().ok(),
            Err(e) if e.kind == PortErrorKind::Denied => {
                tracing::error!(%pipeline, error = %e, "S3 refused to read the start record (403: the role needs s3:ListBucket for prefix starts/); starting as if no newer push had");
                None
            }
            Err(_) => None,
        };
        newest.is_some_and(|newest| newest > at)
    }

    /// Remembers that `push` started `pipeline` (best effort).
    async fn record_start(&self, pipeline: &str, push: &Push<'_>) {
        let (Some(store), Some(key), Some(at)) = (
            &self.payloads,
            Self::start_key(pipeline, push),
            push.pushed_at,
        ) else {
            return;
        };
        if let Err(e) = store.put(&key, at.to_string().into_bytes()).await {
            tracing::warn!(%pipeline, error = %e, "cannot record the start's push time");
        }
    }

    /// How long ago the push happened, by the payload's own time (`None`: it does not say).
    fn age(&self, push: &Push<'_>) -> Option<Duration> {
        let pushed = push.pushed_at?;
        let now = self.clock.now_ms() / 1000;
        Some(Duration::from_secs(now.saturating_sub(pushed)))
    }

    /// The push hook of a record (its body read back from the claim-check store if need be).
    /// A body S3 refuses to read (403) is retried for [`DENIED_READS`] receives,
    /// then dropped with that reason: it must not drag its repository's later
    /// pushes into the dead-letter queue with it.
    async fn open(&self, record: &SqsMessage, stats: &mut Stats) -> Result<Opened, Failure> {
        let env = Envelope::decode(record.body.as_deref().unwrap_or_default())
            .map_err(|e| Failure::Unreadable(e.to_string()))?;
        let receives: u32 = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let opened = open(&env, self.payloads.as_ref())
            .await
            .map_err(|e| match e {
                OpenError::Retry(why) => Failure::Retry(why),
                OpenError::Permanent(why) => Failure::Unreadable(why),
                OpenError::Denied(why) => {
                    stats.denied += 1;
                    tracing::error!(delivery = %env.delivery, %why, receives, "claim-check read refused");
                    if receives >= DENIED_READS {
                        Failure::Unreadable(format!("{why} ({receives} reads refused)"))
                    } else {
                        Failure::Retry(why)
                    }
                }
            })?;
        if opened.hook.event != "push" {
            return Err(Failure::Unreadable(format!(
                "event {} is not a push",
                opened.hook.event
            )));
        }
        Ok(opened)
    }

    /// Notes on the timeline that `hook` started `name` or not, and why.
    fn note(&self, hook: &Hook, name: &str, started: bool, why: String) {
        let repository = hook.repository.as_deref().unwrap_or("");
        let what = What::Pipeline {
            name: name.to_string(),
            started,
            why,
        };
        let at = self.clock.now_ms();
        self.timeline
            .note(Step::of(at, &hook.delivery, repository, &hook.event, what));
    }

    /// Starts every pipeline (raises every trigger) whose filter matches; a
    /// retryable failure retries the whole record.
    async fn start_matching(
        &self,
        hook: &Hook,
        body_sha256: &str,
        push: &Push<'_>,
        set: &FilterSet,
        stats: &mut Stats,
    ) -> Result<(), Failure> {
        let mut retry = None;
        for decision in set.evaluate(push) {
            stats.filters_evaluated += 1;
            let filter = &set.filters[decision.filter];
            let action = filter.spec.action();
            let label = action.label();
            if !decision.start {
                tracing::debug!(delivery = %hook.delivery, %action, why = %decision.why, "not started");
                self.note(hook, &label, false, decision.why.to_string());
                continue;
            }
            if self.superseded(&label, push).await {
                tracing::warn!(delivery = %hook.delivery, %action, "a newer push of this branch already started it; skipped as superseded");
                stats.superseded += 1;
                let why = "a newer push of this branch already started it".to_string();
                self.note(hook, &label, false, why);
                continue;
            }
            let why = decision.why.to_string();
            let outcome = match action {
                Action::Pipeline(pipeline) => {
                    self.start(hook, body_sha256, push, filter, pipeline, &why, stats)
                        .await
                }
                Action::Trigger(name) => self.raise(hook, push, name, &why, stats).await,
            };
            if let Err(failure) = outcome {
                retry = Some(failure);
            }
        }
        match retry {
            // Already started pipelines are safe to retry: their token is the same.
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Starts `pipeline` for `push`: `Err` when the start should be retried.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        &self,
        hook: &Hook,
        body_sha256: &str,
        push: &Push<'_>,
        filter: &Filter,
        pipeline: &str,
        why: &str,
        stats: &mut Stats,
    ) -> Result<(), Failure> {
        let start = Start {
            pipeline: pipeline.to_string(),
            token: execution_token(body_sha256, pipeline),
            source: filter
                .spec
                .source_action
                .clone()
                .map(|a| (a, push.after.to_string())),
            reason: format!(
                "{}@{} ({why})",
                push.repository,
                push.branch().unwrap_or_default(),
            ),
            delivery: hook.delivery.clone(),
        };
        match self.pipelines.start(&start).await {
            Ok(_) if self.pipelines.dry_run() => {
                stats.would_start += 1;
                self.note(
                    hook,
                    pipeline,
                    false,
                    format!("dry run: would start ({why})"),
                );
                tracing::debug!(delivery = %hook.delivery, %pipeline, %why, "would start (dry run)");
            }
            Ok(execution) => {
                self.record_start(pipeline, push).await;
                stats.started += 1;
                self.note(
                    hook,
                    pipeline,
                    true,
                    format!("{why}; execution {execution}"),
                );
                tracing::info!(delivery = %hook.delivery, %pipeline, %execution, %why, "pipeline started");
            }
            Err(StartError::NotFound(m)) => {
                stats.not_found += 1;
                self.note(hook, pipeline, false, format!("pipeline not found: {m}"));
                tracing::error!(delivery = %hook.delivery, %pipeline, error = %m, "pipeline not found; check the filter");
            }
            Err(e) if e.is_retryable() => return Err(Failure::Retry(e.to_string())),
            Err(e) => {
                tracing::error!(delivery = %hook.delivery, %pipeline, error = %e, "start refused");
                self.note(hook, pipeline, false, format!("start refused: {e}"));
            }
        }
        Ok(())
    }

    /// Raises trigger `name` for `push` (its exact bytes and GitHub's
    /// signature, for the agents to check): `Err` when it should be retried.
    async fn raise(
        &self,
        hook: &Hook,
        push: &Push<'_>,
        name: &str,
        why: &str,
        stats: &mut Stats,
    ) -> Result<(), Failure> {
        let Some(triggers) = &self.triggers else {
            tracing::error!(delivery = %hook.delivery, trigger = %name, "a filter names a trigger, but this evaluator has no trigger store; not raised");
            return Ok(());
        };
        match trigger::raise_push(triggers, name, hook, self.clock.now_ms()).await {
            Ok(request) => {
                self.record_start(&Action::Trigger(name).label(), push)
                    .await;
                stats.raised += 1;
                tracing::info!(delivery = %hook.delivery, repository = %push.repository, trigger = %name, sequence = request.sequence, %why, "trigger raised");
                let label = Action::Trigger(name).label();
                self.note(
                    hook,
                    &label,
                    true,
                    format!("{why}; request {}", request.sequence),
                );
                Ok(())
            }
            Err(TriggerError::Invalid(m)) => {
                tracing::error!(delivery = %hook.delivery, trigger = %name, error = %m, "trigger not raised");
                let label = Action::Trigger(name).label();
                self.note(hook, &label, false, format!("not raised: {m}"));
                Ok(())
            }
            Err(e) => Err(Failure::Retry(format!("cannot raise trigger {name}: {e}"))),
        }
    }

    async fn filter_set(
        &self,
        repository: &str,
        stats: &mut Stats,
    ) -> Result<Arc<FilterSet>, Failure> {
        let prefix = repository_prefix(repository);
        if let Some(c) = self.cache.lock().unwrap().get(&prefix)
            && c.at.elapsed() < self.cache_ttl
        {
            stats.invalid_filters += c.invalid;
            return Ok(c.set.clone());
        }
        let stored = self
            .filters
            .list(&prefix)
            .await
            .map_err(|e| Failure::Retry(format!("cannot list filters: {e}")))?;
        let mut filters = Vec::new();
        let mut invalid = 0;
        for s in stored {
            match FilterSpec::from_json(&s.bytes).and_then(FilterSpec::compile) {
                Ok(f) => filters.push(f),
                Err(e) => {
                    invalid += 1;
                    tracing::error!(key = %s.key, error = %e, "invalid filter skipped");
                }
            }
        }
        let (set, unfit) = FilterSet::new(filters);
        for u in &unfit {
            // Valid alone, but not together with the others: skipped, never a panic.
            tracing::error!(key = %u.key, reason = %u.reason, "filter skipped");
        }
        invalid += unfit.len() as u64;
        stats.invalid_filters += invalid;
        let set = Arc::new(set);
        self.cache.lock().unwrap().insert(
            prefix,
            Cached {
                at: Instant::now(),
                set: set.clone(),
                invalid,
            },
        );
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spigot_core::ports::memory::{MemoryFilters, MemoryPayloads, MemoryPipelines};

    /// The sample SQS event against a filter it matches; the stats and the starts asked for.
    async fn sample(dry_run: bool) -> (Stats, Vec<Start>) {
        let event: SqsEvent = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../events/sqs-push.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let filters = MemoryFilters::default();
        let spec = FilterSpec::from_json(
            br#"{"Repository": "Codertocat/Hello-World", "Branch": "master", "Pipeline": "hello", "Include": ["README.md"]}"#,
        )
        .unwrap();
        filters
            .put(&spec.key(), spec.to_json().into_bytes())
            .await
            .unwrap();
        let ev = Evaluator::new(
            filters,
            MemoryPipelines {
                dry_run,
                ..Default::default()
            },
            None::<MemoryPayloads>,
            Duration::from_secs(60),
        );
        let mut ev: Evaluator<_, _, _, spigot_core::ports::memory::MemoryGitHub> = ev;
        // GitHub's sample push was pushed at 1557933657 (2019): evaluate it a minute later.
        ev.clock = Arc::new(spigot_core::ports::memory::FixedClock(
            std::sync::atomic::AtomicU64::new(1_557_933_717_000),
        ));
        let (resp, stats) = ev.handle(event).await;
        assert!(resp.batch_item_failures.is_empty());
        let started = ev.pipelines.started.lock().unwrap().clone();
        (stats, started)
    }

    #[tokio::test]
    async fn the_sample_sqs_event_starts_a_matching_pipeline() {
        let (stats, started) = sample(false).await;
        assert_eq!((stats.started, stats.would_start), (1, 0));
        assert_eq!(started[0].pipeline, "hello");
        assert!(
            started[0]
                .reason
                .starts_with("Codertocat/Hello-World@master (README.md matches README.md)"),
            "{}",
            started[0].reason
        );
    }

    /// A dry run (`spigot dev` without CodePipeline) is not a start.
    #[tokio::test]
    async fn a_dry_run_is_counted_as_would_start_not_started() {
        let (stats, started) = sample(true).await;
        assert_eq!((stats.started, stats.would_start), (0, 1));
        assert_eq!(started.len(), 1, "the dry-run port was asked");
    }
}
