//! The evaluator against moto S3 (filters) and a local endpoint that speaks
//! CodePipeline's JSON protocol (moto lacks StartPipelineExecution).

use spigot_core::resources::Resource;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use serde_json::json;
use spigot_core::envelope::sha256_hex;
use spigot_core::filter::{FilterSpec, execution_token};
use spigot_core::ports::FilterStore;
use spigot_e2e::*;
use spigot_evaluator::Evaluator;

type RealEvaluator = Evaluator<
    spigot_aws::S3Filters,
    spigot_aws::CodePipelines,
    spigot_aws::S3Payloads,
    spigot_aws::GitHubApi,
    spigot_core::ports::NoLetters,
    spigot_aws::S3Triggers,
>;

async fn setup() -> (
    spigot_aws::aws_config::SdkConfig,
    spigot_aws::local::LocalStack,
    FakeCodePipeline,
    RealEvaluator,
) {
    let (sdk, stack) = stack().await;
    let cp = FakeCodePipeline::start().await;
    // The evaluator's S3 calls under its own role (moto enforces it); CodePipeline is a local stand-in.
    let role = as_principal(&sdk, &stack, Principal::Evaluator).await;
    let ev = evaluator_as(&role, &sdk, &stack, &cp);
    (sdk, stack, cp, ev)
}

/// An evaluator whose S3 calls carry `role`'s credentials.
fn evaluator_as(
    role: &spigot_aws::aws_config::SdkConfig,
    sdk: &spigot_aws::aws_config::SdkConfig,
    stack: &spigot_aws::local::LocalStack,
    cp: &FakeCodePipeline,
) -> RealEvaluator {
    let s3 = spigot_aws::s3_client(role);
    let mut ev = Evaluator::new(
        spigot_aws::S3Filters::new(s3.clone(), stack.get(Resource::Bucket)),
        cp.client(sdk),
        Some(spigot_aws::S3Payloads::new(
            s3.clone(),
            stack.get(Resource::Bucket),
        )),
        Duration::from_secs(0),
    )
    .with_triggers(Some(spigot_aws::S3Triggers::new(
        s3,
        stack.get(Resource::Bucket),
    )));
    // Its steps on the timeline, under its own role (firehose, index marks).
    ev.timeline = spigot_core::ports::Timeline::new(Some(std::sync::Arc::new(
        spigot_aws::FirehoseArchive::new(
            role,
            stack.get(Resource::ArchiveStream),
            Some(stack.get(Resource::Bucket)),
        ),
    )));
    ev
}

/// The filter store of `ev`'s bucket with the admin credentials (the evaluator may only read filters).
async fn admin_filters(ev: &RealEvaluator) -> spigot_aws::S3Filters {
    spigot_aws::S3Filters::new(spigot_aws::s3_client(&sdk().await), ev.filters.bucket())
}

async fn put_filter(ev: &RealEvaluator, v: serde_json::Value) {
    put_filter_in(&admin_filters(ev).await, v).await;
}

async fn put_filter_in(store: &spigot_aws::S3Filters, v: serde_json::Value) {
    let spec = FilterSpec::from_json(v.to_string().as_bytes()).unwrap();
    spec.clone().compile().unwrap();
    store
        .put(&spec.key(), spec.to_json().into_bytes())
        .await
        .unwrap();
}

fn mono_push(paths: &[&str]) -> Vec<u8> {
    json!({
        "ref": "refs/heads/main", "before": "0000", "after": "c0ffee1234567890c0ffee1234567890c0ffee12",
        "repository": {"name": "mono", "full_name": "octo-org/mono"},
        "commits": [{"added": [], "modified": paths, "removed": []}],
    })
    .to_string()
    .into_bytes()
}

/// Pushes through the real receiver (OFF: no target needed), then takes the evaluation queue as a Lambda event.
async fn pushes(
    sdk: &spigot_aws::aws_config::SdkConfig,
    stack: &spigot_aws::local::LocalStack,
    hooks: &[(&str, Vec<u8>)],
) -> SqsEvent {
    let r = receiver(sdk, stack, "http://127.0.0.1:9", 500).await;
    for (delivery, body) in hooks {
        let (status, json) = answer(
            &r.handle_event(&signed_request("push", delivery, body, Some("OFF")), 1)
                .await,
        );
        assert_eq!(status, 202, "{json}");
    }
    take_as_sqs_event(sdk, stack.get(Resource::EvalUrl)).await
}

