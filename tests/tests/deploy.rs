//! Deployed, it behaves as tested: moto enforces IAM (tools/moto_server.py
//! --iam), each component runs under exactly the policy SAM's translation of
//! the template gives it, and S3 answers 403 for an absent key to a principal
//! that may not list it. Every missing-key path runs both ways: under the
//! template's role (ListBucket on its prefixes: 404) and under the same role
//! without s3:ListBucket (403), as a deployment without it would.

use std::time::{Duration, Instant};

use spigot_core::State;
use spigot_core::ports::{Stages, Switch};
use spigot_core::resources::Resource;
use spigot_e2e::*;

fn code<E: spigot_aws::aws_sdk_sqs::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("").to_string()
}

/// Positive control of the enforcement: a role is refused what its policy
/// does not allow (and the admin, on the same calls, is not); an unknown key is refused.
#[tokio::test(flavor = "multi_thread")]
async fn calls_outside_the_template_policy_are_refused() {
    let (sdk, stack) = stack().await;
    let drainer = as_principal(&sdk, &stack, Principal::Drainer).await;
    let bucket = stack.get(Resource::Bucket);
    let put_filter = |sdk: spigot_aws::aws_config::SdkConfig| async move {
        spigot_aws::s3_client(&sdk)
            .put_object()
            .bucket(bucket)
            .key("filters/octo-org/mono/main/x.json")
            .body(b"{}".to_vec().into())
            .send()
            .await
    };
    let refused = put_filter(drainer.clone()).await.unwrap_err();
    assert_eq!(code(&refused), "AccessDenied");
    put_filter(sdk.clone()).await.expect("the admin may");

    let eval = stack.get(Resource::EvalUrl);
    let send_eval = |sdk: spigot_aws::aws_config::SdkConfig| async move {
        spigot_aws::aws_sdk_sqs::Client::new(&sdk)
            .send_message()
            .queue_url(eval)
            .message_body("x")
            .message_group_id("g")
            .message_deduplication_id(unique("d"))
            .send()
            .await
    };
    assert!(
        send_eval(drainer.clone()).await.is_err(),
        "the drainer may not feed the evaluator"
    );
    send_eval(sdk.clone()).await.expect("the admin may");
    let stranger = iam::with_keys(&sdk, "AKIAUNKNOWNKEY000000", "nope");
    assert!(
        send_eval(stranger).await.is_err(),
        "an unknown key is refused"
    );
}

/// The receiver may switch its own API's stage and no other (it could PATCH
/// every stage called `live` in the region before).
#[tokio::test(flavor = "multi_thread")]
async fn the_receiver_switches_only_its_own_stage() {
    let (sdk, stack) = stack().await;
    let (_, other) = stack_pair().await;
    let role = as_principal(&sdk, &stack, Principal::Receiver).await;
    let stages = spigot_aws::ApiStages::new(&role);
    let own = switch(&sdk, &stack).stage().clone();
    stages
        .set(&own, State::Draining)
        .await
        .expect("its own stage");
    assert_eq!(switch(&sdk, &stack).read().await.unwrap(), State::Draining);
    let foreign = switch(&sdk, &other).stage().clone();
    let refused = stages.set(&foreign, State::Draining).await;
    assert!(refused.is_err(), "another API's stage: {refused:?}");
    assert_eq!(switch(&sdk, &other).read().await.unwrap(), State::On);
}

async fn stack_pair() -> (
    spigot_aws::aws_config::SdkConfig,
    spigot_aws::local::LocalStack,
) {
    stack().await
}

/// The drainer's role as the template gives it, or the same without s3:ListBucket.
async fn drainer_role(
    sdk: &spigot_aws::aws_config::SdkConfig,
    stack: &spigot_aws::local::LocalStack,
    without_list: bool,
) -> spigot_aws::aws_config::SdkConfig {
    if without_list {
        as_principal_listing_only(sdk, stack, Principal::Drainer, &[]).await
    } else {
        as_principal(sdk, stack, Principal::Drainer).await
    }
}

/// Drains until `done` holds, at most 40 s; the summaries of the runs.
async fn drain_until(
    d: &RealDrainer,
    mut done: impl AsyncFnMut() -> bool,
) -> Vec<spigot_engine::Summary> {
    let start = Instant::now();
    let mut runs = Vec::new();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "not done after {} runs: {runs:?}",
            runs.len()
        );
        runs.push(d.drain(None).await);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    runs
}

