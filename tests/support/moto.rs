//! The moto server every end-to-end test talks to, and fresh local stacks in it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use spigot_aws::aws_config::SdkConfig;
use spigot_aws::local::LocalStack;

/// The endpoint of a moto server: `MOTO_ENDPOINT`, or one started for this
/// test process (`tools/moto_server.py --iam`: moto with SQS's FIFO order after
/// a consumer times out, and IAM enforced as AWS enforces it; the default
/// credentials `test` are its admin, see that file and [`crate::iam`]).
pub fn moto() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(e) = std::env::var("MOTO_ENDPOINT") {
            return e;
        }
        let server = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/moto_server.py");
        start_moto(&format!("{} {server} --iam", python()))
    })
}

/// A plain moto server (`python -m moto.server`), for tests that show where moto differs from AWS.
pub fn plain_moto() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| start_moto(&format!("{} -m moto.server", python())))
}

/// Starts `command -H 127.0.0.1 -p PORT`, stopped when this test process ends; returns its endpoint.
fn start_moto(command: &str) -> String {
    let port = free_port();
    // The shell watches this test process and stops moto when it ends.
    let script = format!(
        "{command} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & M=$!; \
         trap 'kill $M 2>/dev/null' EXIT; \
         while kill -0 {pid} 2>/dev/null && kill -0 $M 2>/dev/null; do sleep 0.5; done",
        pid = std::process::id()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start sh for moto");
    std::thread::spawn(move || child.wait());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto did not start on port {port} with {command}; run `make venv` or set MOTO_ENDPOINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("http://127.0.0.1:{port}")
}

/// The Python that has moto: `SPIGOT_PYTHON`, the project's `.venv`, or `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("SPIGOT_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
    if std::path::Path::new(venv).exists() {
        return venv.to_string();
    }
    "python3".to_string()
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A name no other test uses: `t<nanos><n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{nanos:x}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// SDK config for the moto server.
pub async fn sdk() -> SdkConfig {
    spigot_aws::sdk_config(Some(moto())).await
}

/// A fresh local stack in moto.
pub async fn stack() -> (SdkConfig, LocalStack) {
    let sdk = sdk().await;
    let stack = spigot_aws::local::provision(&sdk, moto(), &unique("t"))
        .await
        .expect("provision local stack in moto");
    (sdk, stack)
}
