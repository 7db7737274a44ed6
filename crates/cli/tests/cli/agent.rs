//! Pull deployments, the agent's side: `spigot agent` runs what a trigger
//! asks, with receipts.

use crate::prelude::*;

fn agent_log(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(dir.join(format!("agent-{id}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_wait_sees_an_agent_run_a_two_step_script_to_done() {
    let (_dev, dir, bucket) = dev_stack().await;
    let artifact = b"the release artifact\n".repeat(1000);
    s3(&dir)
        .await
        .put_object()
        .bucket(&bucket)
        .key("artifacts/app-1.4.2.tgz")
        .body(artifact.clone().into())
        .send()
        .await
        .unwrap();
    let out_dir = dir.join("out");
    let script = write_script(
        &dir,
        "deploy.yaml",
        &format!(
            "params: {{VERSION: '[0-9]+(\\.[0-9]+)*', REGION: '[a-z0-9-]+'}}\nrecord_output: true\nsteps:\n  - shell: |\n      echo \"deploying $VERSION for $SPIGOT_BY\"\n      mkdir -p {o}\n      printf '%s %s %s' \"$VERSION\" \"$REGION\" \"$SPIGOT_SEQUENCE\" > {o}/version.txt\n  - download_s3: {{url: s3://{bucket}/artifacts/app-1.4.2.tgz, dest: {o}/app.tgz}}\n",
            o = out_dir.display()
        ),
    );
    let metrics_port = free_port();
    let _agent = agent(
        &dir,
        "web",
        "host-a",
        &script,
        &["--metrics-listen", &format!("127.0.0.1:{metrics_port}")],
    );
    wait_until("the agent to report", 30, async || {
        !keys(&dir, &bucket, "triggers/web/agents/host-a")
            .await
            .is_empty()
    })
    .await;
    let out = trigger(
        &dir,
        &[
            "web",
            "--data",
            "VERSION=1.4.2",
            "--data",
            "REGION=eu-west-1",
            "--by",
            "ci-pipeline",
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n{}",
        agent_log(&dir, "host-a")
    );
    assert!(
        stdout.starts_with("raised web #1 (by ci-pipeline)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("waiting for 1 agent (host-a)"), "{stdout}");
    assert!(stdout.contains("host-a: pending\n"), "{stdout}");
    assert!(stdout.contains("host-a: done in "), "{stdout}");
    assert!(stdout.contains("(2 steps)"), "{stdout}");
    assert!(
        stdout.ends_with("1 of 1 agent done, 0 failed\n"),
        "{stdout}"
    );
    // What the steps did.
    assert_eq!(
        std::fs::read_to_string(out_dir.join("version.txt")).unwrap(),
        "1.4.2 eu-west-1 1"
    );
    assert_eq!(std::fs::read(out_dir.join("app.tgz")).unwrap(), artifact);
    // The receipt.
    let r = receipt(&dir, &bucket, "web", 1, "host-a").await.unwrap();
    assert_eq!((r.status, r.attempt, r.steps.len()), (Status::Done, 1, 2));
    assert_eq!(r.steps[0].kind, "shell");
    assert_eq!(r.steps[0].exit_code, Some(0));
    assert_eq!(r.steps[1].kind, "download_s3");
    assert!(r.steps.iter().all(|s| s.status == Status::Done));
    let total = r.duration_ms.unwrap();
    assert!(total >= r.steps.iter().map(|s| s.duration_ms).sum::<u64>());
    assert!(r.finished_at.is_some());
    assert_eq!(r.script.path, script.display().to_string());
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&script).unwrap()))
    };
    assert_eq!(r.script.sha256, hash);
    assert!(
        r.output_tail.iter().any(|l| l.contains("app.tgz")),
        "{:?}",
        r.output_tail
    );
    // The agent's metrics.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "spigot_agent_requests_handled_total 1\n",
        "spigot_agent_requests_failed_total 0\n",
        "spigot_agent_sequence 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let success: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spigot_agent_last_success_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(success > 1.7e9, "{success}");
    assert!(metrics.contains("spigot_agent_last_duration_seconds "));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_fails_the_wait_with_its_step_exit_code_and_output() {
    let (_dev, dir, bucket) = dev_stack().await;
    let script = write_script(
        &dir,
        "deploy.yaml",
        "record_output: true\nsteps:\n  - shell: echo preparing\n  - shell: |\n      echo \"migrating database\"\n      echo \"connecting with DB_PASSWORD=hunter2\"\n      echo \"error: relation users is locked\" >&2\n      exit 3\n      echo never\n  - shell: echo never reached\n",
    );
    let _agent = agent(&dir, "api", "host-a", &script, &[]);
    wait_until("the agent to report", 30, async || {
        !keys(&dir, &bucket, "triggers/api/agents/").await.is_empty()
    })
    .await;
    let out = trigger(&dir, &["api", "--wait", "--timeout", "60s"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("host-a: failed at step 2 (shell), exit code 3, after "),
        "{stdout}"
    );
    assert!(stdout.contains("  | migrating database\n"), "{stdout}");
    assert!(
        stdout.contains("  | error: relation users is locked\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("never"), "{stdout}");
    // Kept because the script asks, with the secret redacted.
    assert!(
        stdout.contains("  | connecting with DB_PASSWORD=***\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(
        stderr.contains("trigger api #1: 1 agent of 1 failed"),
        "{stderr}"
    );
    let r = receipt(&dir, &bucket, "api", 1, "host-a").await.unwrap();
    assert_eq!(r.status, Status::Failed);
    assert_eq!(r.steps.len(), 2, "step 3 is not run");
    let failed = r.failed_step.unwrap();
    assert_eq!((failed.index, failed.exit_code), (2, Some(3)));
    // The JSON form says the same.
    let out = trigger(&dir, &["api", "--wait", "--timeout", "60s", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sequence"], 2);
    assert_eq!(v["done"], false);
    assert_eq!(v["agents"][0]["status"], "failed");
    assert_eq!(v["agents"][0]["failed_step"]["exit_code"], 3);
}

/// A script that appends "SEQUENCE WHAT" to a log for each request
/// (WHAT: lower-case letters); the log and the script.
fn what_logger(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("runs.txt");
    let script = write_script(
        dir,
        "deploy.yaml",
        &format!(
            "params: {{WHAT: '[a-z]+'}}\nsteps:\n  - shell: echo \"$SPIGOT_SEQUENCE $WHAT\" >> {}\n",
            log.display()
        ),
    );
    (log, script)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_wait_for_a_stopped_agent_and_run_exactly_once_in_order() {
    let (_dev, dir, bucket) = dev_stack().await;
    let (log, script) = what_logger(&dir);
    // Raised while no agent runs: it waits.
    let out = trigger(&dir, &["web", "--data", "WHAT=first"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).0.starts_with("raised web #1 (by "),
        "{:?}",
        text(&out)
    );
    assert!(runs(&log).is_empty());
    // An agent started later runs it, once.
    let once = |id: &str| {
        let out = agent_once(&dir, "web", id, &script, "state");
        assert!(out.status.success(), "{:?}", text(&out));
    };
    once("host-a");
    assert_eq!(runs(&log), ["1 first"]);
    once("host-a");
    assert_eq!(
        runs(&log),
        ["1 first"],
        "a restart does not repeat a request"
    );
    // Two more while it is down: both run, in order, once each.
    for what in ["second", "third"] {
        assert!(
            trigger(&dir, &["web", "--data", &format!("WHAT={what}")])
                .status
                .success()
        );
    }
    once("host-a");
    once("host-a");
    assert_eq!(runs(&log), ["1 first", "2 second", "3 third"]);
    for seq in 1..=3 {
        let r = receipt(&dir, &bucket, "web", seq, "host-a").await.unwrap();
        assert_eq!((r.status, r.attempt), (Status::Done, 1), "#{seq}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_mid_script_runs_the_request_again_and_says_so() {
    let (_dev, dir, bucket) = dev_stack().await;
    let log = dir.join("runs.txt");
    let started = dir.join("started");
    let script = write_script(
        &dir,
        "deploy.yaml",
        &format!(
            "steps:\n  - shell: |\n      echo \"start $SPIGOT_SEQUENCE $SPIGOT_ATTEMPT\" >> {log}\n      if [ \"$SPIGOT_ATTEMPT\" = 1 ]; then touch {started}; sleep 30; exit 9; fi\n      echo \"end $SPIGOT_SEQUENCE $SPIGOT_ATTEMPT\" >> {log}\n",
            log = log.display(),
            started = started.display()
        ),
    );
    let mut first = agent(&dir, "web", "host-a", &script, &[]);
    wait_until("the agent to report", 30, async || {
        !keys(&dir, &bucket, "triggers/web/agents/").await.is_empty()
    })
    .await;
    assert!(trigger(&dir, &["web"]).status.success());
    wait_until("the script to start", 30, async || started.exists()).await;
    let during = receipt(&dir, &bucket, "web", 1, "host-a").await.unwrap();
    assert_eq!((during.status, during.attempt), (Status::InProgress, 1));
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    // Restarted: the cut-short run is run again, and the receipt says why.
    let out = agent_once(&dir, "web", "host-a", &script, "state-host-a");
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("attempt 1 was interrupted"), "{stderr}");
    let r = receipt(&dir, &bucket, "web", 1, "host-a").await.unwrap();
    assert_eq!((r.status, r.attempt), (Status::Done, 2));
    assert!(
        r.note
            .as_deref()
            .unwrap_or("")
            .contains("attempt 1 was interrupted (the agent stopped mid-script"),
        "{:?}",
        r.note
    );
    assert_eq!(runs(&log), ["start 1 1", "start 1 2", "end 1 2"]);
    // And it is not run a third time.
    let again = agent_once(&dir, "web", "host-a", &script, "state-host-a");
    assert!(again.status.success());
    assert_eq!(runs(&log).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_agents_on_one_trigger_both_run_and_both_receipts_are_shown() {
    let (_dev, dir, bucket) = dev_stack().await;
    let script = write_script(
        &dir,
        "deploy.yaml",
        &format!(
            "steps:\n  - shell: echo \"$SPIGOT_AGENT\" >> {}\n",
            dir.join("runs.txt").display()
        ),
    );
    let _a = agent(&dir, "web", "host-a", &script, &[]);
    let _b = agent(&dir, "web", "host-b", &script, &[]);
    wait_until("both agents to report", 30, async || {
        keys(&dir, &bucket, "triggers/web/agents/").await.len() == 2
    })
    .await;
    let out = trigger(&dir, &["web", "--wait", "--timeout", "60s"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("waiting for 2 agents (host-a, host-b)"),
        "{stdout}"
    );
    assert!(stdout.contains("host-a: done in "), "{stdout}");
    assert!(stdout.contains("host-b: done in "), "{stdout}");
    assert!(
        stdout.ends_with("2 of 2 agents done, 0 failed\n"),
        "{stdout}"
    );
    let mut ran = runs(&dir.join("runs.txt"));
    ran.sort();
    assert_eq!(ran, ["host-a", "host-b"]);
    assert_eq!(
        keys(&dir, &bucket, "triggers/web/receipts/000000000001/")
            .await
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_script_stops_the_agent_at_start_with_line_and_column() {
    let (_dev, dir, bucket) = dev_stack().await;
    let start = |script: &Path| agent_once(&dir, "web", "host-a", script, "state");
    let unknown = write_script(
        &dir,
        "unknown.yaml",
        "steps:\n  - shell: echo ok\n  - upload: {src: a, dest: b}\n",
    );
    let out = start(&unknown);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "unknown.yaml at line 3, column 5: steps[1]: unknown step kind or key `upload`"
        ),
        "{stderr}"
    );
    let bad_yaml = write_script(
        &dir,
        "bad.yaml",
        "steps:\n  - shell: echo ok\n   - shell: misindented\n",
    );
    let out = start(&bad_yaml);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.yaml at line 3, column"), "{stderr}");
    // Refused before anything was written.
    assert!(keys(&dir, &bucket, "triggers/").await.is_empty());
    assert!(!dir.join("state").exists());
    // The same agent with a good script starts (and says it follows the trigger).
    let good = write_script(&dir, "good.yaml", "steps:\n  - shell: echo ok\n");
    let out = start(&good);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        keys(&dir, &bucket, "triggers/web/agents/").await,
        ["triggers/web/agents/host-a.json"]
    );
}

/// A request's data reaches a step only as the script declares
/// it (`params:`, each value matching its pattern whole), loader and shell
/// variables are refused by the raiser and by the agent even if written
/// straight into the bucket, and a step sees nothing of the agent's own
/// environment but its base and `env_passthrough:`.
#[tokio::test(flavor = "multi_thread")]
async fn only_declared_data_reaches_a_step_and_nothing_of_the_agents_environment() {
    let (_dev, dir, bucket) = dev_stack().await;
    let log = dir.join("runs.txt");
    let pwned = dir.join("pwned");
    let payload = write_script(&dir, "payload.sh", &format!("touch {}\n", pwned.display()));
    let script = write_script(
        &dir,
        "deploy.yaml",
        &format!(
            "params: {{VERSION: '[0-9]+(\\.[0-9]+)*'}}\nenv_passthrough: [DEPLOY_PASSED]\nsteps:\n  - shell: echo \"$SPIGOT_SEQUENCE v=$VERSION leak=[$DEPLOY_LEAK] passed=[$DEPLOY_PASSED]\" >> {}\n  - shell: echo printed to stdout\n",
            log.display()
        ),
    );
    // `--once` exits 0 when every request it handled is done, 1 otherwise.
    let run_agent = |all_done: bool| {
        let out = agent_once_cmd(&dir, "web", "host-a", &script, "state")
            .env("DEPLOY_LEAK", "agent-secret")
            .env("DEPLOY_PASSED", "ok")
            // The agent's own BASH_ENV does not reach a step either.
            .env("BASH_ENV", &payload)
            .output()
            .unwrap();
        assert_eq!(out.status.success(), all_done, "{:?}", text(&out));
    };
    // Positive control: a declared, matching value runs, with exactly the asked-for environment.
    assert!(
        trigger(&dir, &["web", "--data", "VERSION=1.4.2"])
            .status
            .success()
    );
    run_agent(true);
    assert_eq!(runs(&log), ["1 v=1.4.2 leak=[] passed=[ok]"]);
    let r = receipt(&dir, &bucket, "web", 1, "host-a").await.unwrap();
    assert_eq!(r.status, Status::Done);
    assert!(
        r.output_tail.is_empty(),
        "no record_output: no output in the receipt"
    );

    // A value that does not match: raised, but nothing runs and the receipt says why.
    assert!(
        trigger(&dir, &["web", "--data", "VERSION=1.4.2; touch x"])
            .status
            .success()
    );
    // An undeclared key: the same.
    assert!(
        trigger(&dir, &["web", "--data", "TARGET=prod"])
            .status
            .success()
    );
    run_agent(false);
    assert_eq!(runs(&log).len(), 1, "nothing ran");
    let r = receipt(&dir, &bucket, "web", 2, "host-a").await.unwrap();
    assert_eq!(r.status, Status::Failed);
    assert!(r.steps.is_empty());
    let note = r.note.unwrap();
    assert!(
        note.contains("\"VERSION\"") && note.contains("does not match"),
        "{note}"
    );
    let note = receipt(&dir, &bucket, "web", 3, "host-a")
        .await
        .unwrap()
        .note
        .unwrap();
    assert!(note.contains("\"TARGET\" is not declared"), "{note}");

    // The raiser refuses a loader variable by name, and raises nothing.
    let out = trigger(
        &dir,
        &["web", "--data", &format!("BASH_ENV={}", payload.display())],
    );
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("BASH_ENV"), "{:?}", text(&out));
    assert_eq!(keys(&dir, &bucket, "triggers/web/requests/").await.len(), 3);
    // Written straight into the bucket, the agent refuses it too.
    let forged = serde_json::json!({
        "trigger": "web", "sequence": 4, "by": "someone",
        "data": {"BASH_ENV": payload.display().to_string()},
        "raised_at": "2026-12-02T10:00:00Z", "raised_at_ms": 0u64,
    });
    s3(&dir)
        .await
        .put_object()
        .bucket(&bucket)
        .key(spigot_core::trigger::Keys("web").request(4))
        .body(forged.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    run_agent(false);
    let r = receipt(&dir, &bucket, "web", 4, "host-a").await.unwrap();
    assert_eq!(r.status, Status::Failed);
    assert!(r.note.unwrap().contains("BASH_ENV"));
    assert!(!pwned.exists(), "BASH_ENV never reached a shell");
    assert_eq!(runs(&log).len(), 1);
}

/// A tiny HTTP server for downloads: `/ok` (5 bytes), `/big` (5,000 bytes),
/// `/to-metadata` and `/to-localhost` (302 to https://169.254.169.254/… and
/// https://localhost:1/…). Returns its base URL.
async fn download_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let answer = match path.as_str() {
                    "/ok" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_string(),
                    "/big" => format!(
                        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}",
                        "x".repeat(5000)
                    ),
                    "/to-metadata" => "HTTP/1.1 302 Found\r\nLocation: https://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                    "/to-localhost" => "HTTP/1.1 302 Found\r\nLocation: https://localhost:1/x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                    _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                };
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    base
}

/// Downloads follow no redirect to a private address, stop at a size
/// cap, write through no symlink, and download_s3 names the bucket's owner.
#[tokio::test(flavor = "multi_thread")]
async fn downloads_refuse_private_redirects_oversize_bodies_symlinks_and_foreign_buckets() {
    let (_dev, dir, bucket) = dev_stack().await;
    s3(&dir)
        .await
        .put_object()
        .bucket(&bucket)
        .key("artifacts/app.tgz")
        .body(b"artifact".to_vec().into())
        .send()
        .await
        .unwrap();
    let base = download_server().await;
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Someone planted a symlink where the old agent wrote its partial file, and one at the destination.
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("ok.txt.spigot-part")).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("ok.txt")).unwrap();
    let hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    let step = |path: &str, dest: &str| {
        format!(
            "  - download: {{url: '{base}{path}', dest: {}, insecure: true, sha256: {hello}}}\n    continue_on_error: true\n",
            out.join(dest).display()
        )
    };
    let script = write_script(
        &dir,
        "deploy.yaml",
        &format!(
            "steps:\n{}{}{}{}  - download_s3: {{url: s3://{bucket}/artifacts/app.tgz, dest: {}}}\n",
            step("/ok", "ok.txt"),
            step("/to-metadata", "meta.txt"),
            step("/to-localhost", "local.txt"),
            step("/big", "big.txt"),
            out.join("app.tgz").display()
        ),
    );
    assert!(trigger(&dir, &["web"]).status.success());
    let run = agent_once_cmd(&dir, "web", "host-a", &script, "state")
        .args([
            "--max-download-bytes",
            "4096",
            "--artifact-owner",
            "999999999999",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{:?}", text(&run));
    let r = receipt(&dir, &bucket, "web", 1, "host-a").await.unwrap();
    let errors: Vec<String> = r
        .steps
        .iter()
        .map(|s| s.error.clone().unwrap_or_default())
        .collect();
    assert_eq!(r.steps.len(), 5, "{errors:?}");
    assert_eq!(r.steps[0].status, Status::Done, "{errors:?}");
    assert!(
        errors[1].contains("169.254.169.254") && errors[1].contains("refused"),
        "{errors:?}"
    );
    assert!(
        errors[2].contains("localhost") && errors[2].contains("refused"),
        "{errors:?}"
    );
    assert!(errors[3].contains("4096-byte"), "{errors:?}");
    assert!(
        errors[4].contains("AccessDenied") || errors[4].contains("403"),
        "{errors:?}"
    );
    // What landed: the good download, as a file of its own; nothing else, no partial files.
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert!(
        !std::fs::symlink_metadata(out.join("ok.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(out.join("ok.txt")).unwrap(),
        "hello"
    );
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["ok.txt", "ok.txt.spigot-part"],
        "the planted link stays, nothing else"
    );
    // Control: the same bucket, with the agent's own account as the owner (the default), downloads.
    let script = write_script(
        &dir,
        "s3.yaml",
        &format!(
            "steps:\n  - download_s3: {{url: s3://{bucket}/artifacts/app.tgz, dest: {}}}\n",
            out.join("app.tgz").display()
        ),
    );
    assert!(trigger(&dir, &["web"]).status.success());
    let out2 = agent_once(&dir, "web", "host-a", &script, "state");
    assert!(out2.status.success(), "{:?}", text(&out2));
    assert_eq!(std::fs::read(out.join("app.tgz")).unwrap(), b"artifact");
}

/// The agent reads a request's number from its key, not its content;
/// a corrupt or oversized request gets a failed receipt and the agent goes on;
/// the raiser steps past them.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_goes_past_unreadable_requests_and_trusts_keys_not_content() {
    let (_dev, dir, bucket) = dev_stack().await;
    let (log, script) = what_logger(&dir);
    assert!(
        trigger(&dir, &["web", "--data", "WHAT=first"])
            .status
            .success()
    );
    assert!(
        agent_once(&dir, "web", "host-a", &script, "state")
            .status
            .success()
    );
    assert_eq!(runs(&log), ["1 first"]);
    // Written straight into the bucket: #2 claims to be #9, #3 is not JSON, #4 is 300 KB.
    let put = |n: u64, bytes: Vec<u8>| {
        let (dir, bucket) = (dir.clone(), bucket.clone());
        async move {
            s3(&dir)
                .await
                .put_object()
                .bucket(&bucket)
                .key(spigot_core::trigger::Keys("web").request(n))
                .body(bytes.into())
                .send()
                .await
                .unwrap();
        }
    };
    let lying = serde_json::json!({"trigger": "web", "sequence": 9, "by": "x",
        "data": {"WHAT": "second"}, "raised_at": "2026-12-02T10:00:00Z", "raised_at_ms": 0u64});
    put(2, lying.to_string().into_bytes()).await;
    put(3, b"{not json".to_vec()).await;
    put(4, vec![b' '; 300 * 1024]).await;
    // The raiser finds 2-4 taken and raises #5.
    let out = trigger(&dir, &["web", "--data", "WHAT=fifth"]);
    assert!(
        text(&out).0.starts_with("raised web #5 "),
        "{:?}",
        text(&out)
    );
    let out = agent_once(&dir, "web", "host-a", &script, "state");
    assert_eq!(out.status.code(), Some(1), "two failed: {:?}", text(&out));
    assert_eq!(runs(&log), ["1 first", "2 second", "5 fifth"]);
    let note = |n| {
        let (dir, bucket) = (dir.clone(), bucket.clone());
        async move {
            let r = receipt(&dir, &bucket, "web", n, "host-a").await.unwrap();
            assert_eq!(r.status, Status::Failed, "#{n}");
            r.note.unwrap()
        }
    };
    assert!(note(3).await.contains("not a request"));
    assert!(note(4).await.contains("larger than"));
    assert!(receipt(&dir, &bucket, "web", 9, "host-a").await.is_none());
}

/// A run whose final receipt could not be written (the bucket
/// unreachable) is not run again at restart: the receipt kept in the agent's
/// state is written instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_receipt_could_not_be_written_is_not_run_again() {
    let (_dev, dir, bucket) = dev_stack().await;
    let endpoint = spigot_cli_dev_file(&dir).endpoint.clone();
    let proxy = spigot_e2e::proxy::Proxy::start(&endpoint).await;
    let log = dir.join("runs.txt");
    let started = dir.join("started");
    let script = write_script(
        &dir,
        "deploy.yaml",
        &format!(
            "steps:\n  - shell: echo ran >> {}; touch {}; sleep 2\n",
            log.display(),
            started.display()
        ),
    );
    assert!(trigger(&dir, &["web"]).status.success());
    let agent = |through: &str| {
        agent_once_cmd(&dir, "web", "host-a", &script, "state")
            .args(["--endpoint", through, "--receipt-tries", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = agent(&proxy.url);
    wait_until("the step to start", 30, async || started.exists()).await;
    proxy.set_up(false); // the bucket becomes unreachable while the step runs
    let out = first.wait_with_output().unwrap();
    assert!(!out.status.success(), "the receipt could not be written");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("receipt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.set_up(true);
    let second = agent(&proxy.url).wait_with_output().unwrap();
    succeeded(&second);
    assert_eq!(runs(&log), ["ran"], "run once, not again");
    let r = receipt(&dir, &bucket, "web", 1, "host-a").await.unwrap();
    assert_eq!((r.status, r.attempt), (Status::Done, 1));
}
