//! The drainer and the zero-loss promise, each scenario with a ledger
//! (moto + a switchable local target).

use spigot_core::resources::Resource;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use spigot_core::ports::Switch;
use spigot_core::spigot::State;
use spigot_e2e::*;
use spigot_engine::{Counters, Skipped, Stop};

const REPOS: [&str; 5] = [
    "octo-org/alpha",
    "octo-org/beta",
    "octo-org/gamma",
    "other/delta",
    "other/epsilon",
];

/// Runs the drainer until the buffer is empty (visible and in flight), at most `max_wait`.
async fn drain_until_empty(
    d: &RealDrainer,
    sdk: &spigot_aws::aws_config::SdkConfig,
    url: &str,
    max_wait: Duration,
) -> usize {
    let start = Instant::now();
    let mut runs = 0;
    loop {
        d.drain(None).await;
        runs += 1;
        if depth(sdk, url).await == (0, 0) {
            return runs;
        }
        assert!(
            start.elapsed() < max_wait,
            "buffer not empty after {runs} runs: {:?}",
            depth(sdk, url).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn off_window_then_on_delivers_everything_in_order() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 8).await;
    switch(&sdk, &stack).set(State::Off).await.unwrap();

    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 200, &REPOS, "OFF").await;
    let off = d.drain(None).await;
    assert_eq!(off.skipped, Some(Skipped::Off));
    assert_eq!(target.attempts(), 0);
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await.0, 200);

    switch(&sdk, &stack).set(State::On).await.unwrap();
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(60),
    )
    .await;
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    println!("ledger off-window: in 200, delivered {delivered}, duplicates {duplicates}, dlq 0");
    assert_eq!((delivered, duplicates), (200, 0));
    assert!(peek_all(&sdk, stack.get(Resource::DlqUrl)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn target_down_spends_no_receives_then_everything_arrives() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    target.set_status(503);
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 4).await;

    let mut ledger = Ledger::default();
    // The first is forwarded, refused with 503 and buffered; the receiver then
    // holds DRAINING itself and buffers the other 29 without trying,
    // although their requests still say ON.
    ledger.send_round_robin(&r, 30, &REPOS, "ON").await;
    let attempts_during_receive = target.attempts();
    assert_eq!(attempts_during_receive, 1);
    for _ in 0..3 {
        let s = d.drain(None).await;
        assert_eq!(s.skipped, Some(Skipped::TargetDown));
    }
    assert_eq!(
        target.attempts(),
        attempts_during_receive,
        "no delivery attempted during the outage"
    );
    assert!(
        d.engine.buffer.receive_counts.lock().unwrap().is_empty(),
        "nothing received during the outage"
    );
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await, (30, 0));

    target.set_status(200);
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(60),
    )
    .await;
    let counts = d.engine.buffer.receive_counts.lock().unwrap().clone();
    assert_eq!(counts.len(), 30);
    assert!(
        counts.iter().all(|&c| c == 1),
        "first receive after the outage: {counts:?}"
    );
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    println!("ledger target-down: in 30, delivered {delivered}, duplicates {duplicates}, dlq 0");
    assert_eq!((delivered, duplicates), (30, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn flapping_target_loses_nothing() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 4).await;
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 60, &REPOS, "OFF").await;
    target.set_rule(|_, n| (n % 3 == 0).then_some(503));
    switch(&sdk, &stack).set(State::On).await.unwrap();
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(90),
    )
    .await;
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    println!(
        "ledger flapping: in 60, delivered {delivered}, duplicates {duplicates}, attempts {}, dlq 0",
        target.attempts()
    );
    assert_eq!((delivered, duplicates), (60, 0));
    assert!(target.attempts() > 60, "the rule did fail some requests");
    assert!(peek_all(&sdk, stack.get(Resource::DlqUrl)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drainer_killed_mid_run_loses_nothing() {
    let (sdk, stack) = stack().await;
    set_visibility_timeout(&sdk, stack.get(Resource::BufferUrl), 2).await;
    let target = FakeTarget::start().await;
    target.set_delay_ms(20);
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 4).await;
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 80, &REPOS, "OFF").await;
    switch(&sdk, &stack).set(State::On).await.unwrap();

    // Drop the handler's future once 15 hooks have arrived.
    tokio::select! {
        _ = d.drain(None) => panic!("the drain should not finish before it is dropped"),
        _ = async { while target.accepted().len() < 15 { tokio::time::sleep(Duration::from_millis(5)).await } } => {}
    }
    let at_kill = target.accepted().len();
    // What was in flight comes back after the visibility timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(60),
    )
    .await;
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    println!(
        "ledger killed: in 80, delivered {delivered}, duplicates {duplicates} (delivered before the kill: {at_kill}), dlq 0"
    );
    assert_eq!(delivered, 80);
    // Duplicates only for hooks delivered but not yet deleted: at most the batches in flight.
    assert!(
        duplicates <= at_kill.min(4 * 10),
        "duplicates {duplicates} exceed what was in flight"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_cut_by_the_deadline_releases_the_rest() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    target.set_delay_ms(200);
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut d = drainer(&sdk, &stack, &target.url, 1).await;
    d.engine.config.stop_before = Duration::from_millis(300);
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 20, &["octo-org/one"], "OFF")
        .await;
    switch(&sdk, &stack).set(State::On).await.unwrap();

    let counters = Counters::default();
    // 20 hooks at 200 ms each need 4 s; the deadline leaves 2 s.
    let deadline = Instant::now() + Duration::from_millis(2000);
    let s = d
        .engine
        .run(Some(deadline), &AtomicBool::new(false), &counters)
        .await;
    assert_eq!(s.stop, Some(Stop::Deadline));
    assert!(s.delivered >= 1 && s.delivered < 20, "{s:?}");
    assert!(s.released >= 1, "{s:?}");
    // Released at once: nothing left invisible.
    assert_eq!(
        depth(&sdk, stack.get(Resource::BufferUrl)).await,
        (20 - s.delivered, 0)
    );
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(60),
    )
    .await;
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    println!(
        "ledger deadline: in 20, delivered {delivered}, duplicates {duplicates}, first run {s:?}"
    );
    assert_eq!((delivered, duplicates), (20, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_dead_letters_only_that_repository() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 4).await;
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 25, &REPOS, "OFF").await;
    target.set_rule(|rec, _| {
        String::from_utf8_lossy(&rec.body)
            .contains("octo-org/beta")
            .then_some(404)
    });
    switch(&sdk, &stack).set(State::On).await.unwrap();
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(60),
    )
    .await;
    let beta: Vec<String> = ledger
        .sent
        .iter()
        .filter(|(_, r, _)| r == "octo-org/beta")
        .map(|(d, _, _)| d.clone())
        .collect();
    let (delivered, duplicates) = ledger.check(&target.accepted(), &beta);
    let dead = peek_all(&sdk, stack.get(Resource::DlqUrl)).await;
    println!(
        "ledger 404: in 25, delivered {delivered}, duplicates {duplicates}, dlq {}",
        dead.len()
    );
    assert_eq!((delivered, duplicates, dead.len()), (20, 0, 5));
    for (body, attrs) in &dead {
        let env = spigot_core::Envelope::decode(body).unwrap();
        assert!(beta.contains(&env.delivery));
        assert_eq!(attrs.get("Status").map(String::as_str), Some("404"));
        assert!(attrs["Reason"].contains("404"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_is_dead_lettered_and_the_drain_goes_on() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 2).await;
    spigot_aws::aws_sdk_sqs::Client::new(&sdk)
        .send_message()
        .queue_url(stack.get(Resource::BufferUrl))
        .message_body("this is not an envelope")
        .message_group_id("octo-org/alpha")
        .message_deduplication_id("poison-1")
        .send()
        .await
        .unwrap();
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 10, &REPOS, "OFF").await;
    switch(&sdk, &stack).set(State::On).await.unwrap();
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(60),
    )
    .await;
    let (delivered, _) = ledger.check(&target.accepted(), &[]);
    assert_eq!(delivered, 10);
    let dead = peek_all(&sdk, stack.get(Resource::DlqUrl)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "this is not an envelope");
    assert!(
        dead[0].1["Reason"].contains("not a Spigot envelope"),
        "{:?}",
        dead[0].1
    );
    println!("ledger poison: in 10 + 1 poison, delivered {delivered}, dlq 1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5_mb_hook_travels_by_claim_check_and_leaves_nothing_behind() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 5000).await;
    let d = drainer(&sdk, &stack, &target.url, 1).await;
    let pad = "x".repeat(5 * 1024 * 1024);
    let body = serde_json::json!({"ref": "refs/heads/main", "repository": {"full_name": "octo-org/big"}, "pad": pad})
        .to_string()
        .into_bytes();
    let (status, json) = answer(
        &r.handle_event(&signed_request("push", "big-1", &body, Some("OFF")), 1)
            .await,
    );
    assert_eq!(status, 202, "{json}");
    let s3 = spigot_aws::s3_client(&sdk);
    let msg = &peek_all(&sdk, stack.get(Resource::BufferUrl)).await[0].0;
    let key = spigot_core::Envelope::decode(msg)
        .unwrap()
        .claim_key()
        .unwrap()
        .to_string();
    assert!(key.starts_with("payloads/big-1/"), "{key}");
    let stored = s3
        .get_object()
        .bucket(stack.get(Resource::Bucket))
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.content_length(), Some(body.len() as i64));
    assert!(
        msg.len() < 4096,
        "the message carries a reference, not the body"
    );

    switch(&sdk, &stack).set(State::On).await.unwrap();
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(60),
    )
    .await;
    let got = target.accepted();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body, "byte-identical");
    assert!(
        s3.head_object()
            .bucket(stack.get(Resource::Bucket))
            .key(&key)
            .send()
            .await
            .is_err(),
        "the claim-check object is deleted after delivery"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_state_does_not_drain() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let d = drainer(&sdk, &stack, &target.url, 1).await;
    spigot_aws::aws_sdk_apigateway::Client::new(&sdk)
        .update_stage()
        .rest_api_id(stack.get(Resource::ApiId))
        .stage_name(stack.get(Resource::Stage))
        .patch_operations(
            spigot_aws::aws_sdk_apigateway::types::PatchOperation::builder()
                .op(spigot_aws::aws_sdk_apigateway::types::Op::Replace)
                .path("/variables/spigot_state")
                .value("SOMETIMES")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let s = d.drain(None).await;
    assert!(
        matches!(&s.skipped, Some(Skipped::StateInvalid(e)) if e.contains("SOMETIMES")),
        "{:?}",
        s.skipped
    );
}

/// A dead letter that cannot be sent holds its group back like a
/// retryable failure: the later hooks of its repository must not overtake it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_dead_letter_send_holds_its_repository_back() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 1).await;
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 3, &["octo-org/alpha"], "OFF")
        .await;
    let first = ledger.sent[0].0.clone();
    target.set_rule(move |rec, _| (rec.header("x-github-delivery") == Some(&first)).then_some(404));
    d.engine
        .buffer
        .failing_dead_letters
        .store(1, std::sync::atomic::Ordering::SeqCst);
    switch(&sdk, &stack).set(State::On).await.unwrap();

    let run = d.drain(None).await;
    assert_eq!(
        run.delivered, 0,
        "later hooks overtook the undead-lettered head: {run:?}"
    );
    assert_eq!(run.retried, 1);
    // Positive control: once the DLQ answers, the head is dead-lettered and the rest follow.
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(30),
    )
    .await;
    let head = vec![ledger.sent[0].0.clone()];
    let (delivered, duplicates) = ledger.check(&target.accepted(), &head);
    let dead = take_all(&sdk, stack.get(Resource::DlqUrl)).await;
    println!(
        "ledger failed DLQ send: in 3, delivered {delivered}, duplicates {duplicates}, dlq {}",
        dead.len()
    );
    assert_eq!((delivered, duplicates, dead.len()), (2, 0, 1));
    assert!(dead[0].1["Reason"].contains("404"));
}

