//! `spigot send` and `spigot sign`: payloads posted as GitHub posts them.

use crate::prelude::*;

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

/// An API Gateway event file goes out as it is (its bad signature stays
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
    succeeded(&out);
    assert!(text(&out).0.starts_with("200 9f5c3a10"), "{}", text(&out).0);
    // A ping payload is sent as a ping.
    let out = send(&[
        &format!("{root}/tests/fixtures/ping.json"),
        "--secret",
        SECRET,
    ]);
    succeeded(&out);
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

/// `spigot send` without `--url` posts to the local stack's receiver
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
    succeeded(&out);
    assert!(text(&out).0.starts_with("200"), "{}", text(&out).0);
    assert_eq!(target.accepted().len(), 1);
}
