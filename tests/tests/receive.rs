//! The receiver against moto and a switchable local target (issue: foundation).

use base64::Engine;
use spigot_core::envelope::Envelope;
use spigot_core::resources::Resource;
use spigot_e2e::*;

fn decode_bytes(env: &Envelope) -> Vec<u8> {
    env.inline_body().unwrap().expect("inline body")
}

async fn on_forwards_the_exact_bytes_and_github_headers(shape: Shape) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(
        &sdk,
        &stack,
        &format!("{}/github-webhook/", target.url),
        2000,
    )
    .await;
    let body = fixture("push.json");
    let req = signed_request("push", "d-on-1", &body, Some("ON"));
    let (status, json) = exchange(&r, shape, &req).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["status"], "delivered");
    let got = target.accepted();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body, "byte-identical");
    assert_eq!(got[0].path, "/github-webhook/");
    for h in [
        "x-hub-signature-256",
        "x-github-event",
        "x-github-delivery",
        "content-type",
        "user-agent",
        "x-github-hook-id",
    ] {
        assert_eq!(
            got[0].header(h),
            req.headers.get(h).map(|v| v.to_str().unwrap()),
            "header {h}"
        );
    }
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await, (0, 0));
    // A push also goes to the evaluation queue, spigot or not.
    let evals = peek_all(&sdk, stack.get(Resource::EvalUrl)).await;
    assert_eq!(evals.len(), 1);
    assert_eq!(Envelope::decode(&evals[0].0).unwrap().delivery, "d-on-1");
}

async fn off_buffers_and_nothing_reaches_the_target(shape: Shape) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let body = fixture("pull_request.opened.json");
    let (status, json) = exchange(
        &r,
        shape,
        &signed_request("pull_request", "d-off-1", &body, Some("OFF")),
    )
    .await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(
        json,
        serde_json::json!({"status": "buffered", "delivery": "d-off-1"})
    );
    assert_eq!(target.attempts(), 0);
    let msgs = peek_all(&sdk, stack.get(Resource::BufferUrl)).await;
    assert_eq!(msgs.len(), 1);
    let env = Envelope::decode(&msgs[0].0).unwrap();
    assert_eq!(decode_bytes(&env), body);
    assert_eq!(env.repository.as_deref(), Some("Codertocat/Hello-World"));
    // Not a push: nothing for the evaluator.
    assert!(
        peek_all(&sdk, stack.get(Resource::EvalUrl))
            .await
            .is_empty()
    );
}

async fn retryable_failures_buffer_with_202(shape: Shape) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let body = fixture("push.json");

    target.set_status(503);
    let r = receiver(&sdk, &stack, &target.url, 1000).await;
    let (s1, j1) = exchange(
        &r,
        shape,
        &signed_request("push", "d-503", &body, Some("ON")),
    )
    .await;
    assert_eq!((s1, j1["status"].as_str()), (202, Some("buffered")));
    assert!(j1["reason"].as_str().unwrap().contains("503"));

    let r = receiver(&sdk, &stack, &closed, 1000).await;
    let (s2, _) = exchange(
        &r,
        shape,
        &signed_request("push", "d-closed", &body, Some("ON")),
    )
    .await;
    assert_eq!(s2, 202);

    target.set_status(200);
    target.set_delay_ms(1500);
    let r = receiver(&sdk, &stack, &target.url, 300).await;
    let (s3, j3) = exchange(
        &r,
        shape,
        &signed_request("push", "d-slow", &body, Some("ON")),
    )
    .await;
    assert_eq!(s3, 202);
    assert!(j3["reason"].as_str().unwrap().contains("300 ms"), "{j3}");

    let mut buffered: Vec<String> = peek_all(&sdk, stack.get(Resource::BufferUrl))
        .await
        .iter()
        .map(|(b, _)| {
            let env = Envelope::decode(b).unwrap();
            assert_eq!(decode_bytes(&env), body);
            env.delivery
        })
        .collect();
    buffered.sort();
    assert_eq!(buffered, ["d-503", "d-closed", "d-slow"]);
}

async fn permanent_failure_dead_letters_with_the_reason_and_202(shape: Shape) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    target.set_status(404);
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let body = fixture("push.json");
    let (status, json) = exchange(
        &r,
        shape,
        &signed_request("push", "d-404", &body, Some("ON")),
    )
    .await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["status"], "dead-lettered");
    let dead = peek_all(&sdk, stack.get(Resource::DlqUrl)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.get("Status").map(String::as_str), Some("404"));
    assert!(dead[0].1["Reason"].contains("404"));
    let env = Envelope::decode(&dead[0].0).unwrap();
    assert_eq!(decode_bytes(&env), body);
    assert!(env.last_error.unwrap().contains("404"));
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await, (0, 0));
}

