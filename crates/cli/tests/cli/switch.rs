//! `spigot on`, `off` and `status`: the switch, drains and the order around
//! them.

use crate::prelude::*;

#[tokio::test(flavor = "multi_thread")]
async fn on_drain_local_drains_in_process() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .assert()
        .success();
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 12, &["octo-org/a", "octo-org/b"], "OFF")
        .await;
    let out = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain"])
        .output()
        .unwrap();
    succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "drained 12 hooks to {}; 0 dead-lettered; buffer empty",
            target.url
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("_aws"), "no EMF for people: {stdout}");
    assert_eq!(ledger.check(&target.accepted(), &[]), (12, 0));
}

/// A drain that cannot run says why and exits non-zero; `--json` for machines.
#[tokio::test(flavor = "multi_thread")]
async fn on_drain_with_the_target_down_exits_non_zero_with_the_reason() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .assert()
        .success();
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 1, &["octo-org/a"], "OFF").await;
    target.set_status(503);
    let out = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("the drain did not run: target is down"),
        "{stderr}"
    );
    assert!(stdout.contains("drained 0 hooks"), "{stdout}");
    assert!(stdout.contains("1 hook still in the buffer"), "{stdout}");
    // The same, for machines; then, the target back, a drain that works exits 0.
    let out = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["buffer_left"], 1);
    assert!(
        summary["skipped"]
            .as_str()
            .unwrap()
            .contains("target is down")
    );
    target.set_status(200);
    let out = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain", "--json"])
        .output()
        .unwrap();
    succeeded(&out);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            summary["delivered"].as_u64(),
            summary["buffer_left"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(ledger.check(&target.accepted(), &[]), (1, 0));
}

