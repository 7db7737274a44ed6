//! The drainer: on a schedule, while the spigot drains and the target answers,
//! deliver the buffer in order per repository with the shared engine.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use spigot_aws::aws_config::SdkConfig;
use spigot_aws::{AwsError, HttpTarget, S3Payloads, SqsBuffer, StageSwitch};
use spigot_core::config::Settings;
use spigot_core::metrics::Metrics;
use spigot_core::ports::{
    Bucket, Buffer, Clock, MetricsSink, StdoutMetrics, Switch, SystemClock, Target,
};
use spigot_core::spigot::State;
use spigot_engine::{Counters, Engine, EngineConfig, SWITCH_CHECK_EVERY, Stop, Summary, gate};

/// The drainer: the engine plus the switch it obeys.
pub struct Drainer<B, P, T, S> {
    /// The drain engine.
    pub engine: Engine<B, P, T>,
    /// The spigot's switch.
    pub switch: S,
    /// Where the run's EMF metrics go.
    pub metrics: Arc<dyn MetricsSink>,
    /// How long it keeps draining after it set ON (`DRAIN_GRACE_SECONDS`):
    /// requests that still see DRAINING buffer meanwhile, and wait no longer
    /// than this loop's pace.
    pub grace: std::time::Duration,
    /// How long the target's health probe must pass in a row before a
    /// DRAINING spigot's drain delivers anything (`RESUME_HEALTHY_SECONDS`).
    pub resume: std::time::Duration,
    /// Since when this process has seen the target steady (after a resume
    /// window passed); forgotten whenever a run finds the spigot OFF, the
    /// target down, or the breaker open. Scheduled runs in one warm
    /// environment wait the window once per resume, not once a run.
    pub steady: std::sync::Mutex<Option<Instant>>,
    /// Raised to stop (Ctrl-C on `spigot on --local --drain`): no delivery
    /// starts after it, those under way finish and are deleted, the rest is
    /// released; `None` in Lambda.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// How often the health probe is asked during the resume window.
const HEALTH_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the buffer is looked at during the grace after ON.
const GRACE_PACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The drainer on AWS adapters.
pub type AwsDrainer = Drainer<SqsBuffer, S3Payloads, HttpTarget, StageSwitch>;
/// The environment the template gives the drainer (every variable its
/// settings read when deployed; `tests/tests/template.rs` checks the template sets exactly these).
pub const ENVIRONMENT: &[&str] = &[
    "TARGET_URL",
    "ALLOW_INSECURE_TARGET",
    "TARGET_HEALTH_URL",
    "EVENT_PATHS",
    "FORWARD_TIMEOUT_MS",
    "BUFFER_QUEUE_URL",
    "BUFFER_DLQ_URL",
    "CONFIG_BUCKET",
    "API_ID",
    "API_TYPE",
    "STAGE_NAME",
    "DRAIN_CONCURRENCY",
    "BREAKER_THRESHOLD",
    "MAX_ATTEMPTS",
    "DRAIN_RATE",
    "DRAIN_RAMP_SECONDS",
    "DRAIN_GRACE_SECONDS",
    "DRAIN_COALESCE",
    "RESUME_HEALTHY_SECONDS",
    "ARCHIVE_STREAM",
];

/// The drainer of a deployment (or a local stack): its buffer, bucket, target and stage.
pub fn build(sdk: &SdkConfig, settings: &Settings) -> Result<AwsDrainer, AwsError> {
    Ok(Drainer {
        engine: Engine::new(
            SqsBuffer::from_settings(sdk, settings)?,
            S3Payloads::from_settings(sdk, settings),
            HttpTarget::from_settings(settings)?,
            EngineConfig::lambda(settings),
        )
        .with_timeline(
            spigot_aws::FirehoseArchive::timeline(sdk, &settings.resources),
            "drainer",
        ),
        switch: StageSwitch::from_settings(sdk, settings)?,
        metrics: Arc::new(StdoutMetrics),
        grace: std::time::Duration::from_secs(settings.drain_grace_seconds),
        resume: std::time::Duration::from_secs(settings.resume_healthy_seconds),
        steady: std::sync::Mutex::new(None),
        stop: None,
    })
}

impl<B: Buffer, P: Bucket, T: Target, S: Switch> Drainer<B, P, T, S> {
    /// One scheduled run: gate closed (OFF, target down) → return at once
    /// without receiving. Resuming (DRAINING), it first waits until the
    /// target's health probe has passed `resume` in a row.
    pub async fn drain(&self, deadline: Option<Instant>) -> Summary {
        self.drain_with(deadline, false).await
    }

