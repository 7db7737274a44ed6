//! `spigot dev`: the local stack as a newcomer meets it.

use crate::prelude::*;

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
    // OFF does not stop pipeline starts, and says so.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pipeline filters go on starting pipelines")
    );
    assert_eq!(status_json(&dir)["state"], "OFF");
    // OFF again says so.
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

// ---- `make run` and `spigot dev` as a newcomer meets them ----

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
    succeeded(&out);
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

/// An idle `spigot dev` prints nothing; a wrong path is a 404 that says where hooks go.
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

/// `--local` with the stack's moto down says what to start.
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

/// `-v` shows Spigot's debug lines, not the SDK's internals (RUST_LOG still can).
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

/// `spigot dev --endpoint` with nothing listening says so within a
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

/// `spigot dev --delivery-mode pull` buffers every hook (202, even ON)
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
    succeeded(&relay);
    assert_eq!(target.accepted().len(), 1);
    assert_eq!(target.accepted()[0].body, body);
}

/// Ctrl-C on `spigot dev` says what it stopped and what keeps running
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
