//! The reconciler: on a schedule, list the deliveries GitHub made to Spigot's
//! hooks in the last window, and ask GitHub to redeliver each event that never
//! got a 2xx ([`spigot_core::reconcile`]). EMF metrics: `Failed`,
//! `Redelivered`, `Skipped`, `Unrecovered` (failures it could not redeliver:
//! the alarm's metric).

use std::sync::Arc;

use spigot_aws::aws_config::SdkConfig;
use spigot_aws::{AwsError, GitHubApi, S3Payloads};
use spigot_core::config::Settings;
use spigot_core::metrics::Metrics;
use spigot_core::ports::{Bucket, GitHub, MetricsSink, StdoutMetrics};
use spigot_core::reconcile::HookSource;
use spigot_core::reconcile::{Action, Options, ReconcileError, Report, reconcile};

/// The reconciler: GitHub, the state store, and what to look at.
pub struct Reconciler<G, S> {
    /// GitHub's REST API.
    pub github: G,
    /// Where the redelivered guids are kept (the config bucket).
    pub state: Option<S>,
    /// The hooks (`GITHUB_HOOKS`).
    pub hooks: Vec<HookSource>,
    /// Seconds of deliveries a run reads (`RECONCILE_WINDOW`).
    pub window: u64,
    /// Redeliveries a run makes at most (`RECONCILE_MAX`).
    pub max: usize,
    /// Where the run's EMF metrics go.
    pub metrics: Arc<dyn MetricsSink>,
}

/// The reconciler on AWS adapters.
pub type AwsReconciler = Reconciler<GitHubApi, S3Payloads>;
/// The environment the template gives the reconciler (every variable its
/// settings read when deployed; `tests/tests/template.rs` checks the template sets exactly these).
pub const ENVIRONMENT: &[&str] = &[
    "CONFIG_BUCKET",
    "GITHUB_HOOKS",
    "RECONCILE_WINDOW",
    "RECONCILE_MAX",
    "GITHUB_API_URL",
    "GITHUB_TOKEN_SECRET_ARN",
    "GITHUB_APP_ID",
    "GITHUB_APP_KEY_SECRET_ARN",
    "GITHUB_APP_INSTALLATION_ID",
];

/// Why the reconciler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An AWS call or setting failed (the GitHub credentials' secret, say).
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// No credentials to call GitHub with.
    #[error(
        "no GitHub credentials: set GITHUB_TOKEN_SECRET_ARN (or GITHUB_TOKEN), or GITHUB_APP_ID with its key and installation"
    )]
    NoCredentials,
    /// Nothing to reconcile (no `GITHUB_HOOKS`).
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
}

/// The reconciler of a deployment: GitHub credentials and hooks from the settings.
pub async fn build(sdk: &SdkConfig, settings: &Settings) -> Result<AwsReconciler, BuildError> {
    let github = GitHubApi::from_settings(sdk, settings)
        .await?
        .ok_or(BuildError::NoCredentials)?;
    if settings.github_hooks.is_empty() {
        return Err(ReconcileError::NoHooks.into());
    }
    Ok(Reconciler {
        github,
        state: S3Payloads::from_settings(sdk, settings),
        hooks: settings.github_hooks.clone(),
        window: settings.reconcile_window,
        max: settings.reconcile_max,
        metrics: Arc::new(StdoutMetrics),
    })
}

impl<G: GitHub, S: Bucket> Reconciler<G, S> {
    /// One scheduled run at `now` (seconds since the epoch).
    pub async fn run(&self, now: u64) -> Result<Report, ReconcileError> {
        let options = Options {
            hooks: self.hooks.clone(),
            since: now.saturating_sub(self.window),
            now,
            max: self.max,
            dry_run: false,
            // A scheduled run starts where the last complete one began (an outage of
            // the reconciler or of GitHub's API loses no window), within 3 days.
            resume: true,
        };
        let report = reconcile(&self.github, self.state.as_ref(), &options, |f, _| {
            let d = &f.delivery;
            match &f.action {
                Action::Error { error } => tracing::error!(
                    hook = %f.hook, guid = %d.guid, delivery = d.id, %error, "GitHub refused the redelivery"
                ),
                Action::Left => tracing::warn!(
                    hook = %f.hook, guid = %d.guid, "left for the next run (RECONCILE_MAX reached)"
                ),
                action => tracing::info!(
                    hook = %f.hook, guid = %d.guid, event = %d.event, status = d.status_code,
                    repository = d.repository.as_deref().unwrap_or("-"), action = ?action, "failed delivery"
                ),
            }
        })
        .await;
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reconcile failed");
                let m = Metrics::new("reconciler").count("Unrecovered", 1);
                self.metrics.emit(&m, now * 1000);
                return Err(e);
            }
        };
        for e in &report.hook_errors {
            tracing::error!(error = %e, "cannot read a hook's deliveries");
        }
        let m = Metrics::new("reconciler")
            .count("Failed", report.failed.len() as u64)
            .count("Redelivered", report.redelivered() as u64)
            .count("Skipped", report.skipped() as u64)
            .count("Unrecovered", report.unrecovered() as u64);
        self.metrics.emit(&m, now * 1000);
        Ok(report)
    }
}

/// The run's counts, as the Lambda answers them.
pub fn summary(report: &Report) -> serde_json::Value {
    serde_json::json!({
        "listed": report.listed,
        "failed": report.failed.len(),
        "redelivered": report.redelivered(),
        "skipped": report.skipped(),
        "unrecovered": report.unrecovered(),
        "hook_errors": report.hook_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use spigot_core::ports::memory::{MemoryGitHub, MemoryPayloads};
    use spigot_core::reconcile::HookDelivery;

    struct Recorded(std::sync::Mutex<Vec<String>>);
    impl MetricsSink for Recorded {
        fn emit(&self, metrics: &Metrics, timestamp_ms: u64) {
            self.0.lock().unwrap().push(metrics.line(timestamp_ms));
        }
    }

    #[tokio::test]
    async fn a_run_reads_its_window_and_emits_what_it_did() {
        let github = MemoryGitHub::default();
        let at = |id: u64, guid: &str, when: u64, code: u16| HookDelivery {
            id,
            guid: guid.into(),
            delivered_at: when,
            redelivery: false,
            status: String::new(),
            status_code: code,
            event: "push".into(),
            action: None,
            repository: None,
        };
        // now = 10,000, window 7,200: the 502 at 1,000 is out of it.
        *github.deliveries.lock().unwrap() = vec![
            at(1, "old", 1_000, 502),
            at(2, "new", 9_000, 503),
            at(3, "ok", 9_500, 200),
        ];
        let metrics = Arc::new(Recorded(Default::default()));
        let r = Reconciler {
            github,
            state: Some(MemoryPayloads::default()),
            hooks: vec![HookSource::App],
            window: 7_200,
            max: 100,
            metrics: metrics.clone(),
        };
        let report = r.run(10_000).await.unwrap();
        assert_eq!(*r.github.redelivered.lock().unwrap(), vec![2]);
        assert_eq!(summary(&report)["redelivered"], 1);
        let line: serde_json::Value = serde_json::from_str(&metrics.0.lock().unwrap()[0]).unwrap();
        let n = |k: &str| line[k].as_f64();
        assert_eq!(
            (
                n("Failed"),
                n("Redelivered"),
                n("Skipped"),
                n("Unrecovered")
            ),
            (Some(1.0), Some(1.0), Some(0.0), Some(0.0))
        );
    }
}