async fn mono_filters(ev: &RealEvaluator) {
    put_filter(ev, json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "svc-a", "Include": ["services/a/**"], "SourceAction": "Source"})).await;
    put_filter(ev, json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "svc-b", "Include": ["services/b/**"]})).await;
}

#[tokio::test]
async fn a_matching_push_starts_its_pipeline_with_token_and_revision() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    let event = pushes(
        &sdk,
        &stack,
        &[("ev-1", mono_push(&["services/a/main.rs"]))],
    )
    .await;
    let (resp, stats) = ev.handle(event).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!((stats.started, stats.filters_evaluated), (1, 2));
    let reqs = cp.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].0, "CodePipeline_20150709.StartPipelineExecution");
    assert_eq!(reqs[0].1["name"], "svc-a");
    assert_eq!(
        reqs[0].1["clientRequestToken"],
        execution_token(&sha256_hex(&mono_push(&["services/a/main.rs"])), "svc-a")
    );
    assert_eq!(
        reqs[0].1["sourceRevisions"],
        json!([{"actionName": "Source", "revisionType": "COMMIT_ID", "revisionValue": "c0ffee1234567890c0ffee1234567890c0ffee12"}])
    );
    // The timeline says which pipeline started and which did not, found
    // through the repository's index (both written under the evaluator's role).
    let now = spigot_aws::now_ms();
    let archive = spigot_aws::S3Archive::new(&sdk, stack.get(Resource::Bucket));
    let found = archive
        .read(now - 600_000, now, Some("octo-org/mono"))
        .await
        .unwrap();
    let pipelines: Vec<(String, bool)> = spigot_core::archive::timeline(&found.entries, "ev-1")
        .into_iter()
        .filter_map(|s| match s.what {
            spigot_core::archive::What::Pipeline { name, started, .. } => Some((name, started)),
            _ => None,
        })
        .collect();
    assert!(pipelines.contains(&("svc-a".into(), true)), "{pipelines:?}");
    assert!(
        pipelines
            .iter()
            .any(|(n, started)| n != "svc-a" && !started),
        "the filter that did not match is recorded too: {pipelines:?}"
    );
}

#[tokio::test]
async fn a_redelivered_push_sends_the_same_token() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    let first = pushes(&sdk, &stack, &[("ev-redo", mono_push(&["services/b/x"]))]).await;
    let again = first.clone();
    ev.handle(first).await;
    ev.handle(again).await;
    let reqs = cp.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].1["name"], "svc-b");
    assert_eq!(
        reqs[0].1["clientRequestToken"],
        reqs[1].1["clientRequestToken"]
    );
    assert!(
        reqs[1].1.get("sourceRevisions").is_none(),
        "no SourceAction, no revision pin"
    );
}

#[tokio::test]
async fn a_throttled_start_is_a_batch_item_failure() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    cp.set_throttle(true);
    let event = pushes(
        &sdk,
        &stack,
        &[
            ("ev-throttle", mono_push(&["services/a/x"])),
            ("ev-nothing", mono_push(&["docs/x"])),
        ],
    )
    .await;
    let ids: Vec<String> = event
        .records
        .iter()
        .map(|r| r.message_id.clone().unwrap())
        .collect();
    let (resp, stats) = ev.handle(event).await;
    // The throttled push is retried; the later push of its repository is held behind it.
    let failed: Vec<&str> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, [ids[0].as_str(), ids[1].as_str()]);
    assert_eq!((stats.retried, stats.held), (1, 1));
}

#[tokio::test]
async fn an_unknown_pipeline_is_counted_not_retried() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    cp.set_unknown("svc-a");
    let event = pushes(
        &sdk,
        &stack,
        &[("ev-unknown", mono_push(&["services/a/x", "services/b/y"]))],
    )
    .await;
    let (resp, stats) = ev.handle(event).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!((stats.not_found, stats.started), (1, 1));
    assert_eq!(cp.requests().len(), 2);
}

