//! Pull deployments, the raising side: `spigot trigger`, POST /trigger,
//! pushes through a filter's trigger.

use crate::prelude::*;

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_raisers_get_twenty_distinct_numbers() {
    let (_dev, dir, bucket) = dev_stack().await;
    let children: Vec<_> = (0..20)
        .map(|i| {
            spigot_as(&dir, Principal::Raiser)
                .args([
                    "trigger",
                    "--local",
                    "web",
                    "--json",
                    "--by",
                    &format!("raiser-{i}"),
                ])
                .args(["--data", &format!("N={i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut sequences = Vec::new();
    let mut raisers = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{:?}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        sequences.push(v["sequence"].as_u64().unwrap());
        raisers.push(v["data"]["N"].as_str().unwrap().to_string());
    }
    sequences.sort();
    assert_eq!(sequences, (1..=20).collect::<Vec<_>>());
    // None lost: twenty request objects, each raiser's data in one of them.
    let requests = keys(&dir, &bucket, "triggers/web/requests/").await;
    assert_eq!(requests.len(), 20);
    let mut stored = Vec::new();
    for key in &requests {
        let r: spigot_core::trigger::Request = get_json(&dir, &bucket, key).await.unwrap();
        stored.push(r.data["N"].clone());
    }
    stored.sort();
    raisers.sort();
    assert_eq!(stored, raisers);
    let head: spigot_core::trigger::Head = get_json(&dir, &bucket, "triggers/web/head.json")
        .await
        .unwrap();
    assert_eq!(head.sequence, 20);
}

/// Signs `body` as a CI pipeline would for `POST /trigger/{name}`.
/// POSTs `body` to `url` (…/trigger/web) with `header` as X-Spigot-Signature.
async fn post_signed(url: &str, body: &str, header: Option<String>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json");
    if let Some(h) = header {
        req = req.header("X-Spigot-Signature", h);
    }
    let resp = req.body(body.to_string()).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// The X-Spigot-Signature of `body` for trigger `name`, signed now with `secret` and `nonce`.
fn stamp(secret: &str, name: &str, nonce: &str, body: &str) -> Option<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Some(spigot_core::trigger::sign(
        secret.as_bytes(),
        name,
        now,
        nonce,
        body.as_bytes(),
    ))
}

async fn post_trigger(url: &str, body: &str, secret: &str) -> (u16, serde_json::Value) {
    let nonce = spigot_e2e::unique("nonce-0000000000");
    post_signed(url, body, stamp(secret, "web", &nonce, body)).await
}

/// POST /trigger signs the method, path, time, a nonce and the body;
/// a captured request is taken once and its replay refused; `spigot trigger
/// --url --secret` raises through it.
#[tokio::test(flavor = "multi_thread")]
async fn post_trigger_needs_the_trigger_secret_and_the_agent_runs_what_it_raised() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, webhook) = start_dev(&dir, &target.url);
    let bucket = spigot_cli_dev_file(&dir).get(Resource::Bucket).to_string();
    let url = webhook.replace("/webhook", "/trigger/web");
    let body = r#"{"data": {"VERSION": "2.0.1"}, "by": "github-actions"}"#;
    let secret = "spigot-test-trigger-secret";
    // Wrong secret (the webhook's), no signature, a body signed the old way,
    // a tampered body, another trigger's signature: 401, nothing raised.
    let (status, answer) = post_trigger(&url, body, SECRET).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"], "the trigger signature does not match");
    assert_eq!(post_signed(&url, body, None).await.0, 401);
    let github_style = reqwest::Client::new()
        .post(&url)
        .header(
            "X-Hub-Signature-256",
            spigot_core::signature::sign_sha256(secret.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(github_style.status().as_u16(), 401);
    let header = stamp(secret, "web", "nonce-tampered-0001", body);
    let tampered = body.replace("2.0.1", "6.6.6");
    assert_eq!(post_signed(&url, &tampered, header).await.0, 401);
    let for_prod = stamp(secret, "prod", "nonce-for-prod-0001", body);
    assert_eq!(post_signed(&url, body, for_prod).await.0, 401);
    assert!(
        keys(&dir, &bucket, "triggers/").await.is_empty(),
        "nothing raised"
    );
    // Signed with the trigger secret: 202 and the sequence.
    let captured = stamp(secret, "web", "nonce-captured-0001", body);
    let (status, answer) = post_signed(&url, body, captured.clone()).await;
    assert_eq!(
        (status, answer["sequence"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    assert_eq!(answer["trigger"], "web");
    // The same request captured and sent again: refused, nothing raised.
    let (status, answer) = post_signed(&url, body, captured).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(keys(&dir, &bucket, "triggers/web/requests/").await.len(), 1);
    // Bad data is a 400 with a sentence, and raises nothing.
    let (status, answer) = post_trigger(
        &url,
        r#"{"data": {"NOT-A-NAME": "x"}}"#,
        "spigot-test-trigger-secret",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not an environment variable name")
    );
    // `spigot trigger --url --secret`: what CI without AWS credentials runs.
    let out = spigot(&dir)
        .args(["trigger", "web", "--data", "VERSION=2.0.2", "--by", "ci"])
        .args(["--url", &webhook.replace("/webhook", "/trigger")])
        .args(["--secret", secret])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).0.starts_with("raised web #2 (over "),
        "{:?}",
        text(&out)
    );
    let out = spigot(&dir)
        .args(["trigger", "web", "--data", "VERSION=2.0.3"])
        .args(["--url", &webhook.replace("/webhook", "/trigger")])
        .args(["--secret", "not-the-secret"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(text(&out).1.contains("answered 401"), "{:?}", text(&out));
    // The agent (new, so it starts at the newest request) runs what was raised over HTTPS.
    let out_file = dir.join("deployed.txt");
    let script = write_script(
        &dir,
        "deploy.yaml",
        &format!(
            "params: {{VERSION: '[0-9.]+'}}\nsteps:\n  - shell: echo \"$VERSION by $SPIGOT_BY\" >> {}\n",
            out_file.display()
        ),
    );
    let out = agent_once(&dir, "web", "host-a", &script, "state");
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "2.0.2 by ci\n");
    let r = receipt(&dir, &bucket, "web", 2, "host-a").await.unwrap();
    assert_eq!(r.status, Status::Done);
    assert_eq!(keys(&dir, &bucket, "triggers/web/requests/").await.len(), 2);
}

/// A push like GitHub's sample, to `branch`, its head commit `sha`.
fn push_to(branch: &str, sha: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&fixture("push.json")).unwrap();
    v["ref"] = serde_json::json!(format!("refs/heads/{branch}"));
    v["after"] = serde_json::json!(sha);
    serde_json::to_vec(&v).unwrap()
}

/// POSTs `body` to the local stack as GitHub would (signed with the test secret).
async fn post_hook(url: &str, delivery: &str, body: &[u8]) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            spigot_core::signature::sign_sha256(SECRET.as_bytes(), body),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A push of `branch` with head `sha`, pushed `ago` seconds before now.
fn push_now(branch: &str, sha: &str, ago: u64) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&push_to(branch, sha)).unwrap();
    v["repository"]["pushed_at"] = serde_json::json!(spigot_aws::now_ms() / 1000 - ago);
    serde_json::to_vec(&v).unwrap()
}

/// Pushes reach agents through a trigger that a pipeline filter names,
/// not through the buffer: every agent following it deploys the push (two
/// hosts, two runs), Jenkins still gets every hook, and nothing is
/// dead-lettered. The agent believes only bytes whose GitHub signature checks
/// out with its webhook secret: a request naming forged bytes runs nothing,
/// a redelivery of what it deployed is skipped, saying why.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_raises_its_filters_trigger_every_agent_deploys_it_and_jenkins_still_gets_it() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (_dev, url) = start_dev(&dir, &target.url);
    let bucket = spigot_cli_dev_file(&dir).get(Resource::Bucket).to_string();
    let filter = write_script(
        &dir,
        "filter.json",
        r#"{"Repository": "Codertocat/Hello-World", "Branch": "master", "Trigger": "web"}"#,
    );
    let put = spigot_as(&dir, Principal::Operator)
        .args(["filters", "put", "--local"])
        .arg(&filter)
        .output()
        .unwrap();
    assert!(put.status.success(), "{:?}", text(&put));
    let sha = |c: char| c.to_string().repeat(40);
    let deploy = push_now("master", &sha('a'), 30);
    assert_eq!(post_hook(&url, &unique("p-a-"), &deploy).await, 200);
    assert_eq!(
        post_hook(&url, &unique("p-b-"), &push_now("feature/x", &sha('b'), 20)).await,
        200
    );
    wait_until("the trigger raised", 30, async || {
        keys(&dir, &bucket, "triggers/web/requests/").await.len() == 1
    })
    .await;
    let runs_file = dir.join("runs.txt");
    let script = write_script(
        &dir,
        "deploy.yaml",
        &format!(
            "steps:\n  - shell: echo \"$SPIGOT_AGENT $SPIGOT_REPOSITORY $SPIGOT_BRANCH $SPIGOT_SHA\" >> {}\n",
            runs_file.display()
        ),
    );
    let secret = write_script(&dir, "webhook-secret", SECRET);
    let once = |id: &str, with_secret: bool| {
        let mut cmd = agent_once_cmd(&dir, "web", id, &script, &format!("state-{id}"));
        if with_secret {
            cmd.arg("--webhook-secret-file").arg(&secret);
        }
        cmd.output().unwrap()
    };
    // Without the secret an agent cannot check the push: it runs nothing, and says why.
    let blind = once("host-blind", false);
    assert!(!blind.status.success());
    let r = receipt(&dir, &bucket, "web", 1, "host-blind")
        .await
        .unwrap();
    assert_eq!(r.status, Status::Failed);
    assert!(r.note.unwrap().contains("--webhook-secret-file"));
    for id in ["host-a", "host-b"] {
        let out = once(id, true);
        assert!(out.status.success(), "{:?}", text(&out));
        let r = receipt(&dir, &bucket, "web", 1, id).await.unwrap();
        assert_eq!(r.status, Status::Done, "{r:?}");
    }
    assert_eq!(
        runs(&runs_file),
        [
            format!("host-a Codertocat/Hello-World master {}", sha('a')),
            format!("host-b Codertocat/Hello-World master {}", sha('a')),
        ]
    );
    // GitHub redelivers the deployed push (same bytes, new delivery id): raised, and skipped.
    assert_eq!(post_hook(&url, &unique("p-a-again-"), &deploy).await, 200);
    wait_until("the redelivery raised", 30, async || {
        keys(&dir, &bucket, "triggers/web/requests/").await.len() == 2
    })
    .await;
    // A request written straight into the bucket, naming bytes GitHub never signed.
    let s3 = s3(&dir).await;
    let forged = push_now("master", &sha('f'), 1);
    let forged_sha = spigot_core::envelope::sha256_hex(&forged);
    let request = serde_json::json!({
        "trigger": "web", "sequence": 3, "by": "evaluator", "raised_at": "", "raised_at_ms": 0,
        "push": {"delivery": "forged", "sha256": forged_sha, "signature": spigot_core::signature::sign_sha256(b"a guess", &forged)},
    });
    for (key, bytes) in [
        (
            spigot_core::trigger::Keys("web").body(&forged_sha),
            forged.clone(),
        ),
        (
            spigot_core::trigger::Keys("web").request(3),
            serde_json::to_vec(&request).unwrap(),
        ),
    ] {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .unwrap();
    }
    let out = once("host-a", true);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "the forged request failed: {stderr}");
    let again = receipt(&dir, &bucket, "web", 2, "host-a").await.unwrap();
    assert_eq!(again.status, Status::Skipped);
    assert!(again.note.unwrap().contains("already deployed"));
    let forged_receipt = receipt(&dir, &bucket, "web", 3, "host-a").await.unwrap();
    assert_eq!(forged_receipt.status, Status::Failed);
    assert!(forged_receipt.note.unwrap().contains("signature"));
    assert_eq!(runs(&runs_file).len(), 2, "nothing more ran");
    // Ledger: 3 hooks in; Jenkins got 3; 2 deploys (one push, two hosts);
    // 1 skipped (redelivery), 1 refused (forged), 1 refused (no secret); buffer and DLQ empty; 0 lost.
    wait_until("Jenkins got every hook", 30, async || {
        target.accepted().len() == 3
    })
    .await;
    let stack = spigot_cli_dev_file(&dir);
    let sdk = sdk().await;
    assert_eq!(depth(&sdk, stack.get(Resource::BufferUrl)).await, (0, 0));
    assert_eq!(depth(&sdk, stack.get(Resource::DlqUrl)).await, (0, 0));
}

/// `spigot trigger receipts NAME [--request N]` reads what the agents
/// said (the agent's failure points to it); a trigger never raised exits 1.
/// A trigger is still raised by name beside the subcommand.
#[tokio::test(flavor = "multi_thread")]
async fn trigger_receipts_reads_what_each_agent_said() {
    let (_dev, dir, _bucket) = dev_stack().await;
    let script = write_script(&dir, "fail.yaml", "steps:\n  - shell: exit 3\n");
    let raised = trigger(&dir, &["web"]);
    assert!(raised.status.success(), "{:?}", text(&raised));
    let run = agent_once(&dir, "web", "host-a", &script, "state");
    assert!(!run.status.success());
    assert!(
        text(&run).1.contains("see `spigot trigger receipts web`"),
        "{}",
        text(&run).1
    );
    let out = trigger(&dir, &["receipts", "web"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let stdout = text(&out).0;
    assert!(
        stdout.contains("web #1, raised")
            && stdout.contains("host-a: failed at step 1 (shell), exit code 3"),
        "{stdout}"
    );
    let json = trigger(&dir, &["receipts", "web", "--request", "1", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["agent"], "host-a");
    let never = trigger(&dir, &["receipts", "never-raised"]);
    assert_eq!(never.status.code(), Some(1));
    assert!(
        text(&never).1.contains("never raised"),
        "{}",
        text(&never).1
    );
}
