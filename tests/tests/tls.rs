//! One trust store a process, shared by the SDK's client and reqwest,
//! read from the platform (here: `SSL_CERT_FILE` naming a private CA, as an
//! operator with an internal Jenkins would). Real TLS servers: `openssl s_server`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spigot_core::ports::Target;
use spigot_e2e::{free_port, unique};

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA called `name` and a certificate for localhost it signed; a TLS server with it on a port.
fn server(dir: &Path, name: &str) -> (Server, u16) {
    let subject = format!("/CN=Spigot test CA {name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
            "-subj",
            &subject,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{name}-ca.pem"),
            "-CAkey",
            &format!("{name}-ca.key"),
            "-CAcreateserial",
            "-extfile",
            "san.ext",
            "-out",
            &format!("{name}.pem"),
        ],
    );
    let port = free_port();
    let child = Command::new("openssl")
        .current_dir(dir)
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "-cert",
            &format!("{name}.pem"),
            "-key",
            &format!("{name}.key"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Server(child), port)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_is_trusted_by_the_target_and_the_sdk_alike() {
    let dir = std::env::temp_dir().join(unique("tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (_trusted, good) = server(&dir, "private");
    let (_stranger, bad) = server(&dir, "stranger");
    // Only the private CA: the platform store as `SSL_CERT_FILE` names it.
    // (This test binary runs this one test: nothing read the store before.)
    unsafe {
        std::env::set_var("SSL_CERT_FILE", dir.join("private-ca.pem"));
        std::env::set_var("SSL_CERT_DIR", dir.join("no-such-dir"));
    }
    let probe = |port: u16| {
        let url = format!("https://localhost:{port}/");
        spigot_aws::HttpTarget::new(&url, Default::default(), &url, Duration::from_secs(3)).unwrap()
    };
    assert!(
        probe(good).probe().await,
        "the private CA's server is up and trusted"
    );
    assert!(
        !probe(bad).probe().await,
        "another CA's server is not trusted"
    );
    assert_eq!(spigot_aws::tls::anchors(), 1, "one anchor, read once");
    // The SDK's client: the same anchors decide, not a second read of the
    // store — which would now find the other CA.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", dir.join("stranger-ca.pem"));
    }
    let sqs = |port: u16| async move {
        let sdk = spigot_aws::sdk_config(Some(&format!("https://localhost:{port}"))).await;
        // s_server answers no POST: the trusted handshake ends in a timeout, not a certificate error.
        let conf = spigot_aws::aws_sdk_sqs::config::Builder::from(&sdk)
            .timeout_config(
                spigot_aws::aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(2))
                    .build(),
            )
            .retry_config(spigot_aws::aws_config::retry::RetryConfig::disabled())
            .build();
        let e = spigot_aws::aws_sdk_sqs::Client::from_conf(conf)
            .list_queues()
            .send()
            .await
            .expect_err("s_server is no SQS");
        spigot_aws::error_text(&e)
    };
    let trusted = sqs(good).await;
    let stranger = sqs(bad).await;
    assert!(stranger.contains("UnknownIssuer"), "{stranger}");
    assert!(
        !trusted.contains("certificate"),
        "the TLS handshake succeeded: {trusted}"
    );
}