#[tokio::test]
async fn a_malformed_record_does_not_fail_the_others() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    let mut event = pushes(&sdk, &stack, &[("ev-good", mono_push(&["services/b/z"]))]).await;
    let mut bad = SqsMessage::default();
    bad.message_id = Some("bad-1".into());
    bad.body = Some("{not an envelope".into());
    event.records.insert(0, bad);
    let (resp, stats) = ev.handle(event).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!((stats.unreadable, stats.started), (1, 1));
    assert_eq!(cp.requests()[0].1["name"], "svc-b");
}

#[tokio::test]
async fn invalid_filter_objects_are_skipped_and_counted() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    admin_filters(&ev)
        .await
        .put(
            "filters/octo-org/mono/main/broken.json",
            b"{\"Repository\": 1}".to_vec(),
        )
        .await
        .unwrap();
    let event = pushes(&sdk, &stack, &[("ev-broken", mono_push(&["services/a/x"]))]).await;
    let (resp, stats) = ev.handle(event).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!((stats.invalid_filters, stats.started), (1, 1));
    assert_eq!(cp.requests().len(), 1);
}

#[tokio::test]
async fn legacy_filter_objects_still_work() {
    let (sdk, stack, cp, ev) = setup().await;
    let legacy = json!({"GitHubRepo": "octo-org/mono", "GitHubBranch": "main", "ChangeMatchExpressions": "^src/,docs/", "CodePipelineName": "legacy"});
    admin_filters(&ev)
        .await
        .put(
            "filters/octo-org/mono/main/legacy.json",
            legacy.to_string().into_bytes(),
        )
        .await
        .unwrap();
    let event = pushes(
        &sdk,
        &stack,
        &[
            ("ev-legacy-1", mono_push(&["src/app.py"])),
            ("ev-legacy-2", mono_push(&["lib/src/x"])),
        ],
    )
    .await;
    let (_, stats) = ev.handle(event).await;
    assert_eq!(stats.started, 1);
    assert_eq!(
        cp.requests()[0].1["clientRequestToken"],
        execution_token(&sha256_hex(&mono_push(&["src/app.py"])), "legacy")
    );
}

#[tokio::test]
async fn a_claim_checked_push_is_evaluated_and_its_payload_removed() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    let mut body: serde_json::Value =
        serde_json::from_slice(&mono_push(&["services/a/big"])).unwrap();
    body["pad"] = json!("x".repeat(400_000));
    let event = pushes(&sdk, &stack, &[("ev-big", body.to_string().into_bytes())]).await;
    let s3 = spigot_aws::s3_client(&sdk);
    let stored = || async {
        s3.list_objects_v2()
            .bucket(stack.get(Resource::Bucket))
            .prefix("payloads/eval/ev-big/")
            .send()
            .await
            .unwrap()
            .key_count()
    };
    assert_eq!(stored().await, Some(1), "the push travelled by claim-check");
    let (_, stats) = ev.handle(event).await;
    assert_eq!(stats.started, 1);
    assert_eq!(cp.requests()[0].1["name"], "svc-a");
    assert_eq!(stored().await, Some(0), "and its object is deleted after");
}

/// The token comes from what the signature covers, so one signed body
/// resent under a second delivery id starts each pipeline once.
#[tokio::test]
async fn the_same_signed_body_under_two_delivery_ids_starts_each_pipeline_once() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    let body = mono_push(&["services/a/x", "services/b/y"]);
    let event = pushes(
        &sdk,
        &stack,
        &[("ev-orig", body.clone()), ("ev-replayed", body)],
    )
    .await;
    let (resp, stats) = ev.handle(event).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(
        stats.started, 4,
        "two pushes, two pipelines each were asked"
    );
    assert_eq!(cp.executions(), 2, "but one execution per pipeline");
    // Positive control: a different body is a new execution.
    let other = pushes(&sdk, &stack, &[("ev-new", mono_push(&["services/a/z"]))]).await;
    ev.handle(other).await;
    assert_eq!(cp.executions(), 3);
}

/// Filters written straight into the bucket that are valid alone but
/// break the repository's compiled set are skipped and counted, never a
/// panic, and the repository's other filters still start their pipelines.
#[tokio::test]
async fn filters_that_break_the_set_are_skipped_and_the_others_still_start() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    for name in ["wide-1", "wide-2"] {
        put_filter(&ev, json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": name, "Syntax": "regex", "Include": ["\\w{200}"]})).await;
    }
    let event = pushes(&sdk, &stack, &[("ev-wide", mono_push(&["services/b/x"]))]).await;
    let (resp, stats) = ev.handle(event).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(stats.invalid_filters, 1, "one of the pair does not fit");
    let started: Vec<_> = cp.requests().iter().map(|r| r.1["name"].clone()).collect();
    assert_eq!(started, [json!("svc-b")]);
}

