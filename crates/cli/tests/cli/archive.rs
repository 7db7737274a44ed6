//! The archive, the timeline, `spigot events` and `spigot replay` on the
//! local stack, IAM enforced: the receiver and the drainer under their roles
//! (their records go through moto's Firehose into the bucket), the commands
//! under OperatorPolicy.

use crate::prelude::*;

const ONE: &str = "octo-org/one";

const TWO: &str = "octo-org/two";

#[tokio::test(flavor = "multi_thread")]
async fn replay_sends_one_repositorys_hooks_again_byte_for_byte_and_events_tell_each_hooks_story() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let run = unique("a");
    let id = |name: &str| format!("{name}-{run}");
    // The target refuses one hook for good (400), and the buffered one once (503).
    let (dead, late) = (id("dead"), id("late"));
    let failed_once = Arc::new(AtomicBool::new(false));
    {
        let (dead, late, failed_once) = (dead.clone(), late.clone(), failed_once.clone());
        target.set_rule(move |req, _| {
            let delivery = header(req, "x-github-delivery").unwrap_or("");
            if delivery == dead {
                return Some(400);
            }
            (delivery == late && !failed_once.swap(true, Ordering::SeqCst)).then_some(503)
        });
    }
    let send = |delivery: String, repo: &str, state: &str| {
        let body = push_payload(repo, &delivery);
        let req = signed_request("push", &delivery, body.as_bytes(), Some(state));
        let r = &r;
        async move { answer(&r.handle_event(&req, spigot_aws::now_ms()).await) }
    };
    // Live: three of one, two of two; one of two refused by the target.
    let live: Vec<(String, &str)> = [ONE, TWO, ONE, TWO, ONE]
        .iter()
        .enumerate()
        .map(|(i, repo)| (id(&format!("live{i}")), *repo))
        .collect();
    for (delivery, repo) in &live {
        assert_eq!(send(delivery.clone(), repo, "ON").await.0, 200);
    }
    let (status, body) = send(dead.clone(), TWO, "ON").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("dead-lettered"))
    );
    // Buffered while OFF, then drained: refused once, delivered at the second attempt.
    let (status, _) = send(late.clone(), ONE, "OFF").await;
    assert_eq!(status, 202);
    let d = drainer(&sdk, &stack, &target.url, 2).await;
    let first = d.drain(None).await;
    assert_eq!((first.delivered, first.retried), (0, 1), "{first:?}");
    assert_eq!(first.answers, [0, 0, 1, 0], "one 5xx: {first:?}");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let second = d.drain(None).await;
    assert_eq!(second.delivered, 1, "{second:?}");
    let originals: Vec<Recorded> = target
        .accepted()
        .into_iter()
        .filter(|a| header(a, "x-spigot-replay").is_none())
        .collect();
    assert_eq!(originals.len(), 6, "5 live and the buffered one");

    // What happened to each, from the archive.
    let forwarded = events(&dir, &["--delivery", &live[0].0]);
    assert_eq!(steps(&forwarded), ["received", "forwarded"], "{forwarded}");
    assert_eq!(forwarded[1]["status"], 200);
    assert_eq!(forwarded[0]["repository"], ONE);
    let buffered = events(&dir, &["--delivery", &late]);
    assert_eq!(
        steps(&buffered),
        ["received", "buffered", "attempt", "delivered"],
        "{buffered}"
    );
    assert!(
        buffered[1]["why"].as_str().unwrap().contains("OFF"),
        "{buffered}"
    );
    assert_eq!(
        (
            buffered[2]["status"].as_u64(),
            buffered[3]["status"].as_u64()
        ),
        (Some(503), Some(200))
    );
    let lettered = events(&dir, &["--delivery", &dead]);
    assert_eq!(
        steps(&lettered),
        ["received", "dead-lettered"],
        "{lettered}"
    );
    assert!(
        lettered[1]["reason"].as_str().unwrap().contains("400"),
        "{lettered}"
    );
    let rows = events(&dir, &["--repo", ONE]);
    let listed: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["delivery"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [late.as_str(), &live[4].0, &live[2].0, &live[0].0],
        "newest first, one only"
    );
    assert_eq!(rows[0]["outcome"], "delivered");
    assert_eq!(rows[0]["attempts"], 2);
    // The dead letter redriven: on its timeline, and refused again at the next drain.
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "redrive", "--local", "--delivery", &dead])
        .output()
        .unwrap();
    succeeded(&out);

    // Jenkins lost repository one's hooks: replay them, and only them.
    let eval_url = stack.get(spigot_core::resources::Resource::EvalUrl);
    let evaluations = depth(&sdk, eval_url).await.0;
    assert_eq!(
        evaluations, 7,
        "the receiver queued every push for evaluation"
    );
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "replay", "--local", "--repo", ONE, "--since", "10m", "--json",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["replayed"], 4, "{summary}");
    // Nothing reaches the target before a drain: replays go through the buffer.
    assert_eq!(target.accepted().len(), 6);
    let third = d.drain(None).await;
    assert_eq!((third.delivered, third.dead_lettered), (4, 1), "{third:?}");
    assert_eq!(
        (third.replays, third.answers),
        (4, [4, 1, 0, 0]),
        "the dashboard's replays and status classes"
    );
    let lettered = events(&dir, &["--delivery", &dead]);
    assert_eq!(
        steps(&lettered),
        [
            "received",
            "dead-lettered",
            "redriven",
            "attempt",
            "dead-lettered"
        ],
        "{lettered}"
    );
    assert_eq!(second.replays, 0, "the original is no replay");
    let replays: Vec<Recorded> = target
        .accepted()
        .into_iter()
        .filter(|a| header(a, "x-spigot-replay").is_some())
        .collect();
    let order: Vec<&str> = replays
        .iter()
        .map(|a| header(a, "x-github-delivery").unwrap())
        .collect();
    assert_eq!(
        order,
        [&live[0].0, &live[2].0, &live[4].0, &late],
        "in their order"
    );
    for replay in &replays {
        let delivery = header(replay, "x-github-delivery").unwrap();
        assert_eq!(header(replay, "x-spigot-replay"), Some(delivery));
        let original = originals
            .iter()
            .find(|o| header(o, "x-github-delivery") == Some(delivery))
            .unwrap();
        assert_eq!(replay.body, original.body, "byte for byte: {delivery}");
        assert_eq!(
            header(replay, "x-hub-signature-256"),
            header(original, "x-hub-signature-256")
        );
    }
    assert_eq!(
        depth(&sdk, eval_url).await.0,
        evaluations,
        "a replay starts no pipeline again"
    );
    // ... unless asked: --pipelines queues the replayed push for evaluation too.
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "replay",
            "--local",
            "--repo",
            ONE,
            "--since",
            "10m",
            "--pipelines",
        ])
        .args(["--delivery", &live[0].0])
        .output()
        .unwrap();
    succeeded(&out);
    assert_eq!(depth(&sdk, eval_url).await.0, evaluations + 1);
    assert_eq!(d.drain(None).await.delivered, 1);
    // The replay is on each hook's timeline, followed by its delivery.
    let replayed = events(&dir, &["--delivery", &live[0].0]);
    assert_eq!(
        steps(&replayed),
        [
            "received",
            "forwarded",
            "replayed",
            "delivered",
            "replayed",
            "delivered"
        ],
        "{replayed}"
    );

    // Ledger: 7 hooks in; 6 delivered and 1 dead-lettered (the 400, with its
    // reason; redriven once and dead-lettered again); 5 replays of one (4,
    // then 1 with --pipelines), none of two; no other duplicate; none lost.
    let all = target.accepted();
    let of = |repo: &str, replay: bool| {
        all.iter()
            .filter(|a| header(a, "x-spigot-replay").is_some() == replay)
            .filter(|a| String::from_utf8_lossy(&a.body).contains(repo))
            .count()
    };
    assert_eq!((of(ONE, false), of(TWO, false)), (4, 2));
    assert_eq!(
        (of(ONE, true), of(TWO, true)),
        (5, 0),
        "4, then 1 with --pipelines"
    );
    let out = spigot_as(&dir, Principal::Operator)
        .args(["dlq", "list", "--local", "--json"])
        .output()
        .unwrap();
    let letters: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");
    assert_eq!(letters[0]["delivery"], dead.as_str());
}

