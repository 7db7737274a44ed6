//! `spigot reconcile`, against a local server speaking GitHub's
//! hook-deliveries API.

use crate::prelude::*;

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
    wait_until("5 hooks at the target", 30, async || {
        target.accepted().len() >= 5
    })
    .await;
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
    succeeded(&out);
    wait_until("10 hooks at the target", 60, async || {
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

/// With GitHub unreachable `spigot reconcile` says nothing
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