/// A push older than MAX_PUSH_AGE (by the payload's own `pushed_at`)
/// starts nothing and is counted; a fresh one starts.
#[tokio::test]
async fn a_push_older_than_max_push_age_starts_nothing() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let push_at = |pushed_at: u64| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&mono_push(&["services/a/x"])).unwrap();
        v["repository"]["pushed_at"] = json!(pushed_at);
        v.to_string().into_bytes()
    };
    let old = pushes(&sdk, &stack, &[("ev-old", push_at(now - 2 * 86_400))]).await;
    let (resp, stats) = ev.handle(old).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!((stats.too_old, stats.started), (1, 0));
    assert!(cp.requests().is_empty());
    let fresh = pushes(&sdk, &stack, &[("ev-fresh", push_at(now - 60))]).await;
    let (_, stats) = ev.handle(fresh).await;
    assert_eq!((stats.too_old, stats.started), (0, 1));
}

/// A push of `octo-org/mono` main touching services/a, pushed at `pushed_at`.
fn push_at(pushed_at: u64, marker: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&mono_push(&["services/a/x"])).unwrap();
    v["repository"]["pushed_at"] = json!(pushed_at);
    v["after"] = json!(marker);
    v.to_string().into_bytes()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `after` commit of every accepted start, in order.
fn started_commits(cp: &FakeCodePipeline) -> Vec<String> {
    cp.requests()
        .iter()
        .filter(|(_, j)| j["sourceRevisions"].is_array())
        .map(|(_, j)| {
            j["sourceRevisions"][0]["revisionValue"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Push A then push B of one branch, A's start throttled once: A's
/// failure holds B back in the same batch, and the retry starts A before B.
#[tokio::test]
async fn a_throttled_older_push_still_starts_before_the_newer_one() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    let now = now_secs();
    let batch = pushes(
        &sdk,
        &stack,
        &[
            ("ev-a", push_at(now - 20, "aaaa")),
            ("ev-b", push_at(now - 10, "bbbb")),
        ],
    )
    .await;
    assert_eq!(batch.records.len(), 2);
    assert!(
        batch
            .records
            .iter()
            .all(|r| r.attributes.contains_key("MessageGroupId"))
    );
    cp.throttle_next(1);
    let (resp, stats) = ev.handle(batch.clone()).await;
    assert_eq!(
        resp.batch_item_failures.len(),
        2,
        "A failed and B was held behind it"
    );
    assert_eq!((stats.retried, stats.held, stats.started), (1, 1, 0));
    assert_eq!(cp.requests().len(), 1, "B was not attempted");
    let (resp, stats) = ev.handle(batch).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(stats.started, 2);
    assert_eq!(
        started_commits(&cp),
        ["aaaa", "aaaa", "bbbb"],
        "A (throttled, then started) before B"
    );
}

/// An older push arriving after a newer one started the pipeline is
/// skipped as superseded, never started after it.
#[tokio::test]
async fn an_older_push_after_a_newer_start_is_skipped_as_superseded() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    let now = now_secs();
    let newer = pushes(&sdk, &stack, &[("ev-new", push_at(now - 10, "bbbb"))]).await;
    assert_eq!(ev.handle(newer).await.1.started, 1);
    let older = pushes(&sdk, &stack, &[("ev-old", push_at(now - 20, "aaaa"))]).await;
    let (resp, stats) = ev.handle(older).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!((stats.superseded, stats.started), (1, 0));
    assert_eq!(started_commits(&cp), ["bbbb"]);
    // Positive control: a newer push still starts.
    let newest = pushes(&sdk, &stack, &[("ev-newest", push_at(now - 5, "cccc"))]).await;
    assert_eq!(ev.handle(newest).await.1.started, 1);
    assert_eq!(started_commits(&cp), ["bbbb", "cccc"]);
}

/// A force push of `octo-org/mono` main: its commit list does not describe the change.
fn forced_push() -> Vec<u8> {
    json!({
        "ref": "refs/heads/main", "before": "b0b0", "after": "c0ffee1234567890c0ffee1234567890c0ffee12",
        "forced": true,
        "repository": {"name": "mono", "full_name": "octo-org/mono", "default_branch": "main"},
        "commits": [{"added": [], "modified": ["README.md"], "removed": []}],
    })
    .to_string()
    .into_bytes()
}

fn started_names(cp: &FakeCodePipeline) -> Vec<String> {
    let mut names: Vec<String> = cp
        .requests()
        .iter()
        .map(|(_, j)| j["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// An incomplete push gets its files from the compare API (three pages,
/// token and API headers checked) and starts only the matching pipeline.
#[tokio::test]
async fn an_incomplete_push_resolves_its_files_through_the_compare_api() {
    let (sdk, stack, cp, mut ev) = setup().await;
    mono_filters(&ev).await;
    let gh = FakeGitHub::start(
        &[
            "docs/a.md",
            "services/b/x.rs",
            "docs/b.md",
            "docs/c.md",
            "README.md",
        ],
        2,
    )
    .await;
    ev.github = Some(
        spigot_aws::GitHubApi::new_with(
            &gh.url,
            spigot_aws::GitHubAuth::Token("test-token".into()),
            true,
        )
        .unwrap(),
    );
    let event = pushes(&sdk, &stack, &[("ev-forced", forced_push())]).await;
    let (resp, stats) = ev.handle(event).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!((stats.compared, stats.fallbacks, stats.started), (1, 0, 1));
    assert_eq!(started_names(&cp), ["svc-b"]);
    let calls = gh.calls();
    assert_eq!(calls.len(), 3, "three pages: {calls:?}");
    assert!(
        calls[0]
            .request
            .starts_with("GET /repos/octo-org/mono/compare/b0b0...c0ffee"),
        "{}",
        calls[0].request
    );
    assert!(calls[2].request.ends_with("page=3"));
    for c in &calls {
        assert_eq!(c.authorization.as_deref(), Some("Bearer test-token"));
        assert_eq!(c.accept.as_deref(), Some("application/vnd.github+json"));
        assert_eq!(c.api_version.as_deref(), Some("2022-11-28"));
    }
}

/// When the compare API answers 404, or 403 rate-limited, the push is
/// matched on repository and branch alone, and that is counted.
#[tokio::test]
async fn a_failing_compare_api_falls_back_to_repository_and_branch() {
    for mode in [CompareMode::NotFound, CompareMode::RateLimited] {
        let (sdk, stack, cp, mut ev) = setup().await;
        mono_filters(&ev).await;
        let gh = FakeGitHub::start(&["services/b/x.rs"], 100).await;
        gh.set_mode(mode.clone());
        ev.github = Some(
            spigot_aws::GitHubApi::new_with(
                &gh.url,
                spigot_aws::GitHubAuth::Token("t".into()),
                true,
            )
            .unwrap(),
        );
        let event = pushes(&sdk, &stack, &[("ev-fallback", forced_push())]).await;
        let (resp, stats) = ev.handle(event).await;
        assert!(resp.batch_item_failures.is_empty());
        assert_eq!((stats.compared, stats.fallbacks), (0, 1), "{mode:?}");
        assert_eq!(
            started_names(&cp),
            ["svc-a", "svc-b"],
            "{mode:?}: over-triggering beats a silent miss"
        );
        assert_eq!(
            gh.calls().len(),
            1,
            "{mode:?}: a rate limit an hour away is not waited for"
        );
    }
}

/// A secondary rate limit with `Retry-After: 1` is waited out once.
#[tokio::test]
async fn a_short_retry_after_is_waited_out() {
    let (sdk, stack, cp, mut ev) = setup().await;
    mono_filters(&ev).await;
    let gh = FakeGitHub::start(&["services/a/x.rs"], 100).await;
    gh.set_mode(CompareMode::RetryAfterOnce);
    ev.github = Some(
        spigot_aws::GitHubApi::new_with(&gh.url, spigot_aws::GitHubAuth::Token("t".into()), true)
            .unwrap(),
    );
    let event = pushes(&sdk, &stack, &[("ev-retry", forced_push())]).await;
    let (_, stats) = ev.handle(event).await;
    assert_eq!((stats.compared, stats.started), (1, 1));
    assert_eq!(started_names(&cp), ["svc-a"]);
    assert_eq!(gh.calls().len(), 2);
}

/// As a GitHub App, a JWT signed with the app's key buys an
/// installation token (once), which then authorises the compare calls.
#[tokio::test]
async fn a_github_app_authenticates_with_an_installation_token() {
    let pem = github::app_key_pem();
    let (sdk, stack, _cp, mut ev) = setup().await;
    mono_filters(&ev).await;
    let gh = FakeGitHub::start(&["services/a/x.rs"], 100).await;
    let auth = spigot_aws::GitHubAuth::app("4242", &pem, 77).unwrap();
    ev.github = Some(spigot_aws::GitHubApi::new_with(&gh.url, auth, true).unwrap());
    let event = pushes(&sdk, &stack, &[("ev-app-1", forced_push())]).await;
    assert_eq!(ev.handle(event).await.1.compared, 1);
    let mut second = serde_json::from_slice::<serde_json::Value>(&forced_push()).unwrap();
    second["after"] = json!("d00d");
    let event = pushes(
        &sdk,
        &stack,
        &[("ev-app-2", second.to_string().into_bytes())],
    )
    .await;
    assert_eq!(ev.handle(event).await.1.compared, 1);
    let calls = gh.calls();
    let posts: Vec<_> = calls
        .iter()
        .filter(|c| c.request.starts_with("POST"))
        .collect();
    assert_eq!(
        posts.len(),
        1,
        "the installation token is reused: {calls:?}"
    );
    assert_eq!(posts[0].request, "POST /app/installations/77/access_tokens");
    let jwt = posts[0]
        .authorization
        .as_deref()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], "4242");
    assert_eq!(
        b64.decode(parts[2]).unwrap().len(),
        256,
        "an RSA-2048 signature"
    );
    let gets: Vec<_> = calls
        .iter()
        .filter(|c| c.request.starts_with("GET"))
        .collect();
    assert!(
        gets.iter()
            .all(|c| c.authorization.as_deref() == Some("Bearer ghs_installation_77"))
    );
}

/// A replayed evaluation record whose claim-checked payload was already
/// deleted (its first evaluation finished) does not drag its repository's
/// later pushes into the eval DLQ. Under the evaluator's role S3 says 404: the
/// record is dropped at once, the next push starts. Without s3:ListBucket S3
/// says 403: it is retried (the group held), counted as StoreDenied, and
/// dropped with that reason at its third receive; the next push then starts.
#[tokio::test]
async fn a_replayed_record_whose_payload_is_gone_does_not_hold_its_repository() {
    let (sdk, stack, cp, ev) = setup().await;
    mono_filters(&ev).await;
    let mut big: serde_json::Value =
        serde_json::from_slice(&mono_push(&["services/a/big"])).unwrap();
    big["pad"] = json!("x".repeat(400_000));
    let mut event = pushes(
        &sdk,
        &stack,
        &[
            ("ev-gone", big.to_string().into_bytes()),
            ("ev-next", mono_push(&["services/b/x"])),
        ],
    )
    .await;
    let s3 = spigot_aws::s3_client(&sdk);
    let bucket = stack.get(Resource::Bucket);
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix("payloads/eval/ev-gone/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.key_count(),
        Some(1),
        "the push travelled by claim-check"
    );
    for o in listed.contents() {
        s3.delete_object()
            .bucket(bucket)
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap();
    }
    let receive = |event: &mut SqsEvent, n: u32| {
        for r in &mut event.records {
            r.attributes
                .insert("ApproximateReceiveCount".into(), n.to_string());
        }
        event.clone()
    };
    // Under the template's role: 404, dropped, the next push starts.
    let (resp, stats) = ev.handle(receive(&mut event, 1)).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!((stats.unreadable, stats.started, stats.denied), (1, 1, 0));
    assert_eq!(started_names(&cp), ["svc-b"]);

    // Listing filters/ only (a role that may not list payloads/eval/): 403 twice (held with its
    // group), dropped at the third receive.
    let cp2 = FakeCodePipeline::start().await;
    let role = as_principal_listing_only(&sdk, &stack, Principal::Evaluator, &["filters/*"]).await;
    let ev2 = evaluator_as(&role, &sdk, &stack, &cp2);
    for n in 1..=2 {
        let (resp, stats) = ev2.handle(receive(&mut event, n)).await;
        assert_eq!(
            resp.batch_item_failures.len(),
            2,
            "retried, its group held (receive {n})"
        );
        assert_eq!((stats.denied, stats.started), (1, 0));
    }
    let (resp, stats) = ev2.handle(receive(&mut event, 3)).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!((stats.unreadable, stats.started, stats.denied), (1, 1, 1));
    assert_eq!(started_names(&cp2), ["svc-b"]);
    println!(
        "ledger replayed record: in 2, started 1 (svc-b), dropped 1 (404 at once; 403 at the third receive), eval DLQ 0"
    );
}

/// The evaluation queue's maxReceiveCount no longer decides: a push whose
/// start keeps failing is dead-lettered by the evaluator itself after 5 failed
/// evaluations (its own count in the bucket, not the receive count), with the
/// reason, and its repository's later push goes on in the same batch. The
/// later push, held behind it 4 times (4 receives), is not dead-lettered.
#[tokio::test]
async fn a_push_that_keeps_failing_is_dead_lettered_after_5_evaluations_and_its_repository_goes_on()
{
    let (sdk, stack, cp, _) = setup().await;
    let role = as_principal(&sdk, &stack, Principal::Evaluator).await;
    let ev = evaluator_as(&role, &sdk, &stack, &cp).with_letters(
        spigot_aws::SqsEvalLetters::from_settings(&role, &stack.settings()),
    );
    put_filter_in(&admin_filters_of(&ev.filters).await, json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "svc-a", "Include": ["services/a/**"]})).await;
    cp.set_throttle(true);
    let mut event = pushes(
        &sdk,
        &stack,
        &[
            ("ev-stuck", mono_push(&["services/a/x"])),
            ("ev-after", mono_push(&["docs/readme.md"])),
        ],
    )
    .await;
    for n in 1..=5u32 {
        for r in &mut event.records {
            r.attributes
                .insert("ApproximateReceiveCount".into(), n.to_string());
        }
        let (resp, stats) = ev.handle(event.clone()).await;
        if n < 5 {
            assert_eq!(
                resp.batch_item_failures.len(),
                2,
                "retried and held (evaluation {n})"
            );
            assert_eq!((stats.retried, stats.held, stats.dead_lettered), (1, 1, 0));
        } else {
            assert!(
                resp.batch_item_failures.is_empty(),
                "the later push went on"
            );
            assert_eq!(
                (stats.retried, stats.held, stats.dead_lettered, stats.pushes),
                (0, 0, 1, 2)
            );
        }
    }
    let dead = take_all(&sdk, stack.get(Resource::EvalDlqUrl)).await;
    println!(
        "ledger eval give-up: in 2, dead-lettered {} ({:?}), went on 1",
        dead.len(),
        dead.first().map(|d| d.1.get("Reason"))
    );
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].1["Reason"].contains("gave up after 5 evaluation attempts"),
        "{:?}",
        dead[0].1
    );
    assert!(dead[0].0.contains("ev-stuck"));
}

