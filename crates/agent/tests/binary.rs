//! `spigot-agent` as the process a deploy host runs: its own binary, given a
//! bucket name and nothing else about the stack, under AgentPolicy (moto
//! enforces it).

use std::collections::BTreeMap;
use std::process::Command;

use spigot_core::resources::Resource;
use spigot_core::trigger::{self, Receipt, Status};
use spigot_e2e::*;

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spigot-agent"));
    c.env_remove("AWS_ENDPOINT_URL")
        .env_remove("SPIGOT_CONFIG_BUCKET")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

#[test]
fn it_is_a_binary_of_its_own() {
    let out = agent().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("spigot-agent "), "{text}");
    // Without a bucket it says what it needs (and where to give it).
    let out = agent()
        .args(["--trigger", "web", "--script", "x.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bucket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn it_follows_a_trigger_given_only_the_bucket_under_the_agent_policy() {
    let (sdk, stack) = stack().await;
    let bucket = stack.get(Resource::Bucket).to_string();
    let store = spigot_aws::S3Triggers::new(spigot_aws::s3_client(&sdk), &bucket);
    let data = BTreeMap::from([("VERSION".to_string(), "1.4.2".to_string())]);
    trigger::raise(&store, "web", "ci", data, spigot_aws::now_ms(), "")
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(unique("spigot-agent-"));
    std::fs::create_dir_all(&dir).unwrap();
    let out_file = dir.join("deployed.txt");
    let script = dir.join("deploy.yaml");
    std::fs::write(
        &script,
        format!(
            "params:\n  VERSION: '^[0-9.]+$'\nsteps:\n  - shell: echo \"$VERSION\" > {}\n",
            out_file.display()
        ),
    )
    .unwrap();
    let (id, secret) = principal_keys_with(&stack, Principal::Agent, &[]).await;
    let out = agent()
        .current_dir(&dir)
        .args(["--bucket", &bucket, "--endpoint", moto()])
        .args(["--trigger", "web", "--agent-id", "host-a", "--once"])
        .arg("--script")
        .arg(&script)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "1.4.2\n");
    let receipt: Receipt = match trigger::receipt(&store, "web", 1, "host-a").await.unwrap() {
        Some(r) => r,
        None => panic!("no receipt"),
    };
    assert_eq!(receipt.status, Status::Done);
}
