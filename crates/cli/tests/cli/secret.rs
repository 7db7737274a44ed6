//! `spigot secret show`.

use crate::prelude::*;

/// `spigot secret show` prints the generated secret from Secrets Manager.
#[tokio::test(flavor = "multi_thread")]
async fn secret_show_prints_the_webhook_secret() {
    let dir = workdir();
    let sdk = sdk().await;
    let created = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(unique("spigot-webhook"))
        .secret_string("generated-40-characters-of-secret,older-one")
        .send()
        .await
        .unwrap();
    let out = spigot_as(&dir, Principal::Operator)
        .args(["secret", "show", "--endpoint", moto()])
        .args(["--secret-arn", created.arn().unwrap()])
        .args([
            "--api-id",
            "a",
            "--buffer-url",
            "b",
            "--dlq-url",
            "d",
            "--eval-url",
            "e",
            "--eval-dlq-url",
            "f",
            "--bucket",
            "g",
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    succeeded(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "generated-40-characters-of-secret,older-one"
    );
    let missing = spigot_as(&dir, Principal::Operator)
        .args(["secret", "show", "--endpoint", moto()])
        .args([
            "--api-id",
            "a",
            "--buffer-url",
            "b",
            "--dlq-url",
            "d",
            "--eval-url",
            "e",
            "--eval-dlq-url",
            "f",
            "--bucket",
            "g",
        ])
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--secret-arn"));
}

/// `spigot secret show --local` says why there is nothing to show
/// and what the local stack verifies with, without suggesting `--local`.
#[tokio::test(flavor = "multi_thread")]
async fn secret_show_local_says_what_the_local_stack_verifies_with() {
    let dir = workdir();
    let (_sdk, _stack) = local_stack(&dir, None).await;
    let out = spigot_as(&dir, Principal::Operator)
        .args(["secret", "show", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out).1;
    assert!(
        stderr.contains("spigot-local-test-secret") && !stderr.contains("add --local"),
        "{stderr}"
    );
}