async fn bad_signature_is_401_and_nothing_is_stored(shape: Shape) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let body = fixture("push.json");
    let mut req = signed_request("push", "d-bad", &body, Some("OFF"));
    req.body = Some(
        String::from_utf8(body.clone())
            .unwrap()
            .replace("Codertocat", "Attacker"),
    );
    let (status, json) = exchange(&r, shape, &req).await;
    assert_eq!(status, 401);
    assert!(json["error"].as_str().unwrap().contains("does not match"));
    let mut unsigned = signed_request("push", "d-unsigned", &body, Some("OFF"));
    unsigned.headers.remove("x-hub-signature-256");
    let (status, json) = exchange(&r, shape, &unsigned).await;
    assert_eq!(status, 401);
    assert!(json["error"].as_str().unwrap().contains("missing"));
    for q in [
        stack.get(Resource::BufferUrl),
        stack.get(Resource::DlqUrl),
        stack.get(Resource::EvalUrl),
    ] {
        assert!(peek_all(&sdk, q).await.is_empty());
    }
    assert_eq!(target.attempts(), 0);
}

async fn ping_is_answered_here_and_not_stored(shape: Shape) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    for state in ["ON", "OFF"] {
        let (status, json) = exchange(
            &r,
            shape,
            &signed_request("ping", "d-ping", &fixture("ping.json"), Some(state)),
        )
        .await;
        assert_eq!((status, json["status"].as_str()), (200, Some("pong")));
    }
    assert_eq!(target.attempts(), 0);
    for q in [
        stack.get(Resource::BufferUrl),
        stack.get(Resource::DlqUrl),
        stack.get(Resource::EvalUrl),
    ] {
        assert!(peek_all(&sdk, q).await.is_empty());
    }
}

async fn form_and_base64_bodies_round_trip(shape: Shape) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    for (file, state) in [
        ("push-form.json", "ON"),
        ("push-base64.json", "ON"),
        ("push-form.json", "OFF"),
        ("push-base64.json", "OFF"),
    ] {
        let mut req = event_file(file);
        req.stage_variables
            .insert("spigot_state".into(), state.into());
        // A fresh delivery id each time (the FIFO buffer collapses repeats).
        let d = format!("{file}-{state}");
        req.headers.insert("x-github-delivery", d.parse().unwrap());
        let (status, json) = exchange(&r, shape, &req).await;
        assert_eq!(
            status,
            if state == "ON" { 200 } else { 202 },
            "{file} {state}: {json}"
        );
    }
    let sent = |file: &str| -> Vec<u8> {
        let req = event_file(file);
        if req.is_base64_encoded {
            base64::engine::general_purpose::STANDARD
                .decode(req.body.unwrap())
                .unwrap()
        } else {
            req.body.unwrap().into_bytes()
        }
    };
    let got = target.accepted();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, sent("push-form.json"));
    assert_eq!(
        got[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(got[1].body, sent("push-base64.json"));
    let mut buffered: Vec<(String, Vec<u8>)> = peek_all(&sdk, stack.get(Resource::BufferUrl))
        .await
        .iter()
        .map(|(b, _)| {
            let e = Envelope::decode(b).unwrap();
            (e.delivery.clone(), decode_bytes(&e))
        })
        .collect();
    buffered.sort();
    assert_eq!(buffered[0].1, sent("push-base64.json"));
    assert_eq!(buffered[1].1, sent("push-form.json"));
    // The form body's repository was read from its payload= field.
    let env = Envelope::decode(&peek_all(&sdk, stack.get(Resource::EvalUrl)).await[0].0).unwrap();
    assert_eq!(env.repository.as_deref(), Some("Codertocat/Hello-World"));
}

async fn missing_headers_and_unreadable_bodies_are_400(shape: Shape) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let body = fixture("push.json");
    for header in ["x-github-event", "x-github-delivery"] {
        let mut req = signed_request("push", "d-400", &body, Some("ON"));
        req.headers.remove(header);
        let (status, json) = exchange(&r, shape, &req).await;
        assert_eq!(status, 400);
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(header),
            "{json}"
        );
    }
    let mut req = signed_request("push", "d-b64", &body, Some("ON"));
    req.is_base64_encoded = true;
    req.body = Some("%%% not base64".into());
    assert_eq!(exchange(&r, shape, &req).await.0, 400);
    let junk = b"this is not json";
    let (status, json) = exchange(
        &r,
        shape,
        &signed_request("push", "d-junk", junk, Some("ON")),
    )
    .await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(target.attempts(), 0);
    assert!(
        peek_all(&sdk, stack.get(Resource::BufferUrl))
            .await
            .is_empty()
    );
}

