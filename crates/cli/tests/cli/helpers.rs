//! Helpers the command modules share.

use crate::prelude::*;

pub(crate) async fn post(
    url: &str,
    delivery: &str,
    body: &[u8],
    secret: &str,
) -> (u16, serde_json::Value) {
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

pub(crate) fn status_json(dir: &PathBuf) -> serde_json::Value {
    let out = spigot_as(dir, Principal::Operator)
        .args(["status", "--local", "--json"])
        .output()
        .unwrap();
    succeeded(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn deliveries(
    msgs: &[(String, std::collections::HashMap<String, String>)],
) -> std::collections::BTreeSet<String> {
    msgs.iter()
        .map(|(b, _)| spigot_core::Envelope::decode(b).unwrap().delivery)
        .collect()
}

/// A relay process (killed on drop).
pub(crate) fn relay(dir: &Path, target: &str, extra: &[&str]) -> Dev {
    let log = std::fs::File::create(dir.join(format!("relay-{}.log", unique("")))).unwrap();
    let child = spigot_as(&dir.to_path_buf(), Principal::Relay)
        .args([
            "relay",
            "--to",
            target,
            "--local",
            "--poll-wait",
            "1",
            "--concurrency",
            "4",
            "--allow-http",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Dev(child)
}

/// Asserts that a command succeeded, showing what it printed if it did not.
pub(crate) fn succeeded(out: &std::process::Output) {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{:?}: {stdout}{stderr}", out.status);
}

pub(crate) fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `…` in an expected line stands for anything.
pub(crate) fn matches(expected: &str, got: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    let mut rest = got;
    for (i, part) in parts.iter().enumerate() {
        match rest.find(part) {
            Some(at) if i > 0 || at == 0 => rest = &rest[at + part.len()..],
            _ => return false,
        }
    }
    parts.len() > 1 || rest.is_empty()
}

/// A local stack (`spigot dev`) in a fresh work dir: its process, the dir, the bucket.
pub(crate) async fn dev_stack() -> (Dev, PathBuf, String) {
    let dir = workdir();
    let target = FakeTarget::start().await;
    let (dev, _) = start_dev(&dir, &target.url);
    let bucket = spigot_cli_dev_file(&dir).get(Resource::Bucket).to_string();
    (dev, dir, bucket)
}

/// `spigot agent --local` following `trigger` with `script`, its log in `dir/agent-ID.log`.
pub(crate) fn agent(dir: &Path, trigger: &str, id: &str, script: &Path, extra: &[&str]) -> Dev {
    let log = std::fs::File::create(dir.join(format!("agent-{id}.log"))).unwrap();
    let child = spigot_as(&dir.to_path_buf(), Principal::Agent)
        .args(["agent", "--local", "--trigger", trigger, "--agent-id", id])
        .arg("--script")
        .arg(script)
        .arg("--state-dir")
        .arg(dir.join(format!("state-{id}")))
        .args(["--interval", "200ms"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Dev(child)
}

/// `spigot agent --local --once`: handles what waits on `trigger`, then exits.
pub(crate) fn agent_once(
    dir: &Path,
    trigger: &str,
    id: &str,
    script: &Path,
    state: &str,
) -> Output {
    agent_once_cmd(dir, trigger, id, script, state)
        .output()
        .unwrap()
}

/// The command of [`agent_once`], for more flags or environment.
pub(crate) fn agent_once_cmd(
    dir: &Path,
    trigger: &str,
    id: &str,
    script: &Path,
    state: &str,
) -> Command {
    let mut cmd = spigot_as(&dir.to_path_buf(), Principal::Agent);
    cmd.args([
        "agent",
        "--local",
        "--trigger",
        trigger,
        "--agent-id",
        id,
        "--once",
    ])
    .arg("--script")
    .arg(script)
    .arg("--state-dir")
    .arg(dir.join(state));
    cmd
}

pub(crate) fn trigger(dir: &Path, args: &[&str]) -> Output {
    spigot_as(&dir.to_path_buf(), Principal::Raiser)
        .args(["trigger", "--local"])
        .args(args)
        .output()
        .unwrap()
}

pub(crate) fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

pub(crate) async fn s3(dir: &Path) -> spigot_aws::aws_sdk_s3::Client {
    let sdk = sdk().await;
    let _ = dir;
    spigot_aws::s3_client(&sdk)
}

pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    bucket: &str,
    key: &str,
) -> Option<T> {
    let out = s3(dir)
        .await
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .ok()?;
    let bytes = out.body.collect().await.unwrap().into_bytes();
    Some(serde_json::from_slice(&bytes).unwrap())
}

pub(crate) async fn receipt(
    dir: &Path,
    bucket: &str,
    name: &str,
    seq: u64,
    agent: &str,
) -> Option<Receipt> {
    get_json(
        dir,
        bucket,
        &spigot_core::trigger::Keys(name).receipt(seq, agent),
    )
    .await
}

pub(crate) async fn keys(dir: &Path, bucket: &str, prefix: &str) -> Vec<String> {
    let out = s3(dir)
        .await
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

pub(crate) async fn wait_until(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lines of a file written by the script (one per run).
pub(crate) fn runs(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `spigot events --local --json ARGS` as the operator.
pub(crate) fn events(dir: &PathBuf, args: &[&str]) -> Value {
    let out = spigot_as(dir, Principal::Operator)
        .args(["events", "--local", "--json", "--since", "10m"])
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "events {args:?}: {stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

pub(crate) fn steps(timeline: &Value) -> Vec<String> {
    timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn header<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
    r.header(name)
}
