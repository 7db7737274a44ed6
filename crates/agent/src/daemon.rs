//! What a long-running command (`spigot relay`, `spigot-agent`) needs:
//! a stop flag raised by SIGINT/SIGTERM, pauses that end early on stop, a
//! Prometheus endpoint (a run stops when the spigot stops draining through
//! `spigot_engine::watched`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

/// A flag set on the first SIGINT or SIGTERM: finish what is in flight, then exit.
pub fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        tracing::info!("stopping: finishing in-flight work");
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

/// Sleeps `d`, or less when `stop` is raised meanwhile.
pub async fn pause(stop: &AtomicBool, d: Duration) {
    let until = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Serves `GET /metrics` at `addr`, the text rendered by `render` on each
/// scrape (HTTP/1.1, one request a connection; anything else is a 404).
pub async fn serve_metrics<F, R>(addr: SocketAddr, render: R) -> anyhow::Result<()>
where
    R: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = String> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let render = render.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), answer(socket, render)).await;
            });
        }
    });
    Ok(())
}

/// Reads one request head (at most 8 KiB) and answers it.
async fn answer<F, R>(mut socket: tokio::net::TcpStream, render: R) -> std::io::Result<()>
where
    R: Fn() -> F,
    F: Future<Output = String>,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8 * 1024 {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let wanted = line.starts_with(b"GET /metrics ") || line.starts_with(b"GET /metrics?");
    let (status, body) = if wanted {
        ("200 OK", render().await)
    } else {
        (
            "404 Not Found",
            "only GET /metrics is served here\n".to_string(),
        )
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(reply.as_bytes()).await?;
    socket.shutdown().await
}

/// Prometheus text exposition, one metric at a time.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    /// Adds metric `name` of `kind` (`counter`, `gauge`).
    pub fn metric(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.0.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }

    /// The text.
    pub fn text(self) -> String {
        self.0
    }
}