/// The engine owns the retry budget. A hook its target keeps refusing
/// with 503 is dead-lettered with a reason after `max_attempts` attempts
/// (not by SQS after N receives, which holds and releases also count), and
/// the hooks held behind it are then delivered on their first attempt.
#[tokio::test(flavor = "multi_thread")]
async fn the_engine_dead_letters_after_its_own_attempt_cap_with_a_reason() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut d = drainer(&sdk, &stack, &target.url, 1).await;
    d.engine.config.policy.max_attempts = 3;
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 3, &["octo-org/alpha"], "OFF")
        .await;
    let head = ledger.sent[0].0.clone();
    let refused = head.clone();
    target
        .set_rule(move |rec, _| (rec.header("x-github-delivery") == Some(&refused)).then_some(503));
    switch(&sdk, &stack).set(State::On).await.unwrap();
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(60),
    )
    .await;

    let (delivered, duplicates) = ledger.check(&target.accepted(), std::slice::from_ref(&head));
    let dead = take_all(&sdk, stack.get(Resource::DlqUrl)).await;
    println!(
        "ledger attempt cap: in 3, delivered {delivered}, duplicates {duplicates}, dlq {}, attempts at the target {}",
        dead.len(),
        target.attempts()
    );
    assert_eq!((delivered, duplicates, dead.len()), (2, 0, 1));
    assert!(
        dead[0].1["Reason"].contains("gave up after 3 delivery attempts")
            && dead[0].1["Reason"].contains("503"),
        "{:?}",
        dead[0].1
    );
    assert_eq!(
        target.attempts(),
        3 + 2,
        "three attempts at the head, one each for the rest"
    );
    // The attempt count is forgotten once the hook is dead-lettered.
    let left = spigot_aws::s3_client(&sdk)
        .list_objects_v2()
        .bucket(stack.get(Resource::Bucket))
        .prefix("attempts/")
        .send()
        .await
        .unwrap();
    assert_eq!(left.key_count(), Some(0));
}

