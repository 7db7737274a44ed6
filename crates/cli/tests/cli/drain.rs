//! Drains under pressure: memory bounds, kills and a flapping target.

use crate::prelude::*;

/// Peak resident memory (VmHWM) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 40 buffered 3 MB hooks (40 repositories, so every one could be in
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

/// Chaos: 150 hooks over 5 repositories buffered while OFF, then ON
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
        wait_until("deliveries before a kill", 120, async || {
            target.accepted().len() >= at
        })
        .await;
        drop(dev); // SIGKILL
        kills.push(Instant::now());
        (dev, _) = start_dev_named(&dir, &target.url, &name);
    }
    let restarted = Instant::now();
    wait_until("all 150 after the last restart", 180, async || {
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