async fn unknown_or_missing_state_buffers(shape: Shape) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let body = fixture("push.json");
    let (s1, _) = exchange(
        &r,
        shape,
        &signed_request("push", "d-maybe", &body, Some("MAYBE")),
    )
    .await;
    let (s2, _) = exchange(&r, shape, &signed_request("push", "d-none", &body, None)).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(target.attempts(), 0);
    assert_eq!(
        peek_all(&sdk, stack.get(Resource::BufferUrl)).await.len(),
        2
    );
}

async fn sample_events_verify_with_the_documented_secret(shape: Shape) {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    for (file, want) in [
        ("push.json", 200),
        ("ping.json", 200),
        ("push-form.json", 200),
        ("push-base64.json", 200),
        ("push-bad-signature.json", 401),
    ] {
        let (status, json) = exchange(&r, shape, &event_file(file)).await;
        assert_eq!(status, want, "{file}: {json}");
    }
}

/// Every case above runs on both event shapes: REST (payload 1.0) and HTTP API (payload 2.0).
macro_rules! on_both_shapes {
    ($($case:ident),* $(,)?) => {
        mod rest {
            $(#[tokio::test]
            async fn $case() {
                super::$case(spigot_e2e::Shape::V1).await
            })*
        }
        mod http_api {
            $(#[tokio::test]
            async fn $case() {
                super::$case(spigot_e2e::Shape::V2).await
            })*
        }
    };
}

on_both_shapes!(
    on_forwards_the_exact_bytes_and_github_headers,
    off_buffers_and_nothing_reaches_the_target,
    retryable_failures_buffer_with_202,
    permanent_failure_dead_letters_with_the_reason_and_202,
    bad_signature_is_401_and_nothing_is_stored,
    ping_is_answered_here_and_not_stored,
    form_and_base64_bodies_round_trip,
    missing_headers_and_unreadable_bodies_are_400,
    unknown_or_missing_state_buffers,
    sample_events_verify_with_the_documented_secret,
);

/// With DEDUPE_WINDOW a delivery id the receiver took is answered 200
/// and not forwarded again within the window (under the receiver's role, IAM
/// enforced); after the window it is taken again; another delivery id of the
/// same body is taken (the id decides, as the README says). Control: with the
/// window off (the default) the same delivery is forwarded twice. A hook the
/// receiver could not keep leaves no mark, so GitHub's retry is taken.
#[tokio::test]
async fn dedupe_window_answers_a_delivery_taken_before_and_forwards_nothing() {
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let build = async |window: u64| {
        let mut settings = stack.settings();
        settings.target_url = Some(format!("{}/", target.url));
        settings.webhook_secret = Some(SECRET.to_string().into());
        settings.dedupe_window = window;
        let role = as_principal(&sdk, &stack, Principal::Receiver).await;
        let mut r = spigot_receiver::build(&role, &settings).await.unwrap();
        r.metrics = std::sync::Arc::new(spigot_core::ports::QuietMetrics);
        r
    };
    let body = fixture("push.json");
    let send = async |r: &RealReceiver, delivery: &str, now_ms: u64| {
        answer(
            &r.handle_event(&signed_request("push", delivery, &body, Some("ON")), now_ms)
                .await,
        )
    };
    let now = spigot_aws::now_ms();
    let r = build(60).await;
    let (status, first) = send(&r, "dd-1", now).await;
    assert_eq!((status, first["status"].as_str()), (200, Some("delivered")));
    let (status, again) = send(&r, "dd-1", now + 5_000).await;
    assert_eq!(
        (status, again["status"].as_str()),
        (200, Some("duplicate")),
        "{again}"
    );
    assert_eq!(
        target.accepted().len(),
        1,
        "the duplicate was not forwarded"
    );
    let (_, other) = send(&r, "dd-2", now + 5_000).await;
    assert_eq!(other["status"], "delivered", "another delivery id is taken");
    let (_, later) = send(&r, "dd-1", now + 61_000).await;
    assert_eq!(
        later["status"], "delivered",
        "after the window it is taken again"
    );
    assert_eq!(target.accepted().len(), 3);
    // Off (the default): the same delivery twice is forwarded twice.
    let off = build(0).await;
    send(&off, "dd-3", now).await;
    send(&off, "dd-3", now + 1_000).await;
    assert_eq!(target.accepted().len(), 5);
    // A hook that could not be kept (buffer gone, target down) leaves no mark.
    target.set_status(503);
    let mut settings = stack.settings();
    settings.target_url = Some(format!("{}/", target.url));
    settings.webhook_secret = Some(SECRET.to_string().into());
    settings.dedupe_window = 60;
    settings.resources.set(
        Resource::BufferUrl,
        "http://127.0.0.1:9/000000000000/gone.fifo",
    );
    let role = as_principal(&sdk, &stack, Principal::Receiver).await;
    let mut broken = spigot_receiver::build(&role, &settings).await.unwrap();
    broken.metrics = std::sync::Arc::new(spigot_core::ports::QuietMetrics);
    let (status, _) = answer(
        &broken
            .handle_event(&signed_request("push", "dd-4", &body, Some("ON")), now)
            .await,
    );
    assert_eq!(status, 503);
    target.set_status(200);
    let (_, retried) = send(&r, "dd-4", now + 2_000).await;
    assert_eq!(
        retried["status"], "delivered",
        "GitHub's retry is taken: {retried}"
    );
    // Ledger: 7 requests in; forwarded 5 + the retry 1 = 6; duplicates answered 1; refused 503 1 (retried); lost 0.
    assert_eq!(target.accepted().len(), 6);
}