/// The calls `spigot on --drain` makes against AWS, on the shared fake endpoint:
/// API Gateway GetStage/UpdateStage (REST JSON), SQS GetQueueAttributes (JSON 1.0)
/// and Lambda Invoke (REST JSON); moto cannot invoke a function without Docker.
async fn fake_aws() -> FakeAws {
    let aws = FakeAws::start().await;
    let reply = |ct: &'static str, body: &str| Some((200, ct, body.to_string()));
    aws.on("GET /restapis/", move |_| {
        reply("application/json", r#"{"stageName":"live","variables":{"spigot_state":"OFF"}}"#)
    })
    .on("PATCH /restapis/", move |_| {
        reply("application/json", r#"{"stageName":"live","variables":{"spigot_state":"ON"}}"#)
    })
    .on("AmazonSQS.GetQueueAttributes", move |_| {
        reply("application/x-amz-json-1.0", r#"{"Attributes":{"ApproximateNumberOfMessages":"0","ApproximateNumberOfMessagesNotVisible":"0"}}"#)
    })
    .on("POST /2015-03-31/functions/", move |_| {
        reply("application/json", r#"{"delivered":3,"retried":0,"dead_lettered":0,"released":0,"held":0,"stop":"empty"}"#)
    });
    aws
}

#[tokio::test(flavor = "multi_thread")]
async fn on_drain_against_aws_flips_the_stage_and_invokes_the_drainer() {
    let dir = workdir();
    let aws = fake_aws().await;
    let url = aws.url.clone();
    let out = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--drain", "--endpoint", &url, "--region", "us-east-1"])
        .args([
            "--api-id",
            "abc123",
            "--stage",
            "live",
            "--drainer-function",
            "spigot-DrainerFunction-1",
        ])
        .args([
            "--buffer-url",
            &format!("{url}/123456789012/b.fifo"),
            "--dlq-url",
            "d",
            "--eval-url",
            "e",
            "--eval-dlq-url",
            "ed",
            "--bucket",
            "b",
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Never fail open: ON from OFF is DRAINING; the drainer sets ON once it finds the buffer empty.
    assert!(stdout.contains("spigot OFF -> DRAINING"), "{stdout}");
    assert!(
        stdout.contains("drained 3 hooks; 0 dead-lettered"),
        "{stdout}"
    );
    let calls = aws.calls();
    let patch = calls
        .iter()
        .find(|c| c.operation.starts_with("PATCH"))
        .expect("UpdateStage");
    assert_eq!(patch.path, "/restapis/abc123/stages/live");
    assert!(
        patch.body.contains("/variables/spigot_state") && patch.body.contains("\"DRAINING\""),
        "{}",
        patch.body
    );
    assert!(
        calls
            .iter()
            .any(|c| c.operation
                == "POST /2015-03-31/functions/spigot-DrainerFunction-1/invocations"),
        "{calls:?}"
    );
}

/// `spigot status` is read-only. 60 calls (what `watch -n2 spigot status`
/// does in two minutes) during an OFF window must not raise any receive count:
/// the buffer dead-letters after 50 receives.
#[tokio::test(flavor = "multi_thread")]
async fn sixty_status_calls_leave_the_buffer_untouched() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .assert()
        .success();
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 3, &["octo-org/a"], "OFF").await;
    for _ in 0..60 {
        let out = spigot_as(&dir, Principal::Operator)
            .args(["status", "--local"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("3 waiting"));
    }
    let dead = take_all(&sdk, stack.get(Resource::DlqUrl)).await;
    assert!(
        dead.is_empty(),
        "status dead-lettered {} hook(s)",
        dead.len()
    );
    let out = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // Ledger: 3 in, 3 delivered in order, 0 duplicates, 0 dead-lettered.
    assert_eq!(ledger.check(&target.accepted(), &[]), (3, 0));
}

/// Polls `spigot status` until the state is `want`.
async fn wait_for_state(dir: &PathBuf, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while status_json(dir)["state"] != want {
        assert!(
            Instant::now() < deadline,
            "the spigot did not become {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A hook sent right after `spigot on` must not overtake the older hooks
/// of its repository that still wait in the buffer.
#[tokio::test(flavor = "multi_thread")]
async fn after_on_a_new_hook_queues_behind_the_buffered_ones_then_hooks_go_live() {
    live_after_buffered(0).await;
}

/// The same with the stage variable reaching requests 1.5 s late.
/// OFF takes the lag to reach requests (the README says so: a hook within it
/// is forwarded live), so the hooks meant for the buffer are sent after it;
/// the hook right after `spigot on` still sees OFF and queues behind, and
/// after ON the hooks within the lag that still see DRAINING are drained by
/// the grace, in order.
#[tokio::test(flavor = "multi_thread")]
async fn after_on_a_new_hook_queues_behind_the_buffered_ones_under_stage_lag() {
    live_after_buffered(1500).await;
}

async fn live_after_buffered(lag_ms: u64) {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev_lagged(&dir, &target.url, lag_ms);
    let lag = Duration::from_millis(lag_ms);
    spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .assert()
        .success();
    tokio::time::sleep(lag).await;
    let mut sent = Vec::new();
    for i in 1..=5 {
        let body = push_payload("octo-org/r", &i.to_string()).into_bytes();
        let id = format!("{}-{i}", unique("order"));
        let (status, json) = post(&url, &id, &body, SECRET).await;
        assert_eq!(status, 202, "{json}");
        sent.push(id);
    }
    let out = spigot_as(&dir, Principal::Operator)
        .args(["on", "--local"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("OFF -> DRAINING"));
    let body = push_payload("octo-org/r", "6").into_bytes();
    let sixth = format!("{}-6", unique("order"));
    let (status, json) = post(&url, &sixth, &body, SECRET).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (202, Some("buffered")),
        "{json}"
    );
    sent.push(sixth);
    wait_until("all six delivered", 60, async || {
        target.accepted().len() >= 6
    })
    .await;
    let got: Vec<String> = target
        .accepted()
        .iter()
        .map(|r| r.header("x-github-delivery").unwrap().to_string())
        .collect();
    // Ledger: 6 in, 6 delivered in order, 0 duplicates, 0 dead-lettered.
    assert_eq!(got, sent, "order within the repository");
    wait_for_state(&dir, "ON", 30).await;
    // The lag, and the emulated edge's own reading of the stage (every 50 ms,
    // later when the machine is busy): a CI run once saw DRAINING at exactly
    // the lag.
    tokio::time::sleep(lag + Duration::from_millis(if lag_ms > 0 { 500 } else { 0 })).await;
    let (status, json) = post(&url, "live-7", &body, SECRET).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (200, Some("delivered")),
        "{json}"
    );
}

/// A receiver that buffers because the target failed sets DRAINING, so
/// later hooks queue behind; the drainer sets ON once the buffer is empty.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_outage_sets_draining_until_the_buffer_is_delivered() {
    outage_sets_draining(0).await;
}

/// The same with the stage variable reaching requests 1.5 s late:
/// the hook after the failed forward still sees ON, but the receiver that set
/// DRAINING keeps buffering while the change spreads, so it does not
/// overtake the buffered one.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_outage_sets_draining_under_stage_lag() {
    outage_sets_draining(1500).await;
}

async fn outage_sets_draining(lag_ms: u64) {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev_lagged(&dir, &target.url, lag_ms);
    target.set_status(503);
    let body = push_payload("octo-org/r", "1").into_bytes();
    let (status, _) = post(&url, "outage-1", &body, SECRET).await;
    assert_eq!(status, 202);
    assert_eq!(status_json(&dir)["state"], "DRAINING");
    target.set_status(200);
    let (status, json) = post(&url, "outage-2", &body, SECRET).await;
    assert_eq!(
        (status, json["status"].as_str()),
        (202, Some("buffered")),
        "{json}"
    );
    wait_until("both delivered", 60, async || target.accepted().len() >= 2).await;
    let got: Vec<_> = target
        .accepted()
        .iter()
        .map(|r| r.header("x-github-delivery").unwrap().to_string())
        .collect();
    assert_eq!(got, ["outage-1", "outage-2"]);
    wait_for_state(&dir, "ON", 30).await;
}

/// `spigot on --local --drain --json` as the operator: the drain's summary.
fn drain_once(dir: &PathBuf) -> serde_json::Value {
    let out = spigot_as(dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// A hook the target keeps refusing blocks only its repository;
/// `spigot status` names it (head hook, attempts, last answer); `spigot dlq
/// aside` moves that one hook to the DLQ at its next attempt and the
/// repository goes on, in order.
#[tokio::test(flavor = "multi_thread")]
async fn status_names_a_blocked_repository_and_dlq_aside_lets_it_go_on() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 6, &["octo-org/a", "octo-org/b"], "OFF")
        .await;
    let head = ledger.sent[0].0.clone();
    let refused = head.clone();
    target.set_rule(move |rec, _| {
        (rec.header("x-github-delivery") == Some(refused.as_str())).then_some(503)
    });
    let tries_of_head = |t: &FakeTarget| t.arrivals().len() - t.accepted().len();
    drain_once(&dir);
    assert_eq!(
        target.accepted().len(),
        3,
        "octo-org/b is not held behind a"
    );
    let status = status_json(&dir);
    let blocked = status["blocked"].as_array().unwrap().clone();
    assert_eq!(blocked.len(), 1, "{status}");
    assert_eq!(blocked[0]["repository"], "octo-org/a");
    assert_eq!(blocked[0]["delivery"], head.as_str());
    assert_eq!(blocked[0]["attempts"], 1);
    assert!(
        blocked[0]["last"].as_str().unwrap().contains("503"),
        "{status}"
    );
    let text = spigot_as(&dir, Principal::Operator)
        .args(["status", "--local"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains(&format!(
            "octo-org/a: head {head} (push), 1 failed attempts"
        )),
        "{text}"
    );
    // --wide adds when the head is tried again.
    let wide = spigot_as(&dir, Principal::Operator)
        .args(["status", "--local", "--wide"])
        .output()
        .unwrap();
    let wide = String::from_utf8_lossy(&wide.stdout).to_string();
    assert!(
        wide.contains("next attempt in about") && wide.contains("backoff 2 s"),
        "{wide}"
    );

    // Control: left alone, it is tried again and still blocks its repository.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drain_once(&dir);
    assert_eq!(tries_of_head(&target), 2);
    assert_eq!(status_json(&dir)["blocked"][0]["attempts"], 2);
    assert_eq!(target.accepted().len(), 3);

    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "aside", "--repo", "octo-org/a", "--local"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    succeeded(&out);
    assert!(
        said.contains(&head) && said.contains("dead-letter queue"),
        "{said}"
    );
    tokio::time::sleep(Duration::from_millis(4000)).await; // its backoff
    drain_once(&dir);
    assert_eq!(
        tries_of_head(&target),
        2,
        "moved aside without another attempt"
    );
    let dead = peek_all(&sdk, stack.get(Resource::DlqUrl)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        spigot_core::Envelope::decode(&dead[0].0).unwrap().delivery,
        head
    );
    assert!(
        dead[0].1["Reason"].contains("moved aside by"),
        "{:?}",
        dead[0].1
    );
    let (delivered, duplicates) = ledger.check(&target.accepted(), std::slice::from_ref(&head));
    println!(
        "ledger aside: in 6, delivered {delivered}, duplicates {duplicates}, dlq 1 (moved aside), lost 0"
    );
    assert_eq!((delivered, duplicates), (5, 0));
    assert_eq!(status_json(&dir)["blocked"], serde_json::json!([]));
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await, (0, 0));
}

/// The switch on an HTTP API stage: moto holds the API and answers the
/// reads (GetStage); UpdateStage, which moto lacks, is answered by a local
/// endpoint speaking its REST-JSON wire format (tests/support/apigatewayv2.rs).
#[tokio::test(flavor = "multi_thread")]
async fn off_and_on_flip_an_http_api_stage() {
    use spigot_aws::aws_sdk_apigatewayv2::types::ProtocolType;
    let dir = workdir();
    let (sdk, mut stack) = local_stack(&dir, None).await;
    let v2 = spigot_aws::aws_sdk_apigatewayv2::Client::new(&sdk);
    let api = v2
        .create_api()
        .name(unique("http-api"))
        .protocol_type(ProtocolType::Http)
        .send()
        .await
        .unwrap();
    let api_id = api.api_id().unwrap().to_string();
    v2.create_stage()
        .api_id(&api_id)
        .stage_name("live")
        .stage_variables("spigot_state", "ON")
        .stage_variables("team", "kept")
        .send()
        .await
        .unwrap();
    // The stack's API is this HTTP API: the operator's policy names its stage.
    stack.resources = stack
        .resources
        .clone()
        .with(Resource::ApiId, api_id.clone())
        .with(Resource::ApiType, "HTTP");
    std::fs::write(
        dir.join(".spigot/dev.json"),
        serde_json::to_string(&stack).unwrap(),
    )
    .unwrap();
    let stand = ApiGatewayV2::start(moto()).await;
    let http = [
        "--local",
        "--endpoint",
        &stand.url,
        "--api-id",
        &api_id,
        "--api-type",
        "HTTP",
    ];
    let state = |dir: &PathBuf| {
        let out = spigot_as(dir, Principal::Operator)
            .args(["status", "--json"])
            .args(http)
            .output()
            .unwrap();
        succeeded(&out);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["state"].clone()
    };
    assert_eq!(state(&dir), "ON");
    spigot_as(&dir, Principal::Operator)
        .arg("off")
        .args(http)
        .assert()
        .success();
    let updates = stand.updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].0, format!("/v2/apis/{api_id}/stages/live"));
    assert_eq!(
        updates[0].1["stageVariables"],
        serde_json::json!({"spigot_state": "OFF", "team": "kept"})
    );
    assert_eq!(state(&dir), "OFF");
    spigot_as(&dir, Principal::Operator)
        .arg("on")
        .args(http)
        .assert()
        .success();
    assert_eq!(stand.updates().len(), 2);
    // Never fail open: DRAINING until a drainer finds the buffer empty.
    assert_eq!(state(&dir), "DRAINING");
    // The same id as a REST API is no stage at all: the API type matters.
    let rest = [
        "--local",
        "--endpoint",
        &stand.url,
        "--api-id",
        &api_id,
        "--api-type",
        "REST",
    ];
    let out = spigot_as(&dir, Principal::Operator)
        .arg("off")
        .args(rest)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stand.updates().len(), 2);
}

/// A hook that fails retryably during `spigot on --local
/// --drain` is logged with its GitHub delivery id and repository (not only
/// the SQS message id), and the drain exits 1 saying the hook waits in
/// backoff and when its next attempt is. Control: with the target answering,
/// the same command drains it and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_retryable_failure_is_logged_by_delivery_and_the_drain_says_when_it_retries() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .assert()
        .success();
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 1, &["octo-org/a"], "OFF").await;
    let delivery = ledger.sent[0].0.clone();
    // The health probe is fine; the delivery itself fails with a 500.
    target.set_rule(|_, _| Some(500));
    let out = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        stderr.contains("retryable failure; backing off")
            && stderr.contains(&format!("delivery={delivery}"))
            && stderr.contains("repository=octo-org/a"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("backoff") && stderr.contains("next attempt"),
        "{stderr}"
    );
    target.set_rule(|_, _| None);
    // The backoff hides the hook for a while: wait it out, then drain.
    let mut drained = false;
    for _ in 0..40 {
        let out = spigot_as(&dir, Principal::OperatorDraining)
            .args(["on", "--local", "--drain"])
            .output()
            .unwrap();
        if out.status.success() && text(&out).0.contains("drained 1 hook") {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(drained, "the control drain delivered it");
}

/// Ctrl-C during `spigot on --local --drain` stops it as it stops
/// `spigot relay`: what is under way finishes and is deleted, the rest goes
/// back to the buffer at once, and it says what it did (exit 1). Before, the
/// hooks already answered 200 were delivered again a minute later. Ledger:
/// 8 in (one repository), each delivered exactly once, in order, after a
/// second drain (the control) finishes the rest.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_a_local_drain_delivers_nothing_twice_and_says_what_it_did() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .assert()
        .success();
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 8, &["octo-org/a"], "OFF").await;
    target.set_delay_ms(700);
    let mut drain = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("two deliveries", 30, async || target.accepted().len() >= 2).await;
    Command::new("kill")
        .args(["-INT", &drain.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while drain.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the drain did not stop after Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = drain.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupted:") && stderr.contains("delivered (and deleted)"),
        "{stderr}"
    );
    let at_stop = target.accepted().len();
    assert!(at_stop < 8, "stopped before the end ({at_stop})");
    assert_eq!(
        depth(&sdk, stack.get(Resource::BufferUrl)).await.1,
        0,
        "nothing left hidden"
    );
    target.set_delay_ms(0);
    let rest = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain"])
        .output()
        .unwrap();
    succeeded(&rest);
    let got: Vec<String> = target
        .accepted()
        .iter()
        .map(|h| {
            h.header("x-github-delivery")
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let sent: Vec<String> = ledger.sent.iter().map(|(d, _, _)| d.clone()).collect();
    assert_eq!(got, sent, "each exactly once, in order");
}

/// Machine output is one JSON document: `send`, `on` and `off` have
/// `--json` (an object each), and the listings (`dlq list`, `filters list`,
/// `filters test`) print one JSON array.
#[tokio::test(flavor = "multi_thread")]
async fn send_on_off_have_json_and_listings_are_one_array() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, _url) = start_dev(&dir, &target.url);
    let body = dir.join("push.json");
    std::fs::write(&body, fixture("push.json")).unwrap();
    let json_of = |out: &std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{}", text(out).1);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out).0))
    };
    let sent = json_of(
        &spigot(&dir)
            .arg("send")
            .arg(&body)
            .args(["--secret", SECRET, "--json", "--delivery", "j-1"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        (sent["status"].as_u64(), sent["delivery"].as_str()),
        (Some(200), Some("j-1"))
    );
    assert_eq!(sent["answer"]["status"], "delivered");
    let off = json_of(
        &spigot_as(&dir, Principal::Operator)
            .args(["off", "--local", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        (off["from"].as_str(), off["to"].as_str()),
        (Some("ON"), Some("OFF"))
    );
    let on = json_of(
        &spigot_as(&dir, Principal::Operator)
            .args(["on", "--local", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        (on["from"].as_str(), on["to"].as_str()),
        (Some("OFF"), Some("DRAINING"))
    );
    let listed = json_of(
        &spigot_as(&dir, Principal::Operator)
            .args(["filters", "list", "--local", "--json"])
            .output()
            .unwrap(),
    );
    assert!(listed.is_array(), "{listed}");
    let dlq = json_of(
        &spigot_as(&dir, Principal::Operator)
            .args(["dlq", "list", "--local", "--json"])
            .output()
            .unwrap(),
    );
    assert!(dlq.is_array(), "{dlq}");
    let tested = json_of(
        &spigot(&dir)
            .args([
                "filters",
                "test",
                "--max-push-age",
                "0",
                "--json",
                "--event",
            ])
            .arg(&body)
            .args([
                "--filter",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../examples/filters/web.json"
                ),
            ])
            .output()
            .unwrap(),
    );
    assert!(tested.is_array(), "{tested}");
}

/// `status --watch` refreshes the view (here twice, 200 ms apart), and
/// states are coloured only for a terminal (forced here with CLICOLOR_FORCE),
/// never with NO_COLOR, never in a pipe.
#[tokio::test(flavor = "multi_thread")]
async fn status_watch_refreshes_and_colours_only_for_a_terminal() {
    let dir = workdir();
    let (_sdk, _stack) = local_stack(&dir, None).await;
    let run = |env: &[(&str, &str)]| {
        let mut c = spigot_as(&dir, Principal::Operator);
        c.args([
            "status", "--local", "--watch", "--every", "200ms", "--count", "2",
        ])
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        succeeded(&out);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let forced = run(&[("CLICOLOR_FORCE", "1")]);
    assert_eq!(forced.matches("spigot status at").count(), 2, "{forced}");
    assert!(forced.contains("\x1b[32mON\x1b[0m"), "{forced:?}");
    let piped = run(&[]);
    assert!(
        !piped.contains('\x1b') && piped.contains("spigot               ON"),
        "{piped:?}"
    );
    let no_colour = run(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(!no_colour.contains('\x1b'), "{no_colour:?}");
}