    /// A run; with `now` (`spigot on --now`), without the resume health window.
    pub async fn drain_with(&self, deadline: Option<Instant>, now: bool) -> Summary {
        let summary = match gate(&self.switch, &self.engine.target).await {
            Err(skipped) => {
                if let spigot_engine::Skipped::StateInvalid(e) = &skipped {
                    tracing::error!(error = %e, "not draining");
                }
                self.forget_steady();
                Summary::skipped(skipped)
            }
            Ok(State::Draining) if !now && !self.resume.is_zero() && !self.known_steady() => {
                match self.steady(deadline).await {
                    Ok(()) => {
                        *self.steady.lock().unwrap() = Some(Instant::now());
                        self.run(State::Draining, deadline).await
                    }
                    Err(skipped) => Summary::skipped(skipped),
                }
            }
            Ok(state) => self.run(state, deadline).await,
        };
        if summary.stop == Some(Stop::Breaker) {
            self.forget_steady();
        }
        self.report(&summary);
        summary
    }

    /// Logs a run that did something (one that did nothing is not news:
    /// every minute in Lambda, every few seconds locally) and emits its metrics.
    fn report(&self, summary: &Summary) {
        let idle =
            summary.delivered + summary.retried + summary.dead_lettered + summary.undeleted == 0;
        let stop = summary
            .stop
            .map(|s| format!("{s:?}").to_lowercase())
            .unwrap_or_default();
        let skipped = summary
            .skipped
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        if idle {
            tracing::debug!(%stop, %skipped, "drain finished: nothing to deliver");
        } else {
            tracing::info!(
                delivered = summary.delivered,
                retried = summary.retried,
                dead_lettered = summary.dead_lettered,
                released = summary.released,
                held = summary.held,
                undeleted = summary.undeleted,
                coalesced = summary.coalesced,
                %stop,
                %skipped,
                "drain finished"
            );
        }
        let m = Metrics::new("drainer")
            .count("Delivered", summary.delivered)
            .count("Retried", summary.retried)
            .count("DeadLettered", summary.dead_lettered)
            .count("Released", summary.released)
            .count("Held", summary.held)
            .count("Undeleted", summary.undeleted)
            .count("StoreDenied", summary.denied)
            .count("Coalesced", summary.coalesced)
            // The target's answers to this run's attempts, by class.
            .count("Target2xx", summary.answers[0])
            .count("Target4xx", summary.answers[1])
            .count("Target5xx", summary.answers[2])
            .count("TargetNoAnswer", summary.answers[3])
            .count("Replays", summary.replays)
            // A flip this run made (DRAINING -> ON, or back): the dashboard's state changes.
            .count("StateChanges", u64::from(summary.switched_to.is_some()));
        self.metrics.emit(&m, SystemClock.now_ms());
    }

    fn known_steady(&self) -> bool {
        self.steady.lock().unwrap().is_some()
    }

    fn forget_steady(&self) {
        *self.steady.lock().unwrap() = None;
    }

