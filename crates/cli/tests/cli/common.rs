//! What the `spigot` process tests share: the command, a work dir, `spigot dev` on moto.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use spigot_core::resources::Resource;
use spigot_e2e::*;

pub(crate) fn spigot(dir: &PathBuf) -> Command {
    let mut c = Command::cargo_bin("spigot").unwrap();
    c.current_dir(dir)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("WEBHOOK_SECRET")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

/// `spigot` in `dir` with the credentials of an IAM user holding exactly what
/// `principal` holds in the template for the local stack of `dir/.spigot/dev.json`
/// (moto enforces it). Without a stack there yet, the admin's (the default).
pub(crate) fn spigot_as(dir: &PathBuf, principal: Principal) -> Command {
    let mut c = spigot(dir);
    if let Some((id, secret)) = keys_for(dir, principal) {
        c.env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret);
    }
    c
}

/// The principal's keys for the stack in `dir`, made once per dir and principal.
fn keys_for(dir: &std::path::Path, principal: Principal) -> Option<(String, String)> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Keys = HashMap<(PathBuf, Principal), (String, String)>;
    static KEYS: OnceLock<Mutex<Keys>> = OnceLock::new();
    let file = dir.join(".spigot/dev.json");
    if !file.exists() {
        return None;
    }
    let mut keys = KEYS.get_or_init(Default::default).lock().unwrap();
    let entry = keys
        .entry((dir.to_path_buf(), principal))
        .or_insert_with(|| {
            let stack = spigot_cli_dev_file(dir);
            // The agents' download_s3 steps fetch from artifacts/ of the config bucket,
            // named in AgentDownloadPrefixes as an operator would.
            let prefixes = format!("{}/artifacts/", stack.get(Resource::Bucket));
            let api_type = stack
                .resources
                .get(Resource::ApiType)
                .unwrap_or("REST")
                .to_string();
            // Called from sync helpers inside async tests: a runtime of its own, on a thread of its own.
            std::thread::spawn(move || {
                let params = [
                    ("AgentDownloadPrefixes", prefixes.as_str()),
                    ("ApiType", api_type.as_str()),
                ];
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(principal_keys_with(&stack, principal, &params))
            })
            .join()
            .unwrap()
        });
    Some(entry.clone())
}

pub(crate) fn workdir() -> PathBuf {
    let d = std::env::temp_dir().join(unique("spigot-cli-"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(crate) struct Dev(pub Child);
impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_dev(dir: &PathBuf, target: &str) -> (Dev, String) {
    start_dev_named(dir, target, &unique("dev"))
}

/// `spigot dev` on the local stack called `name` (a restart finds the same queues).
pub(crate) fn start_dev_named(dir: &PathBuf, target: &str, name: &str) -> (Dev, String) {
    start_dev_at(dir, target, name, moto())
}

/// `spigot dev` reaching AWS at `endpoint`.
pub(crate) fn start_dev_at(
    dir: &PathBuf,
    target: &str,
    name: &str,
    endpoint: &str,
) -> (Dev, String) {
    start_dev_with(dir, target, name, endpoint, &[])
}

/// `spigot dev` whose requests see the stage variables `lag_ms` late, as AWS's edge hands them out.
pub(crate) fn start_dev_lagged(dir: &PathBuf, target: &str, lag_ms: u64) -> (Dev, String) {
    let lag = lag_ms.to_string();
    start_dev_with(
        dir,
        target,
        &unique("dev"),
        moto(),
        &["--stage-lag-ms", &lag],
    )
}

/// `spigot dev` with `extra` arguments.
pub(crate) fn start_dev_with(
    dir: &PathBuf,
    target: &str,
    name: &str,
    endpoint: &str,
    extra: &[&str],
) -> (Dev, String) {
    let port = free_port();
    let log = std::fs::File::create(dir.join("dev.out")).unwrap();
    let child = spigot(dir)
        .args([
            "dev",
            "--endpoint",
            endpoint,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--target",
            target,
        ])
        .args(["--name", name, "--secret", SECRET, "--drain-interval", "1"])
        // GitHub's sample payloads were pushed in 2019: no push-age limit here.
        .args(["--max-push-age", "0"])
        .args(extra)
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dev = Dev(child);
    wait_serving(format!("127.0.0.1:{port}").parse().unwrap());
    (dev, format!("http://127.0.0.1:{port}/webhook"))
}

/// Waits until `spigot dev` answers at `addr` (it takes its port before it is ready).
pub(crate) fn wait_serving(addr: SocketAddr) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_millis(500)))?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(text)
            })
            .unwrap_or_default();
        if answer.contains("spigot dev") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "spigot dev did not start serving"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The local stack `spigot dev` wrote in `dir`.
pub(crate) fn spigot_cli_dev_file(dir: &std::path::Path) -> spigot_aws::local::LocalStack {
    serde_json::from_str(&std::fs::read_to_string(dir.join(".spigot/dev.json")).unwrap()).unwrap()
}

/// A fresh stack in moto, written to `dir/.spigot/dev.json` for `--local` commands (no `spigot dev`).
pub(crate) async fn local_stack(
    dir: &std::path::Path,
    target: Option<&str>,
) -> (
    spigot_aws::aws_config::SdkConfig,
    spigot_aws::local::LocalStack,
) {
    let (sdk, mut stack) = stack().await;
    stack.target = target.map(str::to_string);
    std::fs::create_dir_all(dir.join(".spigot")).unwrap();
    std::fs::write(
        dir.join(".spigot/dev.json"),
        serde_json::to_string(&stack).unwrap(),
    )
    .unwrap();
    (sdk, stack)
}
