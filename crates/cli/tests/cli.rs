//! The `spigot` command as a process, against moto and local targets.

use spigot_core::resources::Resource;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use spigot_core::ports::Switch;
use spigot_core::signature::sign_sha256;
use spigot_e2e::*;

mod common;
use common::*;

async fn post(url: &str, delivery: &str, body: &[u8], secret: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", sign_sha256(secret.as_bytes(), body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

fn status_json(dir: &PathBuf) -> serde_json::Value {
    let out = spigot_as(dir, Principal::Operator)
        .args(["status", "--local", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_serves_webhooks_and_on_off_flip_it() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev(&dir, &target.url);
    let body = fixture("push.json");

    let (status, json) = post(&url, "cli-1", &body, SECRET).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(target.accepted().len(), 1);
    assert_eq!(
        target.accepted()[0].body,
        body,
        "byte-identical through spigot dev"
    );
    assert_eq!(
        target.accepted()[0].header("x-hub-signature-256"),
        Some(sign_sha256(SECRET.as_bytes(), &body).as_str())
    );
    assert_eq!(status_json(&dir)["state"], "ON");

    let out = spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ON -> OFF"));
    // #32.5: OFF does not stop pipeline starts, and says so.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pipeline filters go on starting pipelines")
    );
    assert_eq!(status_json(&dir)["state"], "OFF");
    // #20.7: OFF again says so.
    let out = spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("spigot is already OFF"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (status, json) = post(&url, "cli-2", &body, SECRET).await;
    assert_eq!((status, json["status"].as_str()), (202, Some("buffered")));
    assert_eq!(target.accepted().len(), 1, "nothing forwarded while OFF");
    assert_eq!(status_json(&dir)["buffer"]["visible"], 1);

    let (status, _) = post(&url, "cli-3", &body, "wrong secret").await;
    assert_eq!(status, 401);

    // ON with a hook buffered goes through DRAINING; the dev drainer delivers
    // what was buffered while OFF, then sets ON.
    let out = spigot_as(&dir, Principal::Operator)
        .args(["on", "--local"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OFF -> DRAINING"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while target.accepted().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the buffered hook was not drained"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        target.accepted()[1].header("x-github-delivery"),
        Some("cli-2")
    );
    assert_eq!(target.accepted()[1].body, body);
}

#[tokio::test(flavor = "multi_thread")]
async fn send_posts_like_github_and_a_wrong_secret_gets_401() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev(&dir, &target.url);
    let file = format!(
        "{}/../../tests/fixtures/push.json",
        env!("CARGO_MANIFEST_DIR")
    );
    spigot(&dir)
        .args([
            "send",
            &file,
            "--url",
            &url,
            "--secret",
            SECRET,
            "--event",
            "push",
            "--delivery",
            "send-1",
        ])
        .assert()
        .success();
    let got = target.accepted();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, fixture("push.json"));
    assert_eq!(got[0].header("x-github-delivery"), Some("send-1"));
    let out = spigot(&dir)
        .args(["send", &file, "--url", &url, "--secret", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("401"));
}

/// #20.5: an API Gateway event file goes out as it is (its bad signature stays
/// bad); a payload's event is read from its shape, or asked for.
#[tokio::test(flavor = "multi_thread")]
async fn send_sends_event_files_as_they_are_and_infers_the_event() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev(&dir, &target.url);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let send = |args: &[&str]| {
        spigot(&dir)
            .arg("send")
            .args(args)
            .args(["--url", &url])
            .output()
            .unwrap()
    };
    let out = send(&[&format!("{root}/events/push-bad-signature.json")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).0.starts_with("401"), "{}", text(&out).0);
    // Positive control: the good sample event is accepted as it is.
    let out = send(&[&format!("{root}/events/push.json")]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.starts_with("200 9f5c3a10"), "{}", text(&out).0);
    // A ping payload is sent as a ping.
    let out = send(&[
        &format!("{root}/tests/fixtures/ping.json"),
        "--secret",
        SECRET,
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("\"pong\""), "{}", text(&out).0);
    // Something else: the event must be named.
    std::fs::write(
        dir.join("issue.json"),
        br#"{"action":"opened","issue":{"number":1}}"#,
    )
    .unwrap();
    let out = send(&["issue.json", "--secret", SECRET]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("pass --event"), "{}", text(&out).1);
    assert_eq!(
        target.accepted().len(),
        1,
        "only the good sample reached the target"
    );
}

#[test]
fn sign_reproduces_githubs_published_vector() {
    let dir = workdir();
    std::fs::write(dir.join("payload"), "Hello, World!").unwrap();
    let out = spigot(&dir)
        .args(["sign", "--secret", "It's a Secret to Everybody", "payload"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}

#[test]
fn a_missing_id_names_the_ways_to_give_it_and_exits_2() {
    let dir = workdir();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["status", "--stack", "no-such-stack", "--endpoint", moto()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for hint in ["--api-id", "SPIGOT_API_ID", "--stack", "--local"] {
        assert!(err.contains(hint), "{err}");
    }
    let out = spigot_as(&dir, Principal::Operator)
        .args(["on", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("make run"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_evaluates_pushes_against_filters_and_says_what_it_would_start() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev(&dir, &target.url);
    let stack: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".spigot/dev.json")).unwrap())
            .unwrap();
    let spec = spigot_core::filter::FilterSpec::from_json(
        br#"{"Repository": "Codertocat/Hello-World", "Branch": "master", "Pipeline": "hello-pipeline"}"#,
    )
    .unwrap();
    spigot_aws::s3_client(&sdk().await)
        .put_object()
        .bucket(stack["bucket"].as_str().unwrap())
        .key(spec.key())
        .body(spec.to_json().into_bytes().into())
        .send()
        .await
        .unwrap();
    let (status, _) = post(&url, "cli-eval", &fixture("push.json"), SECRET).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::fs::read_to_string(dir.join("dev.out")).unwrap();
        if out.contains("would start hello-pipeline for Codertocat/Hello-World@master") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dev did not evaluate the push: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A local stack in moto written to `<dir>/.spigot/dev.json`, as `spigot dev` would.
async fn dead_letters(sdk: &spigot_aws::aws_config::SdkConfig, dlq: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let hook = spigot_core::Hook {
            delivery: unique("dead"),
            event: "push".into(),
            repository: Some(format!("octo-org/repo{}", i % 3)),
            headers: vec![("x-github-event".into(), "push".into())],
            body: push_payload("octo-org/x", &i.to_string()).into_bytes(),
            received_at_ms: 1,
            json_body: false,
        };
        dead_letter(sdk, dlq, &hook).await;
        ids.push(hook.delivery);
    }
    ids
}

/// Puts `hook` in `dlq` as the engine dead-letters it after a 404 (a group of its own, the reason).
async fn dead_letter(sdk: &spigot_aws::aws_config::SdkConfig, dlq: &str, hook: &spigot_core::Hook) {
    let reason = "target answered 404 (client error)";
    let mut env = spigot_core::Envelope::from_hook(hook);
    env.resend(Some(reason.into()));
    spigot_aws::aws_sdk_sqs::Client::new(sdk)
        .send_message()
        .queue_url(dlq)
        .message_body(env.encode())
        .message_group_id(env.dedup_id())
        .message_deduplication_id(env.dedup_id())
        .message_attributes(
            "Reason",
            spigot_aws::aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(reason)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

fn deliveries(
    msgs: &[(String, std::collections::HashMap<String, String>)],
) -> std::collections::BTreeSet<String> {
    msgs.iter()
        .map(|(b, _)| spigot_core::Envelope::decode(b).unwrap().delivery)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_list_and_redrive_max_moves_exactly_that_many() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let ids = dead_letters(&sdk, stack.get(Resource::DlqUrl), 7).await;

    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "list", "--local", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // #32.9: one JSON array.
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(rows.len(), 7);
    assert!(
        rows.iter()
            .all(|r| r["reason"].as_str().unwrap().contains("404"))
    );
    assert!(
        rows.iter()
            .all(|r| ids.contains(&r["delivery"].as_str().unwrap().to_string()))
    );

    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--max", "3", "--local"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved 3"));
    let in_buffer = peek_all(&sdk, stack.get(Resource::BufferUrl)).await;
    let in_dlq = peek_all(&sdk, stack.get(Resource::DlqUrl)).await;
    assert_eq!((in_buffer.len(), in_dlq.len()), (3, 4));
    let mut all = deliveries(&in_buffer);
    all.extend(deliveries(&in_dlq));
    assert_eq!(all.len(), 7, "nothing lost, nothing doubled");
    let moved = spigot_core::Envelope::decode(&in_buffer[0].0).unwrap();
    assert_eq!(
        moved.attempts, 2,
        "a redrive is a new send with a fresh deduplication id"
    );

    let left: Vec<String> = deliveries(&in_dlq).into_iter().collect();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--delivery", &left[2], "--local"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved 1"));
    assert!(deliveries(&peek_all(&sdk, stack.get(Resource::BufferUrl)).await).contains(&left[2]));
    let still: Vec<String> = deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await)
        .into_iter()
        .collect();
    assert_eq!(still.len(), 3);
    assert!(!still.contains(&left[2]));
    // #32.4: a delivery id that is not there is not "fine": exit 1, saying so; nothing moves.
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--delivery", "no-such-id", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no dead letter has delivery id no-such-id")
    );
    assert_eq!(
        deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await).len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_redrive_loses_nothing() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let ids = dead_letters(&sdk, stack.get(Resource::DlqUrl), 150).await;
    let mut child = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--local", "--no-move-task", "--hold", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while depth(&sdk, stack.get(Resource::BufferUrl)).await.0 < 10 {
        assert!(
            Instant::now() < deadline,
            "the redrive did not start moving"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL, mid-redrive
    child.wait().unwrap();
    // What the killed process held comes back to the DLQ after its hold expires.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let in_buffer = deliveries(&take_all(&sdk, stack.get(Resource::BufferUrl)).await);
    let in_dlq = deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await);
    println!(
        "interrupted redrive: {} in buffer, {} in DLQ, {} in both",
        in_buffer.len(),
        in_dlq.len(),
        in_buffer.intersection(&in_dlq).count()
    );
    assert!(
        in_buffer.len() < 150,
        "the redrive was interrupted before it finished"
    );
    for id in &ids {
        assert!(in_buffer.contains(id) || in_dlq.contains(id), "{id} lost");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_put_validates_and_test_explains() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let examples = format!("{}/../../examples", env!("CARGO_MANIFEST_DIR"));
    std::fs::write(dir.join("bad.json"), r#"{"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "p", "Syntax": "regex", "Include": ["services/(a"]}"#).unwrap();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["filters", "put", "bad.json", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a valid regex: unclosed group at position 9"),
        "{err}"
    );
    let listed = spigot_aws::s3_client(&sdk)
        .list_objects_v2()
        .bucket(stack.get(Resource::Bucket))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "nothing written");

    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "filters",
            "put",
            &format!("{examples}/filters/billing.json"),
            "--local",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "filters/octo-org/mono/main/billing-service.json"
    );
    let out = spigot_as(&dir, Principal::Operator)
        .args(["filters", "list", "--local"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("billing-service"));

    // Dry run against the bucket...
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "filters",
            "test",
            "--event",
            &format!("{examples}/push-mono.json"),
            "--local",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("START billing-service"), "{text}");
    // ...and against local files.
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "filters",
            "test",
            "--event",
            &format!("{examples}/push-mono.json"),
        ])
        .args(["--filter", &format!("{examples}/filters/billing.json")])
        .args(["--filter", &format!("{examples}/filters/web.json")])
        .args(["--filter", &format!("{examples}/filters/legacy.json")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("push to octo-org/mono@main: 4 changed path(s)"),
        "{text}"
    );
    let line = |pipeline: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(pipeline))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(
        line("billing-service"),
        "START billing-service libs/common/src/money.rs matches libs/common/**"
    );
    assert_eq!(
        line("web-frontend"),
        "skip web-frontend no changed path included, or all excluded"
    );
    assert_eq!(
        line("docs-site"),
        "START docs-site docs/billing.md matches ^docs/"
    );

    let out = spigot_as(&dir, Principal::Operator)
        .args(["filters", "delete", "payloads/x", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "filters",
            "delete",
            "filters/octo-org/mono/main/billing-service.json",
            "--local",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
}

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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// #20.4: a drain that cannot run says why and exits non-zero; `--json` for machines.
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
    assert!(out.status.success(), "{}", text(&out).1);
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

/// A local stack whose buffer hides a received message `visibility` seconds,
/// holding `n` hooks sent round robin over `repos` while OFF: the backlog a
/// relay test starts from, with its ledger.
async fn relay_backlog(
    dir: &Path,
    target: &str,
    visibility: u32,
    n: usize,
    repos: &[&str],
) -> (
    spigot_aws::aws_config::SdkConfig,
    spigot_aws::local::LocalStack,
    Ledger,
) {
    let (sdk, stack) = local_stack(dir, None).await;
    set_visibility_timeout(&sdk, stack.get(Resource::BufferUrl), visibility).await;
    let r = receiver(&sdk, &stack, target, 2000).await;
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, n, repos, "OFF").await;
    (sdk, stack, ledger)
}