/// A 503 with `Retry-After` is not retried before the target asked.
#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_respected() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 1).await;
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 1, &["octo-org/alpha"], "OFF")
        .await;
    target.set_rule(|_, n| (n == 1).then_some(503));
    target.set_retry_after(4);
    switch(&sdk, &stack).set(State::On).await.unwrap();
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(30),
    )
    .await;
    let times = target.arrivals();
    assert_eq!(times.len(), 2);
    let waited = times[1] - times[0];
    // The test policy backs off 1-2 s; the target asked for 4.
    assert!(
        waited >= Duration::from_millis(3900),
        "retried after {waited:?}"
    );
    assert_eq!(ledger.check(&target.accepted(), &[]), (1, 0));
}

/// `DRAIN_RATE=5` delivers 50 hooks no faster than five a second,
/// all workers together, in order per repository.
#[tokio::test(flavor = "multi_thread")]
async fn drain_rate_paces_all_workers_together() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut settings = stack.settings();
    settings.drain_rate = Some(5.0);
    let mut d = drainer(&sdk, &stack, &target.url, 8).await;
    d.engine.config.rate = spigot_engine::EngineConfig::lambda(&settings).rate;
    assert!(
        d.engine.config.rate.is_some(),
        "DRAIN_RATE reaches the engine"
    );
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 50, &REPOS, "OFF").await;
    switch(&sdk, &stack).set(State::On).await.unwrap();
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(60),
    )
    .await;
    let arrivals = target.arrivals();
    let span = *arrivals.last().unwrap() - arrivals[0];
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    println!(
        "ledger DRAIN_RATE=5: in 50, delivered {delivered}, duplicates {duplicates}, first to last {span:?}"
    );
    assert_eq!((delivered, duplicates), (50, 0));
    assert!(span >= Duration::from_millis(9_500), "50 hooks in {span:?}");
}

