//! A TCP proxy that can be cut: while down it refuses new connections and
//! drops the open ones (an unreachable AWS endpoint, for a client that pools
//! connections).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The proxy.
#[derive(Debug)]
pub struct Proxy {
    /// `http://127.0.0.1:port`
    pub url: String,
    up: watch::Sender<bool>,
}

impl Proxy {
    /// A proxy to `upstream` (`http://127.0.0.1:port`), up.
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("an http://IP:port upstream");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (up, watch) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // dropped: connection reset
                }
                let mut down = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { url, up }
    }

    /// Cuts (`false`) or restores (`true`) the path.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}