/// The filter store of `filters`' bucket with the admin credentials.
async fn admin_filters_of(filters: &spigot_aws::S3Filters) -> spigot_aws::S3Filters {
    spigot_aws::S3Filters::new(spigot_aws::s3_client(&sdk().await), filters.bucket())
}

/// A stand-in GitHub whose compare API answers page `n` with one file and a
/// `Link` to `next(n)` (none when it gives `None`). Returns its base URL.
async fn paging_github(next: fn(&str, u32) -> Option<String>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let me = base.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let me = me.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let page: u32 = path
                    .split(['?', '&'])
                    .find_map(|kv| kv.strip_prefix("page="))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(1);
                let body =
                    serde_json::json!({"files": [{"filename": format!("f{page}")}]}).to_string();
                let link = next(&me, page)
                    .map(|u| format!("Link: <{u}>; rel=\"next\"\r\n"))
                    .unwrap_or_default();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{link}Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    base
}

/// The GitHub client follows pagination only on the API's own origin,
/// stops at a page cap and a body cap, and refuses an http:// API unless the
/// test-only switch is on. Control: same-origin pages are followed.
#[tokio::test(flavor = "multi_thread")]
async fn the_github_client_keeps_its_token_on_the_api_host_and_bounds_what_it_reads() {
    use spigot_core::ports::GitHub;
    let token = || spigot_aws::GitHubAuth::Token("ghp_secret".into());
    let err = spigot_aws::GitHubApi::new("http://127.0.0.1:1", token()).unwrap_err();
    assert!(err.to_string().contains("not https"), "{err}");
    // Control: three pages on the same origin are all read.
    let same = paging_github(|me, n| {
        (n < 3).then(|| format!("{me}/repos/o/r/compare/a...b?per_page=100&page={}", n + 1))
    })
    .await;
    let api = spigot_aws::GitHubApi::new_with(&same, token(), true).unwrap();
    let files = api.compare_files("o/r", "a", "b").await.unwrap();
    assert_eq!(files, ["f1", "f2", "f3"]);
    // A next page elsewhere is not followed: the token would go there.
    let elsewhere =
        paging_github(|_, _| Some("http://169.254.169.254/latest/?page=2".into())).await;
    let api = spigot_aws::GitHubApi::new_with(&elsewhere, token(), true).unwrap();
    let err = api.compare_files("o/r", "a", "b").await.unwrap_err();
    assert!(err.to_string().contains("not followed"), "{err}");
    // Endless pages stop at the cap; a body over the cap is not read.
    let endless = paging_github(|me, n| Some(format!("{me}/x?page={}", n + 1))).await;
    let api = spigot_aws::GitHubApi::new_with(&endless, token(), true)
        .unwrap()
        .with_limits(5, 1024);
    let err = api.compare_files("o/r", "a", "b").await.unwrap_err();
    assert!(err.to_string().contains("more than 5 pages"), "{err}");
    let api = spigot_aws::GitHubApi::new_with(&same, token(), true)
        .unwrap()
        .with_limits(5, 10);
    let err = api.compare_files("o/r", "a", "b").await.unwrap_err();
    assert!(err.to_string().contains("larger than 10 bytes"), "{err}");
}