/// A relay process (killed on drop).
fn relay(dir: &Path, target: &str, extra: &[&str]) -> Dev {
    let log = std::fs::File::create(dir.join(format!("relay-{}.log", unique("")))).unwrap();
    let child = spigot_as(&dir.to_path_buf(), Principal::Relay)
        .args([
            "relay",
            "--to",
            target,
            "--local",
            "--poll-wait",
            "1",
            "--concurrency",
            "4",
            "--allow-http",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Dev(child)
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_delivers_the_buffer_in_order_and_a_4xx_dead_letters_only_that_hook() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, None).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(
            &r,
            100,
            &["octo-org/a", "octo-org/b", "octo-org/c", "octo-org/d"],
            "OFF",
        )
        .await;
    let refused = ledger.sent[17].0.clone();
    let refused_for_rule = refused.clone();
    target.set_rule(move |rec, _| {
        (rec.header("x-github-delivery") == Some(refused_for_rule.as_str())).then_some(404)
    });
    let out = spigot_as(&dir, Principal::Relay)
        .args([
            "relay",
            "--to",
            &target.url,
            "--local",
            "--once",
            "--poll-wait",
            "1",
            "--allow-http",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("relay said: {}", String::from_utf8_lossy(&out.stderr));
    let (delivered, duplicates) = ledger.check(&target.accepted(), std::slice::from_ref(&refused));
    println!("ledger relay: in 100, delivered {delivered}, duplicates {duplicates}, dlq 1");
    assert_eq!((delivered, duplicates), (99, 0));
    let dead = peek_all(&sdk, stack.get(Resource::DlqUrl)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        spigot_core::Envelope::decode(&dead[0].0).unwrap().delivery,
        refused
    );
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_waits_out_a_target_outage_and_off_pauses_it() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    target.set_status(503);
    let (sdk, stack) = local_stack(&dir, None).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 20, &["octo-org/a", "octo-org/b"], "OFF")
        .await;
    let metrics_port = free_port();
    let _relay = relay(
        &dir,
        &target.url,
        &["--metrics-listen", &format!("127.0.0.1:{metrics_port}")],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        target.attempts(),
        0,
        "no delivery attempted while the target is down"
    );
    assert!(peek_all(&sdk, stack.get(Resource::DlqUrl)).await.is_empty());
    target.set_status(200);
    wait_for("the relay to deliver after the outage", 30, || {
        target.accepted().len() >= 20
    })
    .await;
    assert_eq!(ledger.check(&target.accepted(), &[]), (20, 0));

    // OFF pauses it.
    spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .assert()
        .success();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut more = Ledger::default();
    more.send_round_robin(&r, 5, &["octo-org/a"], "OFF").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(target.accepted().len(), 20, "nothing delivered while OFF");
    spigot_as(&dir, Principal::Operator)
        .args(["on", "--local"])
        .assert()
        .success();
    wait_for("the relay to resume", 30, || target.accepted().len() >= 25).await;

    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("spigot_relay_delivered_total 25"), "{text}");
    assert!(
        text.contains("spigot_relay_dead_lettered_total 0"),
        "{text}"
    );
    assert!(text.contains("spigot_buffer_depth 0"), "{text}");
    assert!(
        text.contains("spigot_relay_last_delivery_age_seconds"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_killed_mid_batch_loses_nothing_and_sigterm_exits_cleanly() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    target.set_delay_ms(40);
    let repos = ["octo-org/a", "octo-org/b", "octo-org/c", "octo-org/d"];
    let (sdk, stack, ledger) = relay_backlog(&dir, &target.url, 2, 80, &repos).await;

    let mut first = relay(&dir, &target.url, &[]);
    wait_for("deliveries before the kill", 30, || {
        target.accepted().len() >= 15
    })
    .await;
    first.0.kill().unwrap(); // SIGKILL mid-batch
    first.0.wait().unwrap();
    let at_kill = target.accepted().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Restart; SIGTERM once it has delivered a bit more.
    let mut second = relay(&dir, &target.url, &[]);
    wait_for("deliveries after the restart", 30, || {
        target.accepted().len() >= at_kill + 15
    })
    .await;
    let pid = second.0.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = second.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "relay did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    assert_eq!(
        depth(&sdk, stack.get(Resource::BufferUrl)).await.1,
        0,
        "nothing left invisible after SIGTERM"
    );

    // Finish the rest.
    let out = spigot_as(&dir, Principal::Relay)
        .args([
            "relay",
            "--to",
            &target.url,
            "--local",
            "--once",
            "--poll-wait",
            "1",
            "--allow-http",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    println!(
        "ledger relay-kill: in 80, delivered {delivered}, duplicates {duplicates} (delivered before SIGKILL: {at_kill})"
    );
    assert_eq!(delivered, 80);
    assert!(
        duplicates <= 4 * 10,
        "duplicates {duplicates} exceed the batches in flight"
    );
}

/// SQS's JSON protocol (awsJson1_0) on the shared fake endpoint, for the two
/// calls a server-side redrive makes; moto lacks StartMessageMoveTask.
async fn fake_sqs() -> FakeAws {
    let aws = FakeAws::start().await;
    let json = |v: serde_json::Value| Some((200, "application/x-amz-json-1.0", v.to_string()));
    aws.on("AmazonSQS.GetQueueAttributes", move |call| {
        let url = call.json["QueueUrl"].as_str().unwrap_or("");
        let name = url.rsplit('/').next().unwrap_or("");
        json(serde_json::json!({"Attributes": {"QueueArn": format!("arn:aws:sqs:us-east-1:123456789012:{name}")}}))
    })
    .on("AmazonSQS.StartMessageMoveTask", move |_| {
        json(serde_json::json!({"TaskHandle": "task-handle-1"}))
    });
    aws
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_redrive_uses_start_message_move_task_where_sqs_has_it() {
    let dir = workdir();
    let aws = fake_sqs().await;
    let url = aws.url.clone();
    let q = |name: &str| format!("{url}/123456789012/{name}");
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "dlq",
            "redrive",
            "--move-task",
            "--endpoint",
            &url,
            "--api-id",
            "x",
        ])
        .args([
            "--buffer-url",
            &q("spigot-buffer.fifo"),
            "--dlq-url",
            &q("spigot-buffer-dlq.fifo"),
        ])
        .args([
            "--eval-url",
            &q("e"),
            "--eval-dlq-url",
            &q("ed"),
            "--bucket",
            "b",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("started SQS message move task task-handle-1")
    );
    let calls = aws.calls();
    let task = calls
        .iter()
        .find(|c| c.operation == "AmazonSQS.StartMessageMoveTask")
        .expect("a move task was started");
    assert_eq!(
        task.json["SourceArn"],
        "arn:aws:sqs:us-east-1:123456789012:spigot-buffer-dlq.fifo"
    );
    assert_eq!(
        task.json["DestinationArn"],
        "arn:aws:sqs:us-east-1:123456789012:spigot-buffer.fifo"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_redrive_falls_back_to_the_move_loop_where_sqs_lacks_the_move_task() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let ids = dead_letters(&sdk, stack.get(Resource::DlqUrl), 12).await;
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--local", "--move-task"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("moved 12"));
    let moved = deliveries(&take_all(&sdk, stack.get(Resource::BufferUrl)).await);
    assert_eq!(moved, ids.into_iter().collect());
    assert!(peek_all(&sdk, stack.get(Resource::DlqUrl)).await.is_empty());
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// #14.1: `spigot status` is read-only. 60 calls (what `watch -n2 spigot status`
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

/// #14.7: a hook sent right after `spigot on` must not overtake the older hooks
/// of its repository that still wait in the buffer.
#[tokio::test(flavor = "multi_thread")]
async fn after_on_a_new_hook_queues_behind_the_buffered_ones_then_hooks_go_live() {
    live_after_buffered(0).await;
}

/// The same with the stage variable reaching requests 1.5 s late (#25.4).
/// OFF takes the lag to reach requests (the README says so: a hook within it
/// is forwarded live), so the hooks meant for the buffer are sent after it;
/// the hook right after `spigot on` still sees OFF and queues behind, and
/// after ON the hooks within the lag that still see DRAINING are drained by
/// the grace (#26.3), in order.
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
    wait_for("all six delivered", 60, || target.accepted().len() >= 6).await;
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

/// #14.7: a receiver that buffers because the target failed sets DRAINING, so
/// later hooks queue behind; the drainer sets ON once the buffer is empty.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_outage_sets_draining_until_the_buffer_is_delivered() {
    outage_sets_draining(0).await;
}

/// The same with the stage variable reaching requests 1.5 s late (#25.4):
/// the hook after the failed forward still sees ON, but the receiver that set
/// DRAINING keeps buffering while the change spreads (#26.3), so it does not
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
    wait_for("both delivered", 60, || target.accepted().len() >= 2).await;
    let got: Vec<_> = target
        .accepted()
        .iter()
        .map(|r| r.header("x-github-delivery").unwrap().to_string())
        .collect();
    assert_eq!(got, ["outage-1", "outage-2"]);
    wait_for_state(&dir, "ON", 30).await;
}

/// #14.2: a letter SQS moved by itself (no Reason attribute) is listed with a clear reason.
#[tokio::test(flavor = "multi_thread")]
async fn dlq_list_explains_letters_sqs_moved_by_itself() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let hook = spigot_core::Hook {
        delivery: unique("moved"),
        event: "push".into(),
        repository: Some("octo-org/a".into()),
        headers: vec![("x-github-event".into(), "push".into())],
        body: push_payload("octo-org/a", "1").into_bytes(),
        received_at_ms: 1,
        json_body: false,
    };
    let env = spigot_core::Envelope::from_hook(&hook);
    spigot_aws::aws_sdk_sqs::Client::new(&sdk)
        .send_message()
        .queue_url(stack.get(Resource::DlqUrl))
        .message_body(env.encode())
        .message_group_id("octo-org_a")
        .message_deduplication_id(env.dedup_id())
        .send()
        .await
        .unwrap();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "list", "--local", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["delivery"], hook.delivery);
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .starts_with("moved by SQS after"),
        "{row}"
    );
}

/// #14.3: every stored copy of a delivery has its own claim-check object. A
/// large letter left in the DLQ by an interrupted redrive, whose twin was
/// then delivered (deleting that twin's body), is redriven: its body is gone,
/// which is a permanent failure with a reason, and it must not block its
/// repository: a later small hook arrives within two drain runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_redriven_letter_whose_twin_was_delivered_does_not_block_its_repository() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let d = drainer(&sdk, &stack, &target.url, 1).await;
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(&sdk);
    let big = serde_json::json!({"repository": {"full_name": "octo-org/big"}, "pad": "x".repeat(400_000)})
        .to_string()
        .into_bytes();
    let (status, _) = answer(
        &r.handle_event(&signed_request("push", "big-twin", &big, Some("OFF")), 1)
            .await,
    );
    assert_eq!(status, 202);
    // The twin: the same envelope in the DLQ, as an interrupted redrive leaves it.
    let buffered = peek_all(&sdk, stack.get(Resource::BufferUrl)).await;
    let mut twin = spigot_core::Envelope::decode(&buffered[0].0).unwrap();
    assert!(twin.claim_key().is_some(), "travels by claim-check");
    twin.resend(Some("target answered 404 (client error)".into()));
    sqs.send_message()
        .queue_url(stack.get(Resource::DlqUrl))
        .message_body(twin.encode())
        .message_group_id(twin.dedup_id())
        .message_deduplication_id(twin.dedup_id())
        .send()
        .await
        .unwrap();
    switch(&sdk, &stack)
        .set(spigot_core::State::On)
        .await
        .unwrap();
    d.drain(None).await;
    assert_eq!(target.accepted().len(), 1, "the buffered copy is delivered");

    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--local", "--no-move-task"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let small = push_payload("octo-org/big", "small").into_bytes();
    let (status, _) = answer(
        &r.handle_event(
            &signed_request("push", "small-after", &small, Some("OFF")),
            1,
        )
        .await,
    );
    assert_eq!(status, 202);
    d.drain(None).await;
    d.drain(None).await;
    let got: Vec<String> = target
        .accepted()
        .iter()
        .map(|r| r.header("x-github-delivery").unwrap().to_string())
        .collect();
    let dead = take_all(&sdk, stack.get(Resource::DlqUrl)).await;
    println!(
        "ledger twin: in 2 (+1 twin), delivered {got:?}, dlq {}",
        dead.len()
    );
    assert_eq!(
        got,
        ["big-twin", "small-after"],
        "the small hook was blocked"
    );
    assert_eq!(dead.len(), 1);
    assert!(dead[0].1["Reason"].contains("missing"), "{:?}", dead[0].1);
}