/// An operator's OFF during a drain wins. Six hooks of one repository
/// buffered while OFF, `spigot on` (DRAINING), a slow target (1.5 s a hook),
/// `spigot off` 2 s later: the drain stops starting deliveries within its
/// check interval, releases what it holds, and never sets ON over the OFF.
#[tokio::test(flavor = "multi_thread")]
async fn an_off_during_a_drain_stops_it_and_stays_off() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut d = drainer(&sdk, &stack, &target.url, 1).await;
    d.engine.config.stop_before = Duration::from_millis(100);
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 6, &["octo-org/alpha"], "OFF")
        .await;
    target.set_delay_ms(1500);
    let operator = switch(&sdk, &stack);
    operator.set(State::Draining).await.unwrap();
    let (summary, off_at) = tokio::join!(d.drain(None), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        operator.set(State::Off).await.unwrap();
        Instant::now()
    });
    let state = operator.read().await.unwrap();
    let after_off = target
        .arrivals()
        .iter()
        .filter(|t| **t > off_at + spigot_engine::SWITCH_CHECK_EVERY + Duration::from_millis(300))
        .count();
    let delivered = target.accepted().len();
    let (waiting, in_flight) = depth(&sdk, stack.get(Resource::BufferUrl)).await;
    println!(
        "ledger OFF mid-drain: in 6, delivered {delivered}, still buffered {waiting}+{in_flight}, started after OFF was seen {after_off}, state {state}, summary {summary:?}"
    );
    assert_eq!(
        state,
        State::Off,
        "the drain must not overwrite an operator's OFF"
    );
    assert_eq!(after_off, 0, "no delivery starts once the drain saw OFF");
    assert!(delivered < 6, "the drain stopped: {delivered} delivered");
    assert_eq!(delivered as u64 + waiting + in_flight, 6, "nothing lost");
    assert_eq!(summary.switched_to, None);
    // Positive control: ON again, the rest arrives, in order.
    operator.set(State::Draining).await.unwrap();
    target.set_delay_ms(0);
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(30),
    )
    .await;
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    assert_eq!((delivered, duplicates), (6, 0));
}

