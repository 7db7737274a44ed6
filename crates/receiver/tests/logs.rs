//! The receiver's bootstrap under a fake Lambda Runtime API writes its
//! logs as CloudWatch reads them: no ANSI escape bytes; JSON lines with the
//! delivery id as a field when `AWS_LAMBDA_LOG_FORMAT=JSON`; the level from
//! `AWS_LAMBDA_LOG_LEVEL`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spigot_e2e::FakeRuntime;

fn event(file: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../events/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Runs the receiver on the bad-signature and ping samples; its stdout.
async fn logs(extra: &[(&str, &str)]) -> String {
    let runtime =
        FakeRuntime::start(vec![event("push-bad-signature.json"), event("ping.json")]).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_spigot-receiver"))
        .env_clear()
        .envs(runtime.env("spigot-receiver"))
        .env("WEBHOOK_SECRET", "spigot-local-test-secret")
        .env("BUFFER_QUEUE_URL", "http://127.0.0.1:9/queue/buffer.fifo")
        .env("BUFFER_DLQ_URL", "http://127.0.0.1:9/queue/dlq.fifo")
        .env("TARGET_URL", "https://jenkins.example.com/github-webhook/")
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while runtime.responses().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "answered {:?}, errors {:?}",
            runtime.responses(),
            runtime.errors()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let statuses: Vec<i64> = runtime
        .responses()
        .iter()
        .map(|b| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["statusCode"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(statuses, [401, 200]);
    String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_logs_carry_no_colour_codes_and_are_json_when_asked() {
    let text = logs(&[]).await;
    assert!(text.contains("refused: bad signature"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape bytes in: {text:?}");

    let json = logs(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]).await;
    assert!(!json.contains('\u{1b}'));
    let lines: Vec<serde_json::Value> = json
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refused = lines
        .iter()
        .find(|l| l["message"] == "refused: bad signature")
        .expect("the refusal is logged");
    assert_eq!(refused["level"], "WARN");
    assert_eq!(refused["delivery"], "9f5c3a14-7b61-11e6-8f6c-0123456789ab");
    assert!(lines.iter().any(|l| l["level"] == "INFO"), "{json}");

    // AWS_LAMBDA_LOG_LEVEL=WARN: the INFO lines are gone, the warning stays.
    let warn = logs(&[
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
    ])
    .await;
    assert!(warn.contains("refused: bad signature"), "{warn}");
    assert!(!warn.contains("\"INFO\""), "{warn}");
}