/// #14.4: a slow target (10 s a hook) and ten hooks of one repository in one
/// batch outlast the queue's 60 s visibility timeout: every received message
/// must stay hidden until delivered and deleted, so each arrives exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_delivers_each_hook_once_to_a_slow_target() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, None).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut ledger = Ledger::default();
    ledger
        .send_round_robin(&r, 10, &["octo-org/slow"], "OFF")
        .await;
    target.set_delay_ms(10_000);
    let out = spigot_as(&dir, Principal::Relay)
        .args([
            "relay",
            "--to",
            &target.url,
            "--local",
            "--once",
            "--poll-wait",
            "1",
            "--allow-http",
        ])
        .args(["--concurrency", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    let dead = take_all(&sdk, stack.get(Resource::DlqUrl)).await;
    println!(
        "ledger slow relay: in 10, delivered {delivered}, duplicates {duplicates}, dlq {}, attempts {}",
        dead.len(),
        target.attempts()
    );
    assert_eq!((delivered, duplicates, dead.len()), (10, 0, 0));
    assert_eq!(target.attempts(), 10, "each hook exactly once");
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await, (0, 0));
}

/// Sends a signal to a process.
fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Deliveries of one repository that started less than `gap_ms` apart: two
/// consumers delivering the same group at once.
fn overlapping(got: &[Recorded], gap_ms: u128) -> usize {
    got.windows(2)
        .filter(|w| w[1].at.duration_since(w[0].at).as_millis() < gap_ms)
        .count()
}

/// #26.4: the relay's heartbeat follows the queue's visibility timeout. A
/// queue hiding messages 3 s, a target answering in 2 s, two relays: each
/// hook once, in order, never two of the group at once. (With a fixed 30 s
/// heartbeat the batch reappeared after 3 s and the second relay took it.)
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_keeps_its_lease_on_a_queue_with_a_short_visibility_timeout() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack, ledger) = relay_backlog(&dir, &target.url, 3, 5, &["octo-org/slow"]).await;
    target.set_delay_ms(2000);
    let _one = relay(&dir, &target.url, &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _two = relay(&dir, &target.url, &[]);
    wait_for("five deliveries", 40, || target.attempts() >= 5).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // a second consumer's copy would show now
    let got = target.accepted();
    let (delivered, duplicates) = ledger.check(&got, &[]);
    println!(
        "ledger short lease: in 5, delivered {delivered}, duplicates {duplicates}, attempts {}, overlapping {}",
        target.attempts(),
        overlapping(&got, 1900)
    );
    assert_eq!((delivered, duplicates, target.attempts()), (5, 0, 5));
    assert_eq!(overlapping(&got, 1900), 0, "one consumer at a time");
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await, (0, 0));
}

/// #26.4: a relay paused past its lease (SIGSTOP, a host asleep) finds on
/// waking that another relay has its group, and delivers no more of it: only
/// the hook in flight at the pause arrives twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_that_lost_its_lease_delivers_no_more_of_that_group() {
    let dir = workdir();
    let first_target = FakeTarget::start().await;
    let second_target = FakeTarget::start().await;
    let (sdk, stack, ledger) = relay_backlog(&dir, &first_target.url, 2, 6, &["octo-org/a"]).await;
    first_target.set_delay_ms(1000);
    let first = relay(&dir, &first_target.url, &[]);
    wait_for("the first delivery to start", 20, || {
        first_target.attempts() >= 1
    })
    .await;
    signal(first.0.id(), "-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await; // past the 2 s lease
    let _second = relay(&dir, &second_target.url, &[]);
    wait_for("the second relay to deliver the group", 30, || {
        second_target.accepted().len() >= 6
    })
    .await;
    signal(first.0.id(), "-CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut got = first_target.accepted();
    let at_first = got.len();
    got.extend(second_target.accepted());
    let (delivered, duplicates) = ledger.check(&second_target.accepted(), &[]);
    assert_eq!(
        (delivered, duplicates),
        (6, 0),
        "the second relay, in order"
    );
    let (all, twice) = ledger.check_any_order(&got);
    println!(
        "ledger lost lease: in 6, delivered {all}, duplicates {twice} (first relay {at_first}, second {}), lost 0",
        second_target.accepted().len()
    );
    assert_eq!(
        at_first, 1,
        "the paused relay delivered only the hook in flight at the pause"
    );
    assert_eq!((all, twice), (6, 1));
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await, (0, 0));
}

/// #26.4: a relay killed mid-group repeats at most the hook in hand: each
/// delivered hook is deleted at once, not when its group is done.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_killed_mid_group_repeats_at_most_the_hook_in_hand() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack, ledger) = relay_backlog(&dir, &target.url, 2, 10, &["octo-org/a"]).await;
    target.set_delay_ms(300);
    let mut first = relay(&dir, &target.url, &[]);
    wait_for("five deliveries", 30, || target.accepted().len() >= 5).await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let _second = relay(&dir, &target.url, &[]);
    wait_for("the rest", 30, || {
        ledger.check_any_order(&target.accepted()).0 >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    println!(
        "ledger kill mid-group: in 10, delivered {delivered}, duplicates {duplicates}, lost 0"
    );
    assert_eq!(delivered, 10);
    assert!(duplicates <= 1, "{duplicates} hooks delivered twice");
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await, (0, 0));
}

/// #26.4: a receive whose answer is lost on the way back (the wrapped moto
/// answers 500 after taking the messages) and retried by the SDK gets the same
/// messages again (ReceiveRequestAttemptId), instead of leaving the group
/// hidden for the visibility timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_receive_whose_answer_was_lost_is_retried_with_its_attempt_id() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, None).await;
    let buffer = stack.get(Resource::BufferUrl);
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 3, &["octo-org/a"], "OFF").await;
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(&sdk);
    let lose = "spigot:lose-receive-answers";
    sqs.tag_queue()
        .queue_url(buffer)
        .tags(lose, "1")
        .send()
        .await
        .unwrap();
    let out = spigot_as(&dir, Principal::Relay)
        .args(["relay", "--to", &target.url, "--local", "--once"])
        .args(["--poll-wait", "1", "--allow-http"])
        .output()
        .unwrap();
    eprintln!("relay said: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tags = sqs
        .list_queue_tags()
        .queue_url(buffer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags.tags().and_then(|t| t.get(lose)).map(String::as_str),
        Some("0"),
        "the fault fired: one answer was lost"
    );
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    println!(
        "ledger lost receive answer: in 3, delivered {delivered}, duplicates {duplicates}, lost 0"
    );
    assert_eq!((delivered, duplicates), (3, 0));
    assert_eq!(depth(&sdk, buffer).await, (0, 0));
}

