//! The `spigot` command as a process, against moto and local targets.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use spigot_core::signature::sign_sha256;
use spigot_e2e::*;

fn spigot(dir: &PathBuf) -> Command {
    let mut c = Command::cargo_bin("spigot").unwrap();
    c.current_dir(dir)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("WEBHOOK_SECRET")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

fn workdir() -> PathBuf {
    let d = std::env::temp_dir().join(unique("spigot-cli-"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Dev(Child);
impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dev(dir: &PathBuf, target: &str) -> (Dev, String) {
    let port = free_port();
    let log = std::fs::File::create(dir.join("dev.out")).unwrap();
    let child = spigot(dir)
        .args([
            "dev",
            "--endpoint",
            moto(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--target",
            target,
        ])
        .args([
            "--name",
            &unique("dev"),
            "--secret",
            SECRET,
            "--drain-interval",
            "1",
        ])
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dev = Dev(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "spigot dev did not start listening"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (dev, format!("http://127.0.0.1:{port}/webhook"))
}

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
    let out = spigot(dir)
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

    let out = spigot(&dir).args(["off", "--local"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ON -> OFF"));
    assert_eq!(status_json(&dir)["state"], "OFF");

    let (status, json) = post(&url, "cli-2", &body, SECRET).await;
    assert_eq!((status, json["status"].as_str()), (202, Some("buffered")));
    assert_eq!(target.accepted().len(), 1, "nothing forwarded while OFF");
    assert_eq!(status_json(&dir)["buffer"]["visible"], 1);

    let (status, _) = post(&url, "cli-3", &body, "wrong secret").await;
    assert_eq!(status, 401);

    let out = spigot(&dir).args(["on", "--local"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("OFF -> ON"));
    assert_eq!(status_json(&dir)["state"], "ON");
    // The dev drainer delivers what was buffered while OFF.
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
    let out = spigot(&dir)
        .args(["status", "--stack", "no-such-stack", "--endpoint", moto()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for hint in ["--api-id", "SPIGOT_API_ID", "--stack", "--local"] {
        assert!(err.contains(hint), "{err}");
    }
    let out = spigot(&dir).args(["on", "--local"]).output().unwrap();
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