/// A repository's head hook is refused until the engine gives up on it (3
/// attempts); its follower, held and released at every run meanwhile (its
/// receive count grows), then fails once too. It must be retried, not
/// dead-lettered on its first failure: its attempt count is absent, which
/// S3 answers with 404 under the template's role and 403 without ListBucket,
/// and a 403 is counted (StoreDenied) and logged, never the receive count.
async fn follower_budget(without_list: bool) -> (usize, u64, Vec<String>) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let role = drainer_role(&sdk, &stack, without_list).await;
    let mut d = drainer_as(&role, &stack, &target.url, 1);
    d.engine.config.policy.max_attempts = 3;
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 2, &["octo-org/alpha"], "OFF")
        .await;
    let follower = ledger.sent[1].0.clone();
    let at_follower = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = at_follower.clone();
    target.set_rule(move |rec, _| {
        if rec.header("x-github-delivery") == Some(&follower) {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Some(503)
    });
    switch(&sdk, &stack).set(State::On).await.unwrap();
    let dlq = stack.get(Resource::DlqUrl).to_string();
    // Until the head is dead-lettered, then one more run: the follower's first attempt.
    let mut runs = drain_until(&d, async || depth(&sdk, &dlq).await.0 >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    runs.push(d.drain(None).await);
    let denied = runs.iter().map(|s| s.denied).sum();
    let dead = take_all(&sdk, &dlq).await;
    let reasons = dead.iter().map(|(_, a)| a["Reason"].clone()).collect();
    let attempts_at_follower = at_follower.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "ledger follower budget (without ListBucket: {without_list}): in 2, delivered 0, dlq {}, follower attempts {attempts_at_follower}, denied reads {denied}",
        dead.len()
    );
    assert!(attempts_at_follower >= 1, "the follower was attempted");
    (dead.len(), denied, reasons)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_keeps_its_attempt_budget_with_and_without_list_bucket() {
    let (dead, denied, reasons) = follower_budget(false).await;
    assert_eq!((dead, denied), (1, 0), "{reasons:?}");
    assert!(reasons[0].contains("gave up after 3"), "{reasons:?}");
    let (dead, denied, reasons) = follower_budget(true).await;
    assert_eq!(dead, 1, "only the head is dead-lettered: {reasons:?}");
    assert!(denied > 0, "the refused reads are counted");
}

/// A buffered claim-checked hook whose body is gone (the lifecycle, another
/// copy's delivery): under the template's role S3 says 404 and it is
/// dead-lettered at once as missing; without ListBucket S3 says 403 and it is
/// dead-lettered after 3 refused reads with that reason, instead of blocking
/// its repository for its whole attempt budget. Either way the repository's
/// next hook is delivered after it.
async fn missing_body(without_list: bool) -> (Vec<String>, String, u64, usize) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let role = drainer_role(&sdk, &stack, without_list).await;
    let d = drainer_as(&role, &stack, &target.url, 1);
    let big = serde_json::json!({"repository": {"full_name": "octo-org/big"}, "pad": "x".repeat(400_000)})
        .to_string()
        .into_bytes();
    let small = push_payload("octo-org/big", "after").into_bytes();
    for (id, body) in [("gone", &big), ("after", &small)] {
        let (status, _) = answer(
            &r.handle_event(&signed_request("push", id, body, Some("OFF")), 1)
                .await,
        );
        assert_eq!(status, 202);
    }
    let s3 = spigot_aws::s3_client(&sdk);
    let bucket = stack.get(Resource::Bucket);
    let keys = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix("payloads/")
        .send()
        .await
        .unwrap();
    let keys: Vec<String> = keys
        .contents()
        .iter()
        .filter_map(|o| o.key().map(String::from))
        .collect();
    assert!(!keys.is_empty(), "the big hook travels by claim-check");
    for k in &keys {
        s3.delete_object()
            .bucket(bucket)
            .key(k)
            .send()
            .await
            .unwrap();
    }
    switch(&sdk, &stack).set(State::On).await.unwrap();
    let buffer = stack.get(Resource::BufferUrl).to_string();
    let runs = drain_until(&d, async || depth(&sdk, &buffer).await == (0, 0)).await;
    let got = target
        .accepted()
        .iter()
        .map(|r| r.header("x-github-delivery").unwrap().to_string())
        .collect();
    let dead = take_all(&sdk, stack.get(Resource::DlqUrl)).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let denied = runs.iter().map(|s| s.denied).sum();
    println!(
        "ledger missing body (without ListBucket: {without_list}): in 2, delivered {got:?}, dlq 1, runs {}, denied {denied}",
        runs.len()
    );
    (got, dead[0].1["Reason"].clone(), denied, runs.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_claim_check_body_is_dead_lettered_with_and_without_list_bucket() {
    let (got, reason, denied, _) = missing_body(false).await;
    assert_eq!(got, ["after"]);
    assert!(reason.contains("missing"), "{reason}");
    assert_eq!(denied, 0);
    let (got, reason, denied, runs) = missing_body(true).await;
    assert_eq!(got, ["after"], "the repository is not blocked");
    assert!(
        reason.contains("403") && reason.contains("3 reads refused"),
        "{reason}"
    );
    assert!(
        denied >= 3,
        "3 refused body reads (and the follower's absent attempt count): {denied}"
    );
    assert!(
        runs <= 6,
        "dead-lettered within a few runs, not the attempt budget: {runs}"
    );
}
