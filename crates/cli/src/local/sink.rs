//! The built-in target of `spigot dev`: prints each delivery and whether its signature verifies.

use std::net::SocketAddr;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use spigot_core::{Secrets, Verifier};

use crate::CliError;

/// Serves the sink at `addr`; returns its URL.
pub(super) async fn start(addr: SocketAddr, secrets: Secrets) -> Result<String, CliError> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the sink; pass --sink or --target")
    })?;
    tokio::spawn(async move {
        let app = axum::Router::new()
            .fallback(move |m: Method, h: HeaderMap, b: Bytes| sink(secrets.clone(), m, h, b));
        axum::serve(listener, app).await.ok();
    });
    Ok(format!("http://{addr}/"))
}

async fn sink(secrets: Secrets, method: Method, headers: HeaderMap, body: Bytes) -> StatusCode {
    if method != Method::POST {
        return StatusCode::OK;
    }
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let valid = Verifier::new(Some(secrets), false)
        .verify(&body, h("x-hub-signature-256"), None)
        .is_ok();
    println!(
        "sink: {} {} {} bytes signature {}",
        h("x-github-event").unwrap_or("-"),
        h("x-github-delivery").unwrap_or("-"),
        body.len(),
        if valid { "valid" } else { "INVALID" }
    );
    StatusCode::OK
}