/// A valid JSON body holding characters SQS refuses in a message
/// (U+FFFF, U+FFFE unescaped) is still buffered and delivered byte-identical
/// (the moto wrapper refuses them as SQS does: InvalidMessageContents).
#[tokio::test(flavor = "multi_thread")]
async fn a_body_with_characters_sqs_refuses_is_buffered_and_delivered_identical() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 1).await;
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "repository": {"full_name": "octo-org/odd"},
        "head_commit": {"message": "noncharacters \u{FFFF} and \u{FFFE} in a commit message"},
    })
    .to_string()
    .into_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains('\u{FFFF}'),
        "unescaped"
    );
    let (status, json) = answer(
        &r.handle_event(&signed_request("push", "odd-1", &body, Some("OFF")), 1)
            .await,
    );
    assert_eq!(status, 202, "{json}");
    switch(&sdk, &stack).set(State::On).await.unwrap();
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(20),
    )
    .await;
    let got = target.accepted();
    println!(
        "ledger odd characters: in 1, delivered {}, dlq 0",
        got.len()
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body, "byte-identical");
}

/// A push is forwarded while ON even when its evaluation cannot be
/// queued; the answer is a 503 naming the evaluation, so GitHub and the
/// reconciler redeliver it for its pipelines.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_is_forwarded_when_its_evaluation_cannot_be_queued() {
    let (sdk, mut stack) = stack().await;
    let target = FakeTarget::start().await;
    // An evaluation queue that does not exist: every enqueue fails.
    let eval = stack
        .get(Resource::EvalUrl)
        .replace("-eval.fifo", "-gone.fifo");
    stack.resources = stack.resources.clone().with(Resource::EvalUrl, eval);
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let body = push_payload("octo-org/alpha", "1").into_bytes();
    let (status, json) = answer(
        &r.handle_event(&signed_request("push", "eval-down", &body, Some("ON")), 1)
            .await,
    );
    println!(
        "ledger eval down: in 1, forwarded {}, answer {status} {json}",
        target.accepted().len()
    );
    assert_eq!(target.accepted().len(), 1, "forwarded all the same");
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["status"], "delivered");
    assert!(
        json["error"].as_str().unwrap().contains("evaluation"),
        "{json}"
    );
    // Positive control: with the queue there, a push is answered 200.
    let (_, stack) = spigot_e2e::stack().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let (status, _) = answer(
        &r.handle_event(&signed_request("push", "eval-up", &body, Some("ON")), 1)
            .await,
    );
    assert_eq!(status, 200);
}