/// A filter may name a trigger instead of a pipeline. Under the
/// evaluator's own role (IAM enforced), a matching push raises it: the push's
/// exact bytes are kept beside the trigger and the request names them with
/// GitHub's signature, for every agent that follows the trigger to check.
/// Positive control beside it: the pipeline filter of the same push starts.
/// A push the trigger filter does not match raises nothing.
#[tokio::test]
async fn a_filter_with_a_trigger_raises_it_with_the_push_and_its_signature() {
    use spigot_core::ports::{Read, Triggers};
    use spigot_core::trigger::{self, Keys};
    let (sdk, stack, cp, ev) = setup().await;
    put_filter(&ev, json!({"Repository": "octo-org/mono", "Branch": "main", "Trigger": "web", "Include": ["services/a/**"]})).await;
    put_filter(&ev, json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "svc-a", "Include": ["services/a/**"]})).await;
    let deploy = push_at(now_secs() - 5, "a1");
    let docs = mono_push(&["docs/readme.md"]);
    let event = pushes(
        &sdk,
        &stack,
        &[("ev-deploy", deploy.clone()), ("ev-docs", docs)],
    )
    .await;
    let (resp, stats) = ev.handle(event).await;
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    assert_eq!((stats.raised, stats.started, stats.pushes), (1, 1, 2));
    assert_eq!(started_names(&cp), ["svc-a"]);
    // Read back as an agent reads it (admin credentials: the bucket as it is).
    let store =
        spigot_aws::S3Triggers::new(spigot_aws::s3_client(&sdk), stack.get(Resource::Bucket));
    let requests = trigger::requests_after(&store, "web", 0, 10).await.unwrap();
    assert_eq!(requests.len(), 1, "one push matched");
    let request = requests[0].1.clone().unwrap();
    assert_eq!(request.by, "evaluator");
    assert!(request.data.is_empty());
    let push = request.push.unwrap();
    assert_eq!(push.delivery, "ev-deploy");
    assert_eq!(push.sha256, sha256_hex(&deploy));
    assert_eq!(
        push.signature,
        spigot_core::signature::sign_sha256(SECRET.as_bytes(), &deploy)
    );
    match store
        .read(&Keys("web").body(&push.sha256), None)
        .await
        .unwrap()
    {
        Read::Found { bytes, .. } => assert_eq!(bytes, deploy, "the exact bytes"),
        other => panic!("no body: {other:?}"),
    }
}