/// The webhook secret read from Secrets Manager is read again every
/// SECRETS_CACHE_SECONDS (under the receiver's role, IAM enforced): after a
/// rotation the old secret still verifies within the cache time and is
/// refused after it, when the new one verifies.
#[tokio::test]
async fn a_revoked_webhook_secret_stops_verifying_within_secrets_cache_seconds() {
    const OLD: &str = "the-old-webhook-secret-0001";
    const NEW: &str = "the-new-webhook-secret-0002";
    let (sdk, stack) = stack().await;
    let target = FakeTarget::start().await;
    let sm = spigot_aws::aws_sdk_secretsmanager::Client::new(&sdk);
    let created = sm
        .create_secret()
        .name(unique("webhook-secret"))
        .secret_string(OLD)
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap().to_string();
    // The receiver's role as the template gives it, its secret the one just made.
    let docs = Policies::new(translated(), &stack)
        .with_ref("WebhookSecretValue", &arn)
        .documents("ReceiverFunctionRole");
    let (id, key) = spigot_e2e::iam::iam_user(&unique("receiver-"), &docs).await;
    let role = spigot_e2e::iam::with_keys(&sdk, &id, &key);
    let mut settings = stack.settings();
    settings.target_url = Some(format!("{}/", target.url));
    settings.webhook_secret = None;
    settings.webhook_secret_arn = Some(arn.clone());
    settings.secrets_cache_seconds = 60;
    let mut r = spigot_receiver::build(&role, &settings).await.unwrap();
    r.metrics = std::sync::Arc::new(spigot_core::ports::QuietMetrics);
    let body = fixture("push.json");
    let signed = |secret: &str, delivery: &str| {
        let mut req = signed_request("push", delivery, &body, Some("ON"));
        req.headers.insert(
            "X-Hub-Signature-256",
            spigot_core::signature::sign_sha256(secret.as_bytes(), &body)
                .parse()
                .unwrap(),
        );
        req
    };
    let now = spigot_aws::now_ms();
    let status = async |secret: &str, delivery: &str, at: u64| {
        answer(&r.handle_event(&signed(secret, delivery), at).await).0
    };
    assert_eq!(status(OLD, "rs-1", now).await, 200);
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(NEW)
        .send()
        .await
        .unwrap();
    assert_eq!(
        status(OLD, "rs-2", now + 30_000).await,
        200,
        "within the cache time"
    );
    assert_eq!(
        status(OLD, "rs-3", now + 61_000).await,
        401,
        "revoked after it"
    );
    assert_eq!(
        status(NEW, "rs-4", now + 61_500).await,
        200,
        "the new secret verifies"
    );
    assert_eq!(target.accepted().len(), 3);
}

/// A secret shorter than 20 characters, or a trigger secret that is
/// also a webhook secret, stops the receiver at start, saying which.
#[tokio::test]
async fn short_secrets_and_a_trigger_secret_shared_with_webhooks_are_refused_at_start() {
    let (sdk, stack) = stack().await;
    let mut settings = stack.settings();
    settings.target_url = Some("https://ci.example.com/github-webhook/".into());
    settings.webhook_secret = Some("too-short-secret".into());
    let err = spigot_receiver::build(&sdk, &settings)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("WEBHOOK_SECRET") && err.contains("at least 20"),
        "{err}"
    );
    settings.webhook_secret = Some(SECRET.into());
    settings.trigger_secret = Some(format!("another-secret-for-triggers,{SECRET}").into());
    let err = spigot_receiver::trigger::build(&sdk, &settings)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("TRIGGER_SECRET") && err.contains("webhook secret"),
        "{err}"
    );
    // Controls: a long webhook secret, and a trigger secret of its own, start.
    assert!(spigot_receiver::build(&sdk, &settings).await.is_ok());
    settings.trigger_secret = Some("another-secret-for-triggers".into());
    assert!(
        spigot_receiver::trigger::build(&sdk, &settings)
            .await
            .is_ok()
    );
}