    /// Probes the target every 2 s until it has passed for `resume` in a
    /// row: a Jenkins still loading its plugins answers some probes and not
    /// others, and is not sent a backlog. Fails at the first failed probe, or
    /// when the window cannot end before the run's deadline.
    async fn steady(&self, deadline: Option<Instant>) -> Result<(), spigot_engine::Skipped> {
        let unsteady = spigot_engine::Skipped::TargetUnsteady(self.resume.as_secs());
        let start = Instant::now();
        if deadline.is_some_and(|d| start + self.resume + HEALTH_PROBE_EVERY >= d) {
            return Err(unsteady);
        }
        loop {
            let left = self.resume.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(left.min(HEALTH_PROBE_EVERY)).await;
            if !self.engine.target.probe().await {
                tracing::info!(after = ?start.elapsed(), "target failed its health probe while resuming: not draining yet");
                return Err(unsteady);
            }
        }
    }

    /// Drains; a DRAINING spigot becomes ON once a run ends with the buffer
    /// empty, and one more run delivers what was buffered during the flip.
    async fn run(&self, state: State, deadline: Option<Instant>) -> Summary {
        let counters = Counters::default();
        let cancel = AtomicBool::new(false);
        let mut summary = self.watched_run(deadline, &cancel, &counters).await;
        let Some(next) = state.when_drained() else {
            return summary;
        };
        if self.stopped() {
            return summary;
        }
        if summary.stop != Some(Stop::Empty) {
            return summary;
        }
        match self.engine.buffer.depth().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    waiting = n,
                    "buffer not empty yet (hooks in backoff): staying DRAINING"
                );
                return summary;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the buffer depth: staying DRAINING");
                return summary;
            }
        }
        // Only over the state it found: an operator's OFF meanwhile is left as it is.
        match self.switch.transition(state, next).await {
            Ok(None) => {}
            Ok(Some(found)) => {
                tracing::info!(%found, "buffer drained, but the spigot is {found} now: left as it is");
                return summary;
            }
            Err(e) => {
                tracing::error!(error = %e, "buffer drained but the spigot could not be set ON");
                return summary;
            }
        }
        tracing::info!("buffer drained: spigot {} -> {}", state, next);
        summary = self.grace_runs(deadline, &cancel, &counters).await;
        summary.switched_to = Some(next.as_str());
        if self.stragglers_wait(next).await {
            summary.switched_to = Some(State::Draining.as_str());
        }
        summary
    }

    /// The change reaches requests late: some still see DRAINING and buffer.
    /// Keeps draining them for the grace, within the run's deadline.
    async fn grace_runs(
        &self,
        deadline: Option<Instant>,
        cancel: &AtomicBool,
        counters: &Counters,
    ) -> Summary {
        let flipped = Instant::now();
        loop {
            let summary = self.watched_run(deadline, cancel, counters).await;
            let room = deadline.is_none_or(|d| Instant::now() + GRACE_PACE * 2 < d);
            if summary.stop != Some(Stop::Empty) || flipped.elapsed() >= self.grace || !room {
                return summary;
            }
            tokio::time::sleep(GRACE_PACE).await;
        }
    }

    /// A straggler still waiting (in backoff, or the grace ran out) would be
    /// overtaken by live hooks: DRAINING again, so they queue behind it.
    /// True when it set DRAINING.
    async fn stragglers_wait(&self, now: State) -> bool {
        if self.grace.is_zero() || matches!(self.engine.buffer.depth().await, Ok(0)) {
            return false;
        }
        match self.switch.transition(now, State::Draining).await {
            Ok(None) => {
                tracing::warn!("hooks still wait after the grace: spigot ON -> DRAINING");
                true
            }
            Ok(Some(found)) => {
                tracing::info!(%found, "hooks still wait; the spigot is {found}: left as it is");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "hooks still wait but the spigot could not be set DRAINING");
                false
            }
        }
    }

    /// A run of the engine that stops starting deliveries once the spigot reads OFF.
    async fn watched_run(
        &self,
        deadline: Option<Instant>,
        cancel: &AtomicBool,
        counters: &Counters,
    ) -> Summary {
        let run = self.engine.run(deadline, cancel, counters);
        let stop = self.stop.as_deref();
        spigot_engine::watched(&self.switch, SWITCH_CHECK_EVERY, cancel, stop, run).await
    }

    /// True once the stop flag was raised.
    pub fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    }
}