/// `spigot on --local --drain --json` as the operator: the drain's summary.
fn drain_once(dir: &PathBuf) -> serde_json::Value {
    let out = spigot_as(dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// #26.5: a hook the target keeps refusing blocks only its repository;
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
    // #32.8: --wide adds when the head is tried again.
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// Peak resident memory (VmHWM) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// #14.8: 40 buffered 3 MB hooks (40 repositories, so every one could be in
/// flight at once) drain with the process's peak RSS under 100 MB.
#[tokio::test(flavor = "multi_thread")]
async fn forty_3_mb_hooks_drain_in_bounded_memory() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    switch(&sdk, &stack)
        .set(spigot_core::State::Off)
        .await
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..40 {
        let body = serde_json::json!({"repository": {"full_name": format!("octo-org/r{i}")}, "pad": "x".repeat(3 * 1024 * 1024)})
            .to_string()
            .into_bytes();
        let id = format!("mem-{i}");
        let (status, _) = answer(
            &r.handle_event(&signed_request("push", &id, &body, Some("OFF")), 1)
                .await,
        );
        assert_eq!(status, 202);
        sent.push(id);
    }
    let mut child = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(child.wait().unwrap().success());
    let mut got: Vec<String> = target
        .accepted()
        .iter()
        .map(|r| r.header("x-github-delivery").unwrap().to_string())
        .collect();
    got.sort();
    got.dedup();
    println!(
        "ledger bounded memory: in 40 x 3 MB, delivered {} ({} deliveries), peak RSS {} MB",
        got.len(),
        target.accepted().len(),
        peak / 1024
    );
    assert_eq!(got.len(), 40);
    assert!(peak > 0, "RSS was sampled");
    assert!(peak < 100 * 1024, "peak RSS {} MB", peak / 1024);
}

/// #14.10 chaos: 150 hooks over 5 repositories buffered while OFF, then ON
/// with a target answering 503 to every 4th request, and `spigot dev` killed
/// with SIGKILL twice mid-drain and restarted on the same moto. Everything
/// arrives within 3 minutes of the last restart, in order per repository;
/// duplicates only of hooks delivered before a kill (in flight at it).
#[tokio::test(flavor = "multi_thread")]
async fn chaos_kills_and_a_flapping_target_lose_nothing_and_keep_order() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    target.set_rule(|_, n| (n % 4 == 0).then_some(503));
    let name = unique("chaos");
    let (mut dev, url) = start_dev_named(&dir, &target.url, &name);
    spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .assert()
        .success();
    let repos = [
        "octo-org/a",
        "octo-org/b",
        "octo-org/c",
        "other/d",
        "other/e",
    ];
    let mut ledger = Ledger::default();
    for i in 0..150 {
        let repo = repos[i % repos.len()];
        let body = push_payload(repo, &i.to_string()).into_bytes();
        let id = format!("{name}-{i}");
        let (status, json) = post(&url, &id, &body, SECRET).await;
        assert_eq!(status, 202, "{json}");
        ledger.sent.push((id, repo.to_string(), body));
    }
    spigot_as(&dir, Principal::Operator)
        .args(["on", "--local"])
        .assert()
        .success();
    let mut kills = Vec::new();
    for at in [30, 80] {
        wait_for("deliveries before a kill", 120, || {
            target.accepted().len() >= at
        })
        .await;
        drop(dev); // SIGKILL
        kills.push(Instant::now());
        (dev, _) = start_dev_named(&dir, &target.url, &name);
    }
    let restarted = Instant::now();
    wait_for("all 150 after the last restart", 180, || {
        let mut ids: Vec<String> = target
            .accepted()
            .iter()
            .map(|r| r.header("x-github-delivery").unwrap().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        ids.len() >= 150
    })
    .await;
    let took = restarted.elapsed();
    let got = target.accepted();
    let (delivered, duplicates) = ledger.check(&got, &[]);
    let stack = spigot_cli_dev_file(&dir);
    let dead = take_all(&sdk().await, stack.get(Resource::DlqUrl)).await;
    // Every duplicate is of a hook first delivered before a kill (in flight at it).
    let mut first = std::collections::HashMap::new();
    let mut late = Vec::new();
    for r in &got {
        let id = r.header("x-github-delivery").unwrap().to_string();
        match first.get(&id) {
            None => {
                first.insert(id, r.at);
            }
            Some(at) if *at < *kills.last().unwrap() => {}
            Some(_) => late.push(id),
        }
    }
    println!(
        "ledger chaos: in 150, delivered {delivered}, duplicates {duplicates}, dlq {}, attempts {}, all delivered {took:?} after the last restart",
        dead.len(),
        target.attempts(),
    );
    assert_eq!(delivered, 150);
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    assert!(
        late.is_empty(),
        "duplicates of hooks not in flight at a kill: {late:?}"
    );
    drop(dev);
}

/// The local stack `spigot dev` wrote in `dir`.
/// #19.3: `filters put` checks a new filter against its repository's whole set.
#[tokio::test(flavor = "multi_thread")]
async fn filters_put_refuses_a_filter_that_does_not_fit_with_the_others() {
    let dir = workdir();
    let _ = local_stack(&dir, None).await;
    let write = |name: &str| {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(
            &path,
            serde_json::json!({"Repository": "octo-org/mono", "Branch": "main", "Pipeline": name, "Syntax": "regex", "Include": ["\\w{200}"]})
                .to_string(),
        )
        .unwrap();
        path
    };
    let first = spigot_as(&dir, Principal::Operator)
        .args(["filters", "put", "--local"])
        .arg(write("wide-1"))
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = spigot_as(&dir, Principal::Operator)
        .args(["filters", "put", "--local"])
        .arg(write("wide-2"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("wide-2") && err.contains("does not fit"),
        "{err}"
    );
    let listed = spigot_as(&dir, Principal::Operator)
        .args(["filters", "list", "--local", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&listed.stdout)
            .unwrap()
            .len(),
        1,
        "nothing written"
    );
}

/// #19: `spigot filters test` reasons as the evaluator does, including files
/// from the compare API for an incomplete push.
#[tokio::test(flavor = "multi_thread")]
async fn filters_test_shows_files_from_the_compare_api() {
    let dir = workdir();
    let gh = FakeGitHub::start(&["services/billing/x.rs"], 100).await;
    let push = dir.join("forced.json");
    std::fs::write(
        &push,
        serde_json::json!({"ref": "refs/heads/main", "before": "b0", "after": "a1", "forced": true,
            "repository": {"full_name": "octo-org/mono"}, "commits": []})
        .to_string(),
    )
    .unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/filters");
    let run = |token: Option<&str>| {
        let mut c = spigot_as(&dir, Principal::Operator);
        c.args(["filters", "test", "--event"]).arg(&push);
        for f in std::fs::read_dir(examples).unwrap() {
            c.arg("--filter").arg(f.unwrap().path());
        }
        c.env("GITHUB_API_URL", &gh.url)
            .env("GITHUB_API_ALLOW_HTTP", "true")
            .env_remove("GITHUB_TOKEN");
        if let Some(t) = token {
            c.env("GITHUB_TOKEN", t);
        }
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    let with = run(Some("t0ken"));
    assert!(with.contains("1 files from the compare API"), "{with}");
    assert!(with.contains("START billing-service"), "{with}");
    assert!(
        with.lines().any(|l| l.starts_with("skip ")),
        "only the matching pipeline starts: {with}"
    );
    let without = run(None);
    assert!(without.contains("no GitHub credentials"), "{without}");
    assert!(
        !without.lines().any(|l| l.starts_with("skip ")),
        "every pipeline of the branch starts: {without}"
    );
}

/// #16.6: the relay refuses a plain-http target unless told it is inside the network.
#[test]
fn relay_refuses_an_http_target_without_allow_http() {
    let dir = workdir();
    let out = spigot_as(&dir, Principal::Relay)
        .args([
            "relay",
            "--to",
            "http://jenkins.internal:8080/",
            "--buffer-url",
            "b",
            "--dlq-url",
            "d",
            "--api-id",
            "a",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-http"));
}

/// #16.1: `spigot secret show` prints the generated secret from Secrets Manager.
#[tokio::test(flavor = "multi_thread")]
async fn secret_show_prints_the_webhook_secret() {
    let dir = workdir();
    let sdk = sdk().await;
    let created = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(unique("spigot-webhook"))
        .secret_string("generated-40-characters-of-secret,older-one")
        .send()
        .await
        .unwrap();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["secret", "show", "--endpoint", moto()])
        .args(["--secret-arn", created.arn().unwrap()])
        .args([
            "--api-id",
            "a",
            "--buffer-url",
            "b",
            "--dlq-url",
            "d",
            "--eval-url",
            "e",
            "--eval-dlq-url",
            "f",
            "--bucket",
            "g",
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "generated-40-characters-of-secret,older-one"
    );
    let missing = spigot_as(&dir, Principal::Operator)
        .args(["secret", "show", "--endpoint", moto()])
        .args([
            "--api-id",
            "a",
            "--buffer-url",
            "b",
            "--dlq-url",
            "d",
            "--eval-url",
            "e",
            "--eval-dlq-url",
            "f",
            "--bucket",
            "g",
        ])
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--secret-arn"));
}

// ---- spigot reconcile, against a local server speaking GitHub's hook-deliveries API ----

const HOOK: &str = "repos/octo-org/mono/hooks/42/deliveries";

/// `spigot reconcile` with a token for the GitHub stand-in at `github`.
fn reconcile(dir: &PathBuf, github: &str, args: &[&str]) -> std::process::Output {
    spigot_as(dir, Principal::Operator)
        .arg("reconcile")
        .args(args)
        .env("GITHUB_API_URL", github)
        .env("GITHUB_API_ALLOW_HTTP", "true")
        .env("GITHUB_TOKEN", "ghp_reconcile_test")
        .env("GITHUB_HOOKS", "repo/octo-org/mono/42")
        .env_remove("GITHUB_APP_ID")
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_redelivers_each_failed_delivery_once_across_pages() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev(&dir, &target.url);
    // 12 a page: the 35 attempts below take 3 pages.
    let github = FakeHooks::start(&url, SECRET, 12).await;
    // 28 events in the last 100 minutes, 7 failed (502, 503, 413, no connection);
    // 2 of those already redelivered successfully: 30 attempts in the window.
    let failed: [(usize, u16); 7] = [
        (3, 502),
        (7, 503),
        (11, 413),
        (15, 0),
        (19, 502),
        (22, 503),
        (25, 0),
    ];
    let recovered = [7, 19];
    let mut ledger = Ledger::default();
    for i in 0..28 {
        let guid = format!("guid-{i:02}");
        let body = push_payload("octo-org/mono", &guid).into_bytes();
        let age = 6_000 - i as u64 * 200;
        let status = failed
            .iter()
            .find(|(j, _)| *j == i)
            .map_or(200, |(_, s)| *s);
        github.seed(HOOK, &guid, &body, status, age, false);
        if recovered.contains(&i) {
            github.seed(HOOK, &guid, &body, 202, age - 60, true);
        } else if status != 200 {
            ledger.sent.push((guid, "octo-org/mono".into(), body));
        }
    }
    // Outside the 2-hour window: failed, and left alone.
    for i in 0..5 {
        let body = push_payload("octo-org/mono", &format!("old-{i}")).into_bytes();
        github.seed(
            HOOK,
            &format!("old-{i}"),
            &body,
            502,
            3 * 3_600 + i * 600,
            false,
        );
    }
    assert_eq!(ledger.sent.len(), 5);

    // A dry run lists the 5 and redelivers nothing.
    let out = reconcile(&dir, &github.url, &["--local", "--dry-run"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for (guid, _, _) in &ledger.sent {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(guid.as_str()) && l.ends_with("would redeliver")),
            "{guid} not listed:\n{stdout}"
        );
    }
    assert_eq!(stdout.matches("would redeliver").count(), 5 + 1, "{stdout}");
    assert!(
        stdout.contains("5 failed in the last 2h (30 deliveries listed)"),
        "{stdout}"
    );
    assert!(!stdout.contains("old-"), "{stdout}");
    assert!(github.redeliveries().len() == 2 && target.attempts() == 0);

    // The real run: exactly those 5, oldest first, each reaching the target byte-identical.
    let out = reconcile(&dir, &github.url, &["--local"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("redelivered 5, skipped 0, left 0"),
        "{stdout}"
    );
    let made: Vec<(String, u16)> = github
        .redeliveries()
        .into_iter()
        .skip(2)
        .map(|a| (a.guid, a.status_code))
        .collect();
    let want: Vec<(String, u16)> = ledger
        .sent
        .iter()
        .map(|(g, _, _)| (g.clone(), 200))
        .collect();
    assert_eq!(made, want);
    wait_for("5 hooks at the target", 30, || target.accepted().len() >= 5).await;
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    let old_redelivered = github
        .redeliveries()
        .iter()
        .filter(|a| a.guid.starts_with("old-"))
        .count();
    eprintln!(
        "ledger: in 5, delivered {delivered}, duplicates {duplicates}, dead-lettered 0, lost {}, outside the window redelivered {old_redelivered}",
        5 - delivered
    );
    assert_eq!((delivered, duplicates, old_redelivered), (5, 0, 0));

    // Every call authenticated, in GitHub's media type and API version; 3 pages a run.
    let calls = github.calls();
    assert!(
        calls.iter().all(|c| {
            c.authorization.as_deref() == Some("Bearer ghp_reconcile_test")
                && c.accept.as_deref() == Some("application/vnd.github+json")
                && c.api_version.as_deref() == Some("2022-11-28")
        }),
        "{calls:?}"
    );
    let lists = |calls: &[GitHubCall]| {
        calls
            .iter()
            .filter(|c| c.request.starts_with("GET") && !c.request.contains("/deliveries/"))
            .count()
    };
    assert_eq!(lists(&calls), 6, "two runs of 3 pages: {calls:#?}");
    assert!(calls.iter().any(|c| c.request.contains("cursor=v1_")));

    // A second run finds nothing to redeliver.
    let out = reconcile(&dir, &github.url, &["--local", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            report["redelivered"].as_u64(),
            report["failed"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0)),
        "{report}"
    );
    assert_eq!(github.redeliveries().len(), 7);
    assert_eq!(target.accepted().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_waits_out_rate_limits_and_a_401_ends_it_with_an_error() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    // GitHub delivers straight to the target here; the state lives in a moto bucket.
    let github = FakeHooks::start(&target.url, SECRET, 100).await;
    let sdk = sdk().await;
    let bucket = bucket(&sdk, "reconcile").await;
    for i in 0..2 {
        let body = push_payload("octo-org/mono", &format!("rl-{i}")).into_bytes();
        github.seed(HOOK, &format!("rl-{i}"), &body, 503, 600 - i * 60, false);
    }
    github.fault_next(false, Fault::TooManyRequests);
    github.fault_next(true, Fault::SecondaryRateLimit);
    // Spigot is still down: the redeliveries fail again.
    target.set_status(503);
    let args = [
        "--endpoint",
        moto(),
        "--bucket",
        &bucket,
        "--stack",
        "no-such-stack",
    ];
    let out = reconcile(&dir, &github.url, &args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("redelivered 2"), "{stdout}");
    let calls: Vec<String> = github.calls().into_iter().map(|c| c.request).collect();
    let posts = calls.iter().filter(|c| c.starts_with("POST")).count();
    let gets = calls.iter().filter(|c| c.starts_with("GET")).count();
    // The 429'd list and the 403'd redelivery were each made again after Retry-After.
    assert_eq!((gets, posts), (2, 3), "{calls:#?}");
    assert_eq!(target.attempts(), 2);
    // What that run redelivered is in the bucket: a rerun within the hour skips
    // the two, still failed, instead of hammering GitHub and the target.
    let out = reconcile(&dir, &github.url, &args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("2 failed in the last 2h (4 deliveries listed): redelivered 0, skipped 2"),
        "{stdout}"
    );
    assert_eq!((github.redeliveries().len(), target.attempts()), (2, 2));

    // Bad credentials: a clear error, exit 1, nothing redelivered.
    github.set_unauthorized(true);
    let before = github.redeliveries().len();
    let out = reconcile(&dir, &github.url, &args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("GitHub refused the credentials")
            && stderr.contains("401")
            && stderr.contains("Bad credentials"),
        "{stderr}"
    );
    assert_eq!(github.redeliveries().len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_recovers_hooks_refused_while_the_buffer_was_unreachable() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    // spigot dev reaches AWS (moto) through a proxy that can be cut.
    let proxy = Proxy::start(moto()).await;
    let (_dev, url) = start_dev_at(&dir, &target.url, &unique("dev"), &proxy.url);
    let github = FakeHooks::start(&url, SECRET, 100).await;
    spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .assert()
        .success();
    let mut ledger = Ledger::default();
    proxy.set_up(false);
    for i in 0..10 {
        let repo = ["octo-org/a", "octo-org/b"][i % 2];
        let guid = format!("outage-{i:02}");
        let body = push_payload(repo, &guid).into_bytes();
        let status = github.deliver(HOOK, &guid, &body).await;
        assert_eq!(status, 503, "hook {i} while the buffer is unreachable");
        ledger.sent.push((guid, repo.to_string(), body));
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct delivery times
    }
    proxy.set_up(true);
    let out = reconcile(&dir, &github.url, &["--local"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("redelivered 10"), "{stdout}");
    assert!(
        github.redeliveries().iter().all(|a| a.status_code == 202),
        "{:?}",
        github.redeliveries()
    );
    let out = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("10 hooks at the target", 60, || {
        target.accepted().len() >= 10
    })
    .await;
    // Nothing more to do, and nothing twice.
    let out = reconcile(&dir, &github.url, &["--local"]);
    assert!(out.status.success());
    assert!(
        text(&out).0.contains("no failed deliveries"),
        "{}",
        text(&out).0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (delivered, duplicates) = ledger.check(&target.accepted(), &[]);
    eprintln!(
        "ledger: in 10 (503 at GitHub), redelivered {}, delivered {delivered} in order per repository, duplicates {duplicates}, lost {}",
        github.redeliveries().len(),
        10 - delivered
    );
    assert_eq!(
        (delivered, duplicates, github.redeliveries().len()),
        (10, 0, 10)
    );
}

/// A signed push of exactly `size` bytes.
fn push_of_size(size: usize) -> Vec<u8> {
    let base = push_payload("octo-org/big", "size");
    let pad = size - base.len() - r#","padding":"""#.len();
    let body = format!(
        "{},\"padding\":\"{}\"}}",
        &base[..base.len() - 1],
        "x".repeat(pad)
    );
    assert_eq!(body.len(), size);
    body.into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_refuses_what_api_gateway_and_lambda_would_refuse() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev(&dir, &target.url);
    // 4.6 MB: base64 in a 6 MB Lambda event still fits; it reaches the target.
    let (status, _) = post(&url, "big-ok", &push_of_size(4_600_000), SECRET).await;
    assert_eq!(status, 200);
    // 4.8 MB: the event would be over 6 MB; production answers 413 before the
    // receiver runs, and so does spigot dev, with API Gateway's body.
    for (size, want) in [
        (4_800_000, "{\"message\": \"Request Too Long\"}"),
        (
            11 * 1024 * 1024,
            "HTTP content length exceeded 10485760 bytes.",
        ),
    ] {
        let resp = reqwest::Client::new()
            .post(&url)
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", format!("big-{size}"))
            .header("Content-Type", "application/json")
            .body(push_of_size(size))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 413, "{size}");
        assert_eq!(resp.text().await.unwrap(), want);
    }
    assert_eq!(target.accepted().len(), 1);
}

/// #18: the switch on an HTTP API stage: moto holds the API and answers the
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
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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

// ---- #20: `make run` and `spigot dev` as a newcomer meets them ----

#[tokio::test(flavor = "multi_thread")]
async fn a_buffered_hook_survives_a_change_of_target() {
    let dir = workdir();
    let old = FakeTarget::start().await;
    let new = FakeTarget::start().await;
    let name = unique("dev");
    let (dev, url) = start_dev_named(&dir, &old.url, &name);
    spigot_as(&dir, Principal::Operator)
        .args(["off", "--local"])
        .assert()
        .success();
    let body = fixture("push.json");
    let (status, _) = post(&url, "kept-1", &body, SECRET).await;
    assert_eq!(status, 202);
    drop(dev);
    // spigot dev again on the same moto, with another target: the same queues.
    let (_dev, _) = start_dev_named(&dir, &new.url, &name);
    let out = spigot_as(&dir, Principal::OperatorDraining)
        .args(["on", "--local", "--drain"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(
        text(&out)
            .0
            .contains(&format!("drained 1 hook to {}", new.url)),
        "{}",
        text(&out).0
    );
    assert_eq!(new.accepted().len(), 1);
    assert_eq!(new.accepted()[0].body, body);
    assert_eq!(old.attempts(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_dev_on_a_taken_port_fails_at_once_and_writes_nothing() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev(&dir, &target.url);
    let before = std::fs::read_to_string(dir.join(".spigot/dev.json")).unwrap();
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/webhook");
    let start = Instant::now();
    let out = spigot(&dir)
        .args([
            "dev",
            "--endpoint",
            moto(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--name", &unique("second"), "--target", &target.url])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out).1;
    assert!(
        stderr.contains(&format!("port {port} is taken")) && stderr.contains("--listen"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join(".spigot/dev.json")).unwrap(),
        before
    );
}

fn run_py(dir: &Path, args: &[&str]) -> Command {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    std::fs::create_dir_all(dir.join("tools")).unwrap();
    for f in ["run.py", "moto_server.py"] {
        std::fs::copy(format!("{root}/tools/{f}"), dir.join("tools").join(f)).unwrap();
    }
    let mut c = Command::new(python());
    c.current_dir(dir)
        .arg("tools/run.py")
        .args([
            "--spigot",
            assert_cmd::cargo::cargo_bin("spigot").to_str().unwrap(),
        ])
        .args(args);
    c
}

#[test]
fn make_run_names_a_taken_port_at_once() {
    let dir = workdir();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let start = Instant::now();
    let out = run_py(&dir, &["--moto-port", &port]).output().unwrap();
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port {port} is taken")) && stderr.contains("MOTO_PORT="),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(!dir.join(".spigot").exists(), "nothing started or written");
    // The receiver's port, moved with ARGS as the README says, is checked too.
    let free = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = run_py(&dir, &["--moto-port", &free, "--", "--listen", &listen])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port {port} (the webhook receiver) is taken")),
        "{stderr}"
    );
    assert!(!dir.join(".spigot").exists(), "nothing started or written");
}

#[test]
fn ctrl_c_stops_spigot_dev_only_and_moto_keeps_the_stack() {
    let dir = workdir();
    let (moto_port, listen, sink) = (free_port(), free_port(), free_port());
    let py = run_py(&dir, &[]).get_program().to_owned();
    let spigot_bin = assert_cmd::cargo::cargo_bin("spigot");
    // The caller: a shell that runs `make run`'s launcher, then goes on.
    let script = format!(
        "'{}' tools/run.py --spigot '{}' --moto-port {moto_port} --listen-port {listen} --sink-port {sink}; echo caller-alive > after.txt",
        py.to_string_lossy(),
        spigot_bin.display()
    );
    let mut caller = Command::new("bash")
        .current_dir(&dir)
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_serving(format!("127.0.0.1:{listen}").parse().unwrap());
    // Ctrl-C to spigot dev (the launcher's process became it).
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", caller.id())).unwrap();
    let dev: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        Command::new("kill")
            .args(["-INT", &dev.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = caller.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("after.txt"))
            .unwrap()
            .trim(),
        "caller-alive"
    );
    // moto kept running with the stack in it; a second launch reuses it.
    let stack: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".spigot/dev.json")).unwrap())
            .unwrap();
    let alive = {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", moto_port)).expect("moto outlived spigot dev");
        s.write_all(b"GET /moto-api/data.json HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head).into_owned()
    };
    assert!(alive.ends_with("200"), "moto outlived spigot dev: {alive}");
    assert!(stack["buffer_url"].as_str().is_some(), "{stack}");
    let out = run_py(&dir, &["--stop"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("moto (pid"),
        "{out:?}"
    );
}

/// #20.3 and #20.7: an idle `spigot dev` prints nothing; a wrong path is a 404 that says where hooks go.
#[tokio::test(flavor = "multi_thread")]
async fn idle_dev_is_quiet_and_wrong_paths_are_404() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let port = free_port();
    let log = dir.join("dev.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = spigot(&dir)
        .args([
            "dev",
            "--endpoint",
            moto(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--target",
            &target.url,
            "--name",
            &unique("idle"),
            "--secret",
            SECRET,
        ])
        .args(["--drain-interval", "1"])
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let _dev = Dev(child);
    wait_serving(format!("127.0.0.1:{port}").parse().unwrap());
    let started = std::fs::read_to_string(&log).unwrap();
    assert!(started.contains("spigot dev: POST webhooks"), "{started}");
    assert!(
        !started.contains('\u{1b}'),
        "no colour into a file: {started:?}"
    );
    // 15 s idle, 15 drain runs: not a line.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let idle = std::fs::read_to_string(&log).unwrap();
    assert_eq!(idle, started, "idle output: {}", &idle[started.len()..]);
    // Positive control: a hook is one readable line.
    let (status, _) = post(
        &format!("http://127.0.0.1:{port}/webhook"),
        "quiet-1",
        &fixture("push.json"),
        SECRET,
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = std::fs::read_to_string(&log).unwrap();
    let new = &after[idle.len()..];
    assert!(new.contains("quiet-1"), "{new}");
    assert!(!new.contains("Some("), "no Rust Debug values: {new}");
    for (method, path) in [("GET", "/nope"), ("GET", "/webhook"), ("POST", "/hooks")] {
        let resp = reqwest::Client::new()
            .request(
                method.parse().unwrap(),
                format!("http://127.0.0.1:{port}{path}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{method} {path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("POST GitHub webhooks to /webhook")
        );
    }
}

/// #20.6 and #20.7: the README's pipeline step, and counts people can read.
#[tokio::test(flavor = "multi_thread")]
async fn filters_say_when_none_apply_and_count_themselves() {
    let dir = workdir();
    let (_sdk, _stack) = local_stack(&dir, None).await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = |args: &[&str]| spigot(&dir).args(args).arg("--local").output().unwrap();
    let out = run(&["filters", "list"]);
    assert!(
        text(&out).0.trim_end().ends_with("0 filters"),
        "{}",
        text(&out).0
    );
    let mono = format!("{root}/examples/push-mono.json");
    let out = run(&["filters", "test", "--event", &mono]);
    assert!(
        text(&out).0.contains("no filter for octo-org/mono@main"),
        "{}",
        text(&out).0
    );
    let out = run(&[
        "filters",
        "put",
        &format!("{root}/examples/filters/billing.json"),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let out = run(&["filters", "list"]);
    assert!(
        text(&out).0.trim_end().ends_with("1 filter"),
        "{}",
        text(&out).0
    );
    let out = run(&["filters", "test", "--event", &mono]);
    let stdout = text(&out).0;
    assert!(
        stdout.contains("START billing-service") && !stdout.contains("no filter"),
        "{stdout}"
    );
}

/// #20.7: `--local` with the stack's moto down says what to start.
#[tokio::test(flavor = "multi_thread")]
async fn local_with_the_stack_down_asks_for_make_run() {
    let dir = workdir();
    let (_sdk, mut stack) = local_stack(&dir, None).await;
    stack.endpoint = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join(".spigot/dev.json"),
        serde_json::to_string(&stack).unwrap(),
    )
    .unwrap();
    let start = Instant::now();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["status", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("is `make run` running?"),
        "{}",
        text(&out).1
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// The console blocks of the README's "Try it locally" section: (command, expected lines) pairs, then the dev window's lines.
fn readme_transcript() -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section =
        &readme[readme.find("## Try it locally").unwrap()..readme.find("## Deploy").unwrap()];
    let blocks: Vec<&str> = section
        .split("```console\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect();
    assert_eq!(blocks.len(), 2, "a transcript and the dev window's lines");
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in blocks[0].lines() {
        match line.strip_prefix("$ spigot ") {
            Some(cmd) => steps.push((cmd.to_string(), Vec::new())),
            None => steps.last_mut().unwrap().1.push(line.to_string()),
        }
    }
    (steps, blocks[1].lines().map(String::from).collect())
}

/// `…` in an expected line stands for anything.
fn matches(expected: &str, got: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    let mut rest = got;
    for (i, part) in parts.iter().enumerate() {
        match rest.find(part) {
            Some(at) if i > 0 || at == 0 => rest = &rest[at + part.len()..],
            _ => return false,
        }
    }
    parts.len() > 1 || rest.is_empty()
}

/// #20: the README's "Try it locally" section is what a run prints.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_transcript_is_what_a_run_prints() {
    let (steps, window) = readme_transcript();
    assert!(steps.len() >= 8, "{steps:?}");
    let dir = workdir();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for d in ["tests", "examples"] {
        std::os::unix::fs::symlink(format!("{root}/{d}"), dir.join(d)).unwrap();
    }
    let (listen, sink) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("dev.log")).unwrap();
    let child = spigot(&dir)
        .args(["dev", "--endpoint", moto(), "--name", &unique("readme")])
        .args([
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--sink",
            &format!("127.0.0.1:{sink}"),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _dev = Dev(child);
    wait_serving(format!("127.0.0.1:{listen}").parse().unwrap());
    let ports = |s: &str| {
        s.replace("127.0.0.1:3000", &format!("127.0.0.1:{listen}"))
            .replace("127.0.0.1:3001", &format!("127.0.0.1:{sink}"))
    };
    for (cmd, expected) in &steps {
        let mut args: Vec<String> = cmd.split_whitespace().map(String::from).collect();
        if args[0] == "send" {
            args.extend(["--url".into(), format!("http://127.0.0.1:{listen}/webhook")]);
        }
        let out = spigot(&dir).args(&args).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "spigot {cmd}: {stderr}");
        let got: Vec<&str> = stdout.lines().collect();
        assert_eq!(got.len(), expected.len(), "spigot {cmd}:\n{stdout}");
        for (e, g) in expected.iter().zip(&got) {
            assert!(
                matches(&ports(e), g),
                "spigot {cmd}:\n  README: {e}\n  run:    {g}"
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(dir.join("dev.log")).unwrap();
        let missing: Vec<&String> = window
            .iter()
            .filter(|w| !log.lines().any(|l| matches(&format!("…{w}"), l)))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dev window lacks {missing:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// #20.3: `-v` shows Spigot's debug lines, not the SDK's internals (RUST_LOG still can).
#[tokio::test(flavor = "multi_thread")]
async fn verbose_is_spigots_debug_not_the_sdks() {
    let dir = workdir();
    let (_sdk, _stack) = local_stack(&dir, None).await;
    let out = spigot(&dir)
        .args(["-v", "status", "--local"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = text(&out).1;
    assert!(
        !stderr.contains("aws_smithy") && !stderr.contains("aws_config"),
        "{stderr}"
    );
    // Positive control: asking for everything shows the SDK's lines.
    let out = spigot_as(&dir, Principal::Operator)
        .args(["status", "--local"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(text(&out).1.contains("aws_smithy"), "{}", text(&out).1);
}

/// #26.7: `spigot dlq --eval` lists and redrives the evaluation queue's dead
/// letters (back to the evaluation queue), under the operator's policy; the
/// buffer's DLQ is not touched (control: it lists nothing).
#[tokio::test(flavor = "multi_thread")]
async fn dlq_eval_lists_and_redrives_the_evaluation_dead_letters() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let ids = dead_letters(&sdk, stack.get(Resource::EvalDlqUrl), 2).await;
    let list = |extra: &[&str]| {
        let out = spigot_as(&dir, Principal::Operator)
            .args(["dlq", "list", "--local", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .iter()
            .map(|row| row["delivery"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let mut listed = list(&["--eval"]);
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);
    assert!(list(&[]).is_empty(), "the buffer's DLQ holds none");
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--eval", "--local", "--no-move-task"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let in_eval = peek_all(&sdk, stack.get(Resource::EvalUrl)).await;
    let in_dlq = peek_all(&sdk, stack.get(Resource::EvalDlqUrl)).await;
    let in_buffer = peek_all(&sdk, stack.get(Resource::BufferUrl)).await;
    println!(
        "ledger dlq --eval: in 2, redriven {}, left {}, buffer {}",
        in_eval.len(),
        in_dlq.len(),
        in_buffer.len()
    );
    assert_eq!((in_eval.len(), in_dlq.len(), in_buffer.len()), (2, 0, 0));
}

/// #26.6: dead letters of two repositories, interleaved and put in the DLQ out
/// of order, are redriven oldest first: each repository's letters rejoin its
/// group in the order they arrived, and a drain delivers them so.
#[tokio::test(flavor = "multi_thread")]
async fn a_redrive_keeps_each_repositorys_order() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    // Arrival order: a1 b1 a2 b2 a3; dead-lettered in another order.
    let arrived = [
        ("a1", "octo-org/a"),
        ("b1", "octo-org/b"),
        ("a2", "octo-org/a"),
        ("b2", "octo-org/b"),
        ("a3", "octo-org/a"),
    ];
    for i in [4usize, 1, 2, 0, 3] {
        let (id, repo) = arrived[i];
        let hook = spigot_core::Hook {
            delivery: id.to_string(),
            event: "push".into(),
            repository: Some(repo.into()),
            headers: vec![("x-github-event".into(), "push".into())],
            body: push_payload(repo, id).into_bytes(),
            received_at_ms: 1_000 + i as u64,
            json_body: false,
        };
        dead_letter(&sdk, stack.get(Resource::DlqUrl), &hook).await;
    }
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--local"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    switch(&sdk, &stack)
        .set(spigot_core::State::On)
        .await
        .unwrap();
    let d = drainer(&sdk, &stack, &target.url, 2).await;
    while depth(&sdk, stack.get(Resource::BufferUrl)).await != (0, 0) {
        d.drain(None).await;
    }
    // Each body carries its id as its marker.
    let got: Vec<String> = target
        .accepted()
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["marker"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let of = |p: char| {
        got.iter()
            .filter(|g| g.starts_with(p))
            .cloned()
            .collect::<Vec<_>>()
    };
    println!(
        "ledger redrive order: in 5, delivered {got:?}, dlq {}",
        peek_all(&sdk, stack.get(Resource::DlqUrl)).await.len()
    );
    assert_eq!(got.len(), 5);
    assert_eq!(of('a'), ["a1", "a2", "a3"]);
    assert_eq!(of('b'), ["b1", "b2"]);
}

/// #28.5: text from a push reaches the terminal without its escapes.
#[test]
fn filters_test_prints_untrusted_text_without_terminal_escapes() {
    let dir = workdir();
    let mut push: serde_json::Value = serde_json::from_slice(&fixture("push.json")).unwrap();
    push["ref"] = serde_json::json!("refs/heads/main\u{1b}[2J\u{1b}]0;pwned\u{7}");
    let file = dir.join("push.json");
    std::fs::write(&file, push.to_string()).unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/filters");
    let mut c = spigot(&dir);
    c.args(["filters", "test", "--event"]).arg(&file);
    for f in std::fs::read_dir(examples).unwrap() {
        c.arg("--filter").arg(f.unwrap().path());
    }
    let out = c.env_remove("GITHUB_TOKEN").output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("@main [2J ]0;pwned "), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{7}'),
        "{stdout:?}"
    );
}

/// #28.1: `filters put` refuses to replace a filter a stack owns unless
/// `--force`, and a file cannot claim a stack's ownership.
#[tokio::test(flavor = "multi_thread")]
async fn filters_put_leaves_a_stack_owned_filter_alone_unless_forced() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let examples = format!(
        "{}/../../examples/filters/billing.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let key = "filters/octo-org/mono/main/billing-service.json";
    let put = |extra: &[&str]| {
        spigot_as(&dir, Principal::Operator)
            .args(["filters", "put", &examples, "--local"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Control: an unowned filter is written (and written again).
    assert!(put(&[]).status.success());
    assert!(put(&[]).status.success());
    // The stack's custom resource owns it now.
    let s3 = spigot_aws::s3_client(&sdk);
    let bucket = stack.get(Resource::Bucket);
    let mut owned: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&examples).unwrap()).unwrap();
    let arn = "arn:aws:cloudformation:us-east-1:123456789012:stack/billing/1";
    owned["OwnerStack"] = serde_json::json!(arn);
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(owned.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let out = put(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is owned by stack") && err.contains("--force"),
        "{err}"
    );
    let stored = |s3: spigot_aws::aws_sdk_s3::Client| async move {
        let got = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let bytes = got.body.collect().await.unwrap().into_bytes();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };
    assert_eq!(stored(s3.clone()).await["OwnerStack"], arn, "left alone");
    let out = put(&["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stored(s3.clone()).await.get("OwnerStack").is_none());
    // A file that names an owner does not make one.
    let claim = dir.join("claim.json");
    std::fs::write(&claim, owned.to_string()).unwrap();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["filters", "put"])
        .arg(&claim)
        .arg("--local")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stored(s3).await.get("OwnerStack").is_none());
}

/// #32.4, #32.5: `filters test` is a CI check that can fail: a broken filter
/// file exits 2 naming the file and the error (it used to be skipped, exit 0),
/// and it applies the evaluator's MAX_PUSH_AGE: GitHub's 2019 sample push
/// starts nothing, saying why. Controls: a good file and `--max-push-age 0`
/// (no limit) start the pipeline.
#[test]
fn filters_test_fails_on_a_broken_filter_and_applies_max_push_age() {
    let dir = workdir();
    let push = dir.join("push.json");
    std::fs::write(&push, fixture("push.json")).unwrap();
    let good = dir.join("hello.json");
    std::fs::write(
        &good,
        r#"{"Repository": "Codertocat/Hello-World", "Branch": "master", "Pipeline": "hello"}"#,
    )
    .unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"Repository": "Codertocat/Hello-World", "Branch": "master", "Pipelin": "hello"}"#,
    )
    .unwrap();
    let run = |filters: &[&PathBuf], age: Option<&str>| {
        let mut c = spigot(&dir);
        c.args(["filters", "test", "--event"])
            .arg(&push)
            .env_remove("GITHUB_TOKEN")
            .env_remove("MAX_PUSH_AGE");
        for f in filters {
            c.arg("--filter").arg(f);
        }
        if let Some(a) = age {
            c.args(["--max-push-age", a]);
        }
        c.output().unwrap()
    };
    let broken = run(&[&good, &bad], Some("0"));
    assert_eq!(broken.status.code(), Some(2));
    let err = text(&broken).1;
    assert!(err.contains("bad.json") && err.contains("Pipelin"), "{err}");
    let old = run(&[&good], None);
    assert!(old.status.success());
    let out = text(&old).0;
    assert!(
        out.contains("too old (pushed 2019-05-15T15:20:57Z") && !out.contains("START"),
        "{out}"
    );
    let unlimited = run(&[&good], Some("0"));
    assert!(
        text(&unlimited).0.contains("START hello"),
        "{}",
        text(&unlimited).0
    );
}

/// #32.4, #32.10: with GitHub unreachable `spigot reconcile` says nothing
/// reassuring ("no failed deliveries"), only why, naming the URL once, and
/// exits 1; `--since 2` without a unit is refused (exit 2), `--since 2h` is
/// taken (control: it reaches GitHub and fails there the same way).
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_with_github_unreachable_says_why_and_a_bare_since_is_refused() {
    let dir = workdir();
    let bucket = bucket(&sdk().await, "reconcile").await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let where_ = [
        "--endpoint",
        moto(),
        "--bucket",
        &bucket,
        "--stack",
        "no-such-stack",
    ];
    let out = reconcile(&dir, &down, &[&["--since", "2h"][..], &where_[..]].concat());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stdout.contains("no failed deliveries"), "{stdout}");
    assert!(
        stderr.contains("could be read from") && stderr.contains("GITHUB_API_URL"),
        "{stderr}"
    );
    assert_eq!(stderr.matches(&down).count(), 1, "the URL once: {stderr}");
    let bare = reconcile(&dir, &down, &["--since", "2"]);
    assert_eq!(bare.status.code(), Some(2));
    assert!(text(&bare).1.contains("has no unit"), "{}", text(&bare).1);
}

/// #32.1: `make run` finds spigot where cargo put it (CARGO_TARGET_DIR), and
/// with no binary there it says so before anything starts: no traceback, no
/// moto left behind. Control: the same call without the override starts
/// nothing either way we cannot see here, so the positive control is the
/// README transcript test, which runs `spigot dev` from the real build.
#[test]
fn make_run_looks_for_spigot_in_cargo_target_dir_and_leaves_nothing_behind() {
    let dir = workdir();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let elsewhere = dir.join("elsewhere");
    let moto_port = free_port();
    let out = std::process::Command::new(python())
        .current_dir(root)
        .arg("tools/run.py")
        .args(["--moto-port", &moto_port.to_string()])
        .args(["--listen-port", &free_port().to_string()])
        .args(["--sink-port", &free_port().to_string()])
        .env("CARGO_TARGET_DIR", &elsewhere)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("Traceback"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no spigot binary at {}",
            elsewhere.join("debug/spigot").display()
        )),
        "{stderr}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", moto_port)).is_err(),
        "no moto was started"
    );
}

/// #32.6: `spigot dev --endpoint` with nothing listening says so within a
/// few seconds (it took 1 min 48 s), naming the endpoint and what to start.
#[test]
fn dev_with_nothing_at_its_endpoint_says_so_within_seconds() {
    let dir = workdir();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let start = Instant::now();
    let out = spigot(&dir)
        .args(["dev", "--endpoint", &endpoint])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--sink", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("nothing answers at {endpoint}")) && stderr.contains("make run"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}

/// #32.3, #32.4: a hook that fails retryably during `spigot on --local
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

/// #32.4, #32.6: `spigot relay --once` against a down target exits 1 saying
/// what waits and why (it exited 0 with the hook still buffered); on an empty
/// buffer it exits 0 within seconds, without `--poll-wait` (it took 20-40 s).
/// Control: the target back, the same command delivers the hook and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn relay_once_says_what_it_left_and_exits_soon_on_an_empty_buffer() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, None).await;
    let relay = |dir: &PathBuf| {
        spigot_as(dir, Principal::Relay)
            .args([
                "relay",
                "--to",
                &target.url,
                "--local",
                "--once",
                "--allow-http",
            ])
            .output()
            .unwrap()
    };
    let start = Instant::now();
    let empty = relay(&dir);
    assert!(empty.status.success(), "{}", text(&empty).1);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let mut ledger = Ledger::default();
    ledger.send_round_robin(&r, 1, &["octo-org/a"], "OFF").await;
    target.set_status(503);
    let down = relay(&dir);
    assert_eq!(down.status.code(), Some(1));
    let stderr = text(&down).1;
    assert!(
        stderr.contains("1 hook still in the buffer") && stderr.contains("is down"),
        "{stderr}"
    );
    target.set_status(200);
    let back = relay(&dir);
    assert!(back.status.success(), "{}", text(&back).1);
    assert_eq!(target.accepted().len(), 1, "delivered once");
}

/// #32.6: `spigot send` without `--url` posts to the local stack's receiver
/// wherever `spigot dev` listens (read from .spigot/dev.json), not to :3000.
#[tokio::test(flavor = "multi_thread")]
async fn send_finds_the_local_receiver_wherever_dev_listens() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev(&dir, &target.url);
    assert!(!url.contains(":3000/"), "dev listens elsewhere: {url}");
    let body = dir.join("push.json");
    std::fs::write(&body, fixture("push.json")).unwrap();
    let out = spigot(&dir)
        .arg("send")
        .arg(&body)
        .args(["--secret", SECRET])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.starts_with("200"), "{}", text(&out).0);
    assert_eq!(target.accepted().len(), 1);
}

/// #32.8: `dlq show ID` prints one dead letter whole (reason, headers, body)
/// and leaves it there; `dlq delete ID` removes that one for good and no
/// other; an id that is not there exits 1 for both. Under OperatorPolicy.
#[tokio::test(flavor = "multi_thread")]
async fn dlq_show_and_delete_one_letter_by_its_delivery_id() {
    let dir = workdir();
    let (sdk, stack) = local_stack(&dir, None).await;
    let ids = dead_letters(&sdk, stack.get(Resource::DlqUrl), 3).await;
    let op = |args: &[&str]| {
        spigot_as(&dir, Principal::Operator)
            .arg("dlq")
            .args(args)
            .arg("--local")
            .output()
            .unwrap()
    };
    let shown = op(&["show", &ids[1]]);
    assert!(shown.status.success(), "{}", text(&shown).1);
    let out = text(&shown).0;
    assert!(
        out.contains(&ids[1]) && out.contains("target answered 404"),
        "{out}"
    );
    assert!(
        out.contains("x-github-event: push") && out.contains("\"ref\""),
        "{out}"
    );
    let as_json: serde_json::Value =
        serde_json::from_slice(&op(&["show", &ids[1], "--json"]).stdout).unwrap();
    assert_eq!(as_json["delivery"], ids[1].as_str());
    assert!(
        as_json["body"]["text"]
            .as_str()
            .unwrap()
            .contains("octo-org/x")
    );
    assert_eq!(
        deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await).len(),
        3,
        "show keeps it"
    );
    let deleted = op(&["delete", &ids[1]]);
    assert!(deleted.status.success(), "{}", text(&deleted).1);
    assert!(
        text(&deleted)
            .0
            .contains(&format!("deleted dead letter {}", ids[1]))
    );
    let left = deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await);
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&ids[1]) && left.contains(&ids[0]) && left.contains(&ids[2]));
    for cmd in ["show", "delete"] {
        let missing = op(&[cmd, "no-such-id"]);
        assert_eq!(missing.status.code(), Some(1), "{cmd}");
        assert!(
            text(&missing)
                .1
                .contains("no dead letter has delivery id no-such-id")
        );
    }
    assert_eq!(
        deliveries(&peek_all(&sdk, stack.get(Resource::DlqUrl)).await).len(),
        2
    );
}

/// #32.7: `spigot dev --delivery-mode pull` buffers every hook (202, even ON)
/// and runs no drainer, so `spigot relay` can be tried as deployed: the hook
/// waits until the relay delivers it. Control: the relay's delivery.
#[tokio::test(flavor = "multi_thread")]
async fn dev_in_pull_mode_buffers_everything_for_the_relay() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev_with(
        &dir,
        &target.url,
        &unique("dev"),
        moto(),
        &["--delivery-mode", "pull"],
    );
    let body = fixture("push.json");
    let sent = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "pull-1")
        .header("x-hub-signature-256", sign_sha256(SECRET.as_bytes(), &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status().as_u16(), 202, "buffered, even ON");
    // More than one drain interval of `spigot dev` (1 s): nothing drained it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(target.accepted().is_empty(), "no drainer runs in pull mode");
    let relay = spigot_as(&dir, Principal::Relay)
        .args([
            "relay",
            "--to",
            &target.url,
            "--local",
            "--once",
            "--allow-http",
        ])
        .output()
        .unwrap();
    assert!(relay.status.success(), "{}", text(&relay).1);
    assert_eq!(target.accepted().len(), 1);
    assert_eq!(target.accepted()[0].body, body);
}

/// #32.2: Ctrl-C during `spigot on --local --drain` stops it as it stops
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
    wait_for("two deliveries", 30, || target.accepted().len() >= 2).await;
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
    assert!(rest.status.success(), "{}", text(&rest).1);
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

/// #32.10: Ctrl-C on `spigot dev` says what it stopped and what keeps running
/// (moto, with the stack); the expected public test secret is said, not warned.
#[test]
fn ctrl_c_on_dev_says_what_stopped_and_what_keeps_running() {
    let dir = workdir();
    let listen = free_port();
    let err = dir.join("dev.err");
    let mut child = spigot(&dir)
        .args(["dev", "--endpoint", moto()])
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--sink", &format!("127.0.0.1:{}", free_port())])
        .args(["--name", &unique("dev")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    wait_serving(format!("127.0.0.1:{listen}").parse().unwrap());
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let said = std::fs::read_to_string(&err).unwrap();
    assert!(
        said.contains("spigot dev stopped") && said.contains("moto keeps running"),
        "{said}"
    );
    assert!(
        said.contains("public test secret") && !said.contains("WARN"),
        "{said}"
    );
}

/// #32.10: `spigot secret show --local` says why there is nothing to show
/// and what the local stack verifies with, without suggesting `--local`.
#[tokio::test(flavor = "multi_thread")]
async fn secret_show_local_says_what_the_local_stack_verifies_with() {
    let dir = workdir();
    let (_sdk, _stack) = local_stack(&dir, None).await;
    let out = spigot_as(&dir, Principal::Operator)
        .args(["secret", "show", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out).1;
    assert!(
        stderr.contains("spigot-local-test-secret") && !stderr.contains("add --local"),
        "{stderr}"
    );
}

/// #32.10: a filter on a glob branch is deleted by its file or by
/// `--pipeline`, not only by its percent-encoded key; a pipeline no filter
/// starts exits 1.
#[tokio::test(flavor = "multi_thread")]
async fn filters_delete_by_file_or_pipeline() {
    let dir = workdir();
    let (_sdk, _stack) = local_stack(&dir, None).await;
    let file = dir.join("release.json");
    std::fs::write(
        &file,
        r#"{"Repository": "octo-org/mono", "Branch": "release/*", "Pipeline": "rel"}"#,
    )
    .unwrap();
    let op = |args: &[&str]| {
        spigot_as(&dir, Principal::Operator)
            .arg("filters")
            .args(args)
            .arg("--local")
            .output()
            .unwrap()
    };
    let listed = |dir: &PathBuf| {
        let out = spigot_as(dir, Principal::Operator)
            .args(["filters", "list", "--local"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("release/*")
    };
    let path = file.to_str().unwrap();
    assert!(op(&["put", path]).status.success());
    assert!(listed(&dir));
    let by_file = op(&["delete", path]);
    assert!(by_file.status.success(), "{}", text(&by_file).1);
    assert!(
        text(&by_file).0.contains("release%2F%2A"),
        "{}",
        text(&by_file).0
    );
    assert!(!listed(&dir));
    assert!(op(&["put", path]).status.success());
    let by_pipeline = op(&["delete", "--pipeline", "rel", "--repo", "octo-org/mono"]);
    assert!(by_pipeline.status.success(), "{}", text(&by_pipeline).1);
    assert!(!listed(&dir));
    let none = op(&["delete", "--pipeline", "rel"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        text(&none).1.contains("no filter starts rel"),
        "{}",
        text(&none).1
    );
}

/// #32.9: machine output is one JSON document: `send`, `on` and `off` have
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

/// #32.8: `status --watch` refreshes the view (here twice, 200 ms apart), and
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
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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

/// #32.11: subcommand help is no longer a wall of ten resource flags; `spigot
/// where` lists them (flag, variable, stack output) with the value each
/// resolves to here. The flags still work (control: --bucket overrides).
#[tokio::test(flavor = "multi_thread")]
async fn where_lists_the_resource_flags_that_help_no_longer_repeats() {
    let dir = workdir();
    let (_sdk, stack) = local_stack(&dir, None).await;
    let help = spigot(&dir).args(["on", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(
        !help.contains("--buffer-url") && help.contains("spigot where"),
        "{help}"
    );
    let out = spigot(&dir).args(["where", "--local"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    let listed = text(&out).0;
    assert!(
        listed.contains("--buffer-url")
            && listed.contains("SPIGOT_BUFFER_URL")
            && listed.contains("BufferQueueUrl"),
        "{listed}"
    );
    assert!(listed.contains(stack.get(Resource::Bucket)), "{listed}");
    let over = spigot(&dir)
        .args(["where", "--local", "--bucket", "another-bucket"])
        .output()
        .unwrap();
    assert!(
        text(&over).0.contains("another-bucket"),
        "{}",
        text(&over).0
    );
}