/// A drain from DRAINING during which, once the spigot reads ON, a request
/// that still saw DRAINING buffers one more hook of `octo-org/alpha` (which
/// `refusing`, when given, then answers 503).
async fn drain_with_a_straggler(
    d: &RealDrainer,
    r: &RealReceiver,
    ledger: &mut Ledger,
    operator: &spigot_aws::StageSwitch,
    refusing: Option<&FakeTarget>,
) -> spigot_engine::Summary {
    operator.set(State::Draining).await.unwrap();
    let straggler = async {
        let start = Instant::now();
        while operator.read().await.unwrap() != State::On {
            assert!(start.elapsed() < Duration::from_secs(20), "never ON");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(target) = refusing {
            target.set_status(503);
        }
        ledger
            .send_round_robin(r, 1, &["octo-org/alpha"], "DRAINING")
            .await;
    };
    let (summary, ()) = tokio::join!(d.drain(None), straggler);
    summary
}

/// After the drainer sets ON it keeps draining for its grace: a hook
/// buffered by a request that still saw DRAINING (the stage spreads late) is
/// delivered by that same run, not a schedule later. Control: without a grace
/// it waits in the buffer.
#[tokio::test(flavor = "multi_thread")]
async fn after_on_the_drainer_delivers_stragglers_within_its_grace() {
    for grace in [Duration::from_secs(4), Duration::ZERO] {
        let (sdk, stack) = stack().await;
        let target = FakeTarget::start().await;
        let r = receiver(&sdk, &stack, &target.url, 2000).await;
        let mut d = drainer(&sdk, &stack, &target.url, 1).await;
        d.grace = grace;
        let mut ledger = Ledger::default();
        ledger
            .send_round_robin(&r, 1, &["octo-org/alpha"], "OFF")
            .await;
        let operator = switch(&sdk, &stack);
        let summary = drain_with_a_straggler(&d, &r, &mut ledger, &operator, None).await;
        let (waiting, in_flight) = depth(&sdk, stack.get(Resource::BufferUrl)).await;
        println!(
            "ledger grace {grace:?}: in 2, delivered by the run {}, left {}",
            target.accepted().len(),
            waiting + in_flight
        );
        assert_eq!(summary.switched_to, Some("ON"));
        if grace.is_zero() {
            assert_eq!(
                (target.accepted().len(), waiting + in_flight),
                (1, 1),
                "control"
            );
        } else {
            assert_eq!((target.accepted().len(), waiting + in_flight), (2, 0));
            let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
            assert_eq!((delivered, duplicates), (2, 0));
        }
    }
}

/// A straggler that cannot be delivered within the grace (the target
/// refuses it) would be overtaken by live hooks: the drainer sets DRAINING
/// again, so later hooks queue behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_straggler_still_waiting_after_the_grace_sets_draining_again() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut d = drainer(&sdk, &stack, &target.url, 1).await;
    d.grace = Duration::from_secs(2);
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 1, &["octo-org/alpha"], "OFF")
        .await;
    let operator = switch(&sdk, &stack);
    let summary = drain_with_a_straggler(&d, &r, &mut ledger, &operator, Some(&target)).await;
    let state = operator.read().await.unwrap();
    println!(
        "ledger straggler refused: in 2, delivered {}, state {state}, summary {summary:?}",
        target.accepted().len()
    );
    assert_eq!(target.accepted().len(), 1);
    assert_eq!(
        state,
        State::Draining,
        "later hooks queue behind the straggler"
    );
    assert_eq!(summary.switched_to, Some("DRAINING"));
    // Positive control: the target back, the straggler arrives and the spigot goes ON.
    target.set_status(200);
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(30),
    )
    .await;
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    assert_eq!((delivered, duplicates), (2, 0));
}