/// The brief's "an S3 object another principal can write is
/// untrusted": a hook written into the archive by someone else (its GitHub
/// signature does not verify) is not replayed, and the replay says so and
/// exits 1; the genuine hook beside it is replayed (the control).
#[tokio::test(flavor = "multi_thread")]
async fn a_hook_spigot_never_verified_is_not_replayed() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack) = local_stack(&dir, Some(&target.url)).await;
    let r = receiver(&sdk, &stack, &target.url, 2000).await;
    let genuine = unique("genuine");
    let body = push_payload(ONE, &genuine);
    let req = signed_request("push", &genuine, body.as_bytes(), Some("ON"));
    assert_eq!(
        answer(&r.handle_event(&req, spigot_aws::now_ms()).await).0,
        200
    );
    // A forged hook, framed as Spigot frames them, written straight into the archive.
    let forged = unique("forged");
    let now = spigot_aws::now_ms();
    let hook = spigot_core::Hook {
        delivery: forged.clone(),
        event: "push".into(),
        repository: Some(ONE.into()),
        headers: vec![
            ("x-github-delivery".into(), forged.clone()),
            ("x-github-event".into(), "push".into()),
            (
                "x-hub-signature-256".into(),
                format!("sha256={}", "0".repeat(64)),
            ),
        ],
        body: push_payload(ONE, "deploy-my-branch").into_bytes(),
        received_at_ms: now + 1,
        json_body: true,
    };
    let step = spigot_core::archive::Step::of(
        now + 1,
        &forged,
        ONE,
        "push",
        spigot_core::archive::What::Received { bytes: 1 },
    );
    let record = spigot_core::archive::hook_record(&hook, &[step]);
    let hour = &spigot_core::archive::hour_prefixes(now, now)[1];
    let s3 = spigot_aws::s3_client(&sdk);
    let bucket = stack.get(spigot_core::resources::Resource::Bucket);
    s3.put_object()
        .bucket(bucket)
        .key(format!("{hour}forged"))
        .body(record.into())
        .send()
        .await
        .unwrap();
    let out = spigot_as(&dir, Principal::Operator)
        .args([
            "replay",
            "--local",
            "--repo",
            ONE,
            "--since",
            "10m",
            "--to",
            &target.url,
            "--allow-http",
            "--json",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["replayed"], 1, "the genuine hook: {summary}");
    assert_eq!(summary["failed"][0]["delivery"], forged.as_str());
    assert!(
        summary["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("signature does not verify"),
        "{summary}"
    );
    let replays: Vec<String> = target
        .accepted()
        .iter()
        .filter(|a| a.header("x-spigot-replay").is_some())
        .map(|a| a.header("x-github-delivery").unwrap().to_string())
        .collect();
    assert_eq!(
        replays,
        [genuine],
        "the forged hook never reached the target"
    );
}
