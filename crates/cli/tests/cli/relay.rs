//! `spigot relay`: pull mode, leases, kills and outages.

use crate::prelude::*;

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
    succeeded(&out);
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
    // The relay's steps are on the timeline, written under RelayPolicy.
    let refused_steps = events(&dir, &["--delivery", &refused]);
    assert_eq!(
        steps(&refused_steps),
        ["received", "buffered", "attempt", "dead-lettered"],
        "{refused_steps}"
    );
    assert_eq!(refused_steps[3]["by"], "relay");
    let delivered = events(&dir, &["--delivery", &ledger.sent[0].0]);
    assert_eq!(delivered[2]["step"], "delivered", "{delivered}");
    assert_eq!(delivered[2]["by"], "relay");
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
    wait_until("the relay to deliver after the outage", 30, async || {
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
    wait_until("the relay to resume", 30, async || {
        target.accepted().len() >= 25
    })
    .await;

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
    wait_until("deliveries before the kill", 30, async || {
        target.accepted().len() >= 15
    })
    .await;
    first.0.kill().unwrap(); // SIGKILL mid-batch
    first.0.wait().unwrap();
    let at_kill = target.accepted().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Restart; SIGTERM once it has delivered a bit more.
    let mut second = relay(&dir, &target.url, &[]);
    wait_until("deliveries after the restart", 30, async || {
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

/// A slow target (10 s a hook) and ten hooks of one repository in one
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
    succeeded(&out);
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

/// The relay's heartbeat follows the queue's visibility timeout. A
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
    wait_until("five deliveries", 40, async || target.attempts() >= 5).await;
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

/// A relay paused past its lease (SIGSTOP, a host asleep) finds on
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
    wait_until("the first delivery to start", 20, async || {
        first_target.attempts() >= 1
    })
    .await;
    signal(first.0.id(), "-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await; // past the 2 s lease
    let _second = relay(&dir, &second_target.url, &[]);
    wait_until("the second relay to deliver the group", 30, async || {
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

/// A relay killed mid-group repeats at most the hook in hand: each
/// delivered hook is deleted at once, not when its group is done.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_killed_mid_group_repeats_at_most_the_hook_in_hand() {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (sdk, stack, ledger) = relay_backlog(&dir, &target.url, 2, 10, &["octo-org/a"]).await;
    target.set_delay_ms(300);
    let mut first = relay(&dir, &target.url, &[]);
    wait_until("five deliveries", 30, async || target.accepted().len() >= 5).await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let _second = relay(&dir, &target.url, &[]);
    wait_until("the rest", 30, async || {
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

/// A receive whose answer is lost on the way back (the wrapped moto
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
    succeeded(&out);
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

/// The relay refuses a plain-http target unless told it is inside the network.
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

/// `spigot relay --once` against a down target exits 1 saying
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
    succeeded(&empty);
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
    succeeded(&back);
    assert_eq!(target.accepted().len(), 1, "delivered once");
}