/// A hook about to outlive the buffer's 14-day retention (by its
/// SentTimestamp) is dead-lettered with the reason before SQS would drop it.
/// The drainer's clock runs 14 days ahead; control: on today's clock the next
/// hook is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_hook_about_to_outlive_the_buffer_retention_is_dead_lettered_not_dropped() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 1, &["octo-org/a"], "OFF").await;
    switch(&sdk, &stack).set(State::On).await.unwrap();
    let mut late = drainer(&sdk, &stack, &target.url, 1).await;
    let fortnight = 14 * 24 * 3600 * 1000;
    late.engine.clock = std::sync::Arc::new(Ahead(fortnight));
    let s = late.drain(None).await;
    assert_eq!((s.delivered, s.dead_lettered), (0, 1));
    assert_eq!(target.attempts(), 0, "not attempted");
    let dead = peek_all(&sdk, stack.get(Resource::DlqUrl)).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].1["Reason"].contains("before the queue's retention drops it"),
        "{:?}",
        dead[0].1
    );
    ledger.send_round_robin(&r, 1, &["octo-org/a"], "OFF").await;
    let d = drainer(&sdk, &stack, &target.url, 1).await;
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(30),
    )
    .await;
    let first = ledger.sent[0].0.clone();
    let (delivered, duplicates) = ledger.check(&target.accepted(), std::slice::from_ref(&first));
    println!(
        "ledger retention: in 2, delivered {delivered}, duplicates {duplicates}, dlq 1 (age), lost 0"
    );
    assert_eq!((delivered, duplicates), (1, 0));
}

/// The system clock, `.0` milliseconds ahead.
struct Ahead(u64);

impl spigot_core::ports::Clock for Ahead {
    fn now_ms(&self) -> u64 {
        spigot_core::ports::Clock::now_ms(&spigot_core::ports::SystemClock) + self.0
    }
}

/// Sends `(event, ref)` hooks of `repo` through the receiver while OFF and
/// records them in `ledger`; returns their delivery ids.
async fn send_events(
    r: &RealReceiver,
    ledger: &mut Ledger,
    repo: &str,
    events: &[(&str, &str)],
) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, (event, git_ref)) in events.iter().enumerate() {
        let delivery = spigot_e2e::unique("c");
        let body = serde_json::json!({
            "ref": git_ref,
            "action": "opened",
            "repository": {"name": repo.split('/').nth(1).unwrap(), "full_name": repo},
            "marker": i,
        })
        .to_string()
        .into_bytes();
        let (status, json) = answer(
            &r.handle_event(&signed_request(event, &delivery, &body, Some("OFF")), 1)
                .await,
        );
        assert_eq!(status, 202, "{json}");
        ledger.sent.push((delivery.clone(), repo.to_string(), body));
        ids.push(delivery);
    }
    ids
}

