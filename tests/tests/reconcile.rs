//! The reconciler Lambda, built as deployed (`build` from settings), against
//! moto S3 for its state and a local server speaking GitHub's hook-deliveries
//! API (tests/support/github_hooks.rs) that redelivers to a local target.

use std::sync::{Arc, Mutex};

use spigot_core::config::Settings;
use spigot_core::metrics::Metrics;
use spigot_core::ports::MetricsSink;
use spigot_core::reconcile::{Action, HookSource};
use spigot_e2e::*;

struct Recorded(Mutex<Vec<serde_json::Value>>);
impl MetricsSink for Recorded {
    fn emit(&self, metrics: &Metrics, timestamp_ms: u64) {
        let line = serde_json::from_str(&metrics.line(timestamp_ms)).unwrap();
        self.0.lock().unwrap().push(line);
    }
}

fn now() -> u64 {
    github_hooks::now_s()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduled_run_redelivers_keeps_its_state_in_the_bucket_and_emits_metrics() {
    let target = FakeTarget::start().await;
    let github = FakeHooks::start(&target.url, SECRET, 100).await;
    // Under the reconciler's role (moto enforces it); GitHub is a local stand-in.
    let (admin, stack) = stack().await;
    let sdk = as_principal(&admin, &stack, Principal::Reconciler).await;
    let bucket = stack
        .get(spigot_core::resources::Resource::Bucket)
        .to_string();
    let org = "orgs/octo-org/hooks/7/deliveries";
    for (i, status) in [(0, 502), (1, 200), (2, 0)] {
        let body = push_payload("octo-org/svc", &format!("s-{i}")).into_bytes();
        github.seed(org, &format!("s-{i}"), &body, status, 900 - i * 60, false);
    }
    let env = [
        ("GITHUB_API_URL", github.url.as_str()),
        ("GITHUB_API_ALLOW_HTTP", "true"),
        ("GITHUB_TOKEN", "ghp_lambda"),
        ("GITHUB_HOOKS", "org/octo-org/7"),
        ("CONFIG_BUCKET", bucket.as_str()),
    ];
    let settings = Settings::from_lookup(|k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    let mut reconciler = spigot_reconciler::build(&sdk, &settings).await.unwrap();
    let metrics = Arc::new(Recorded(Mutex::new(Vec::new())));
    reconciler.metrics = metrics.clone();
    let report = reconciler.run(now()).await.unwrap();
    // Two failed, both redelivered; an org hook's repository read from the delivery.
    let got: Vec<(&str, &Action, Option<&str>)> = report
        .failed
        .iter()
        .map(|f| {
            (
                f.delivery.guid.as_str(),
                &f.action,
                f.delivery.repository.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("s-0", &Action::Redelivered, Some("octo-org/svc")),
            ("s-2", &Action::Redelivered, Some("octo-org/svc"))
        ]
    );
    assert_eq!(target.accepted().len(), 2);
    let line = metrics.0.lock().unwrap()[0].clone();
    assert_eq!(
        (
            line["Failed"].as_f64(),
            line["Redelivered"].as_f64(),
            line["Unrecovered"].as_f64()
        ),
        (Some(2.0), Some(2.0), Some(0.0)),
        "{line}"
    );
    // The state object holds both guids.
    let state = spigot_aws::s3_client(&admin)
        .get_object()
        .bucket(&bucket)
        .key(spigot_core::reconcile::STATE_KEY)
        .send()
        .await
        .unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&state.body.collect().await.unwrap().into_bytes()).unwrap();
    assert!(
        state["guids"]["s-0"].is_u64() && state["guids"]["s-2"].is_u64(),
        "{state}"
    );
    // The next run: nothing failed any more, nothing redelivered.
    let report = reconciler.run(now()).await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        (github.redeliveries().len(), target.accepted().len()),
        (2, 2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_build_refuses_without_credentials_or_hooks() {
    let sdk = sdk().await;
    for (env, says) in [
        (vec![("GITHUB_HOOKS", "app")], "no GitHub credentials"),
        (vec![("GITHUB_TOKEN", "t")], "GITHUB_HOOKS"),
    ] {
        let settings = Settings::from_lookup(|k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        let e = spigot_reconciler::build(&sdk, &settings)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains(says), "{e}");
    }
}

/// A GitHub App reads its own hook with its JWT and an installed org hook
/// with an installation token.
#[tokio::test(flavor = "multi_thread")]
async fn a_github_app_reads_its_own_hook_with_its_jwt() {
    let pem = github::app_key_pem();
    let target = FakeTarget::start().await;
    let github = FakeHooks::start(&target.url, SECRET, 100).await;
    let body = push_payload("octo-org/app", "a").into_bytes();
    github.seed("app/hook/deliveries", "app-1", &body, 503, 120, false);
    github.seed(
        "orgs/octo-org/hooks/7/deliveries",
        "org-1",
        &body,
        502,
        60,
        false,
    );
    let auth = spigot_aws::GitHubAuth::app("4242", &pem, 77).unwrap();
    let reconciler = spigot_reconciler::Reconciler {
        github: spigot_aws::GitHubApi::new_with(&github.url, auth, true).unwrap(),
        state: None::<spigot_aws::S3Payloads>,
        hooks: vec![
            HookSource::App,
            HookSource::Org {
                org: "octo-org".into(),
                id: 7,
            },
        ],
        window: 3_600,
        max: 10,
        metrics: Arc::new(spigot_core::ports::QuietMetrics),
    };
    let report = reconciler.run(now()).await.unwrap();
    assert_eq!(report.redelivered(), 2, "{report:?}");
    let calls = github.calls();
    let auth_of = |path: &str| {
        calls
            .iter()
            .find(|c| c.request.starts_with(&format!("GET /{path}")))
            .and_then(|c| c.authorization.clone())
            .unwrap()
    };
    // The app's hook: a JWT (three parts); the org hook: the installation token.
    assert_eq!(auth_of("app/hook/deliveries").matches('.').count(), 2);
    assert_eq!(
        auth_of("orgs/octo-org/hooks/7/deliveries"),
        "Bearer ghs_installation_77"
    );
    assert_eq!(target.accepted().len(), 2);
}
