//! What a long-running command (`spigot relay`, and the agent to come) needs:
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

/// Serves `GET /metrics` at `addr`, the text rendered by `render` on each scrape.
pub async fn serve_metrics<F, R>(addr: SocketAddr, render: R) -> anyhow::Result<()>
where
    R: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = String> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    tokio::spawn(async move {
        let app = axum::Router::new().route("/metrics", axum::routing::get(render));
        axum::serve(listener, app).await.ok();
    });
    Ok(())
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