/// With DRAIN_COALESCE=push a drain delivers the newest of consecutive
/// pushes to one branch; a pull_request, a push to another branch or a tag
/// between them breaks the run; every skipped push is counted. Control: the
/// same hooks without coalescing are all delivered.
#[tokio::test(flavor = "multi_thread")]
async fn coalescing_delivers_the_newest_push_of_a_run_and_keeps_every_other_event() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let main = "refs/heads/main";
    let events = [
        ("push", main),
        ("push", main),
        ("push", main),
        ("pull_request", ""),
        ("push", main),
        ("push", main),
        ("push", "refs/heads/dev"),
        ("push", "refs/tags/v1"),
        ("push", main),
    ];
    let mut ledger = Ledger::default();
    let ids = send_events(&r, &mut ledger, "octo-org/a", &events).await;
    switch(&sdk, &stack).set(State::On).await.unwrap();
    let mut d = drainer(&sdk, &stack, &target.url, 1).await;
    d.engine.config.coalesce = spigot_core::coalesce::Coalesce::Push;
    let mut coalesced = 0;
    while depth(&sdk, stack.get(Resource::BufferUrl)).await != (0, 0) {
        coalesced += d.drain(None).await.coalesced;
    }
    let skipped = [ids[0].clone(), ids[1].clone(), ids[4].clone()];
    let (delivered, duplicates) = ledger.check(&target.accepted(), &skipped);
    println!(
        "ledger coalesce: in 9, delivered {delivered}, coalesced {coalesced}, duplicates {duplicates}, dlq 0, lost {}",
        9 - delivered - coalesced as usize
    );
    assert_eq!((delivered, coalesced, duplicates), (6, 3, 0));
    assert!(peek_all(&sdk, stack.get(Resource::DlqUrl)).await.is_empty());

    // Control: coalescing off, the same hooks of another repository all arrive.
    let plain_target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &plain_target.url, 2000).await;
    let mut plain = Ledger::default();
    send_events(&r, &mut plain, "octo-org/b", &events).await;
    let d = drainer(&sdk, &stack, &plain_target.url, 1).await;
    drain_until_empty(
        &d,
        &sdk,
        stack.get(Resource::BufferUrl),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(plain.check(&plain_target.accepted(), &[]), (9, 0));
}

/// Resuming (DRAINING), a drain delivers only after the target's
/// health probe has passed RESUME_HEALTHY_SECONDS in a row: a target that
/// fails a probe inside the window gets nothing; a steady one gets the
/// backlog after the window; OFF makes the next resume wait again; `now`
/// (`spigot on --now`) skips the window.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_drain_waits_until_the_target_is_steady() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 2, &["octo-org/a"], "OFF").await;
    let sw = switch(&sdk, &stack);
    sw.set(State::Draining).await.unwrap();
    let mut d = drainer(&sdk, &stack, &target.url, 2).await;
    d.resume = Duration::from_secs(3);

    // Up at the first probe, down 1 s into the window.
    let flapping = tokio::spawn({
        let t = target.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            t.set_status(503);
        }
    });
    let s = d.drain(None).await;
    flapping.await.unwrap();
    assert_eq!(s.skipped, Some(Skipped::TargetUnsteady(3)));
    assert_eq!(target.attempts(), 0, "nothing sent to an unsteady target");

    // Steady: the backlog goes, after the window.
    target.set_status(200);
    let started = Instant::now();
    let s = d.drain(None).await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "waited the window"
    );
    assert_eq!(s.delivered, 2);
    assert_eq!(ledger.check(&target.accepted(), &[]), (2, 0));

    // OFF forgets it; back to DRAINING, `now` drains without the window.
    sw.set(State::Off).await.unwrap();
    assert_eq!(d.drain(None).await.skipped, Some(Skipped::Off));
    assert!(
        d.steady.lock().unwrap().is_none(),
        "a resume after OFF waits again"
    );
    ledger.send_round_robin(&r, 1, &["octo-org/a"], "OFF").await;
    sw.set(State::Draining).await.unwrap();
    let s = d.drain_with(None, true).await;
    assert_eq!(s.delivered, 1);
    assert_eq!(ledger.check(&target.accepted(), &[]), (3, 0));
}
