//! What API Gateway does in front of the receiver: `POST /webhook` with the
//! stage's variables — read on each request so `spigot off --local` takes
//! effect at once, or, with `--stage-lag-ms`, as they were that long ago
//! ([`LaggedStage`], as AWS's edge hands them out while an update spreads) —
//! and the same 413s for what API Gateway or Lambda would refuse ([`spigot_core::edge`]).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use spigot_aws::{S3Triggers, StageSwitch};
use spigot_core::edge::{self, EdgeRefusal, LaggedStage};
use spigot_core::ports::{Clock, StageRef, SystemClock};
use spigot_receiver::trigger::TriggerDoor;
use spigot_receiver::{AwsReceiver, Inbound};

use crate::CliError;

struct App {
    receiver: AwsReceiver,
    door: TriggerDoor<S3Triggers>,
    switch: StageSwitch,
    stage: StageRef,
    /// The stage's readings when requests see them late (`--stage-lag-ms`).
    lagged: Option<Arc<std::sync::Mutex<LaggedStage>>>,
}

/// How often the stage is read while requests see it late.
const STAGE_READ_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Reads the stage every [`STAGE_READ_EVERY`] into `lagged`, for as long as the server runs.
fn watch_stage(switch: StageSwitch, lagged: Arc<std::sync::Mutex<LaggedStage>>) {
    tokio::spawn(async move {
        loop {
            match switch.variables().await {
                Ok(vars) => lagged.lock().unwrap().observe(SystemClock.now_ms(), vars),
                Err(e) => tracing::warn!(error = %e, "cannot read the stage"),
            }
            tokio::time::sleep(STAGE_READ_EVERY).await;
        }
    });
}

/// Takes the port first, before anything is provisioned or written.
pub(super) async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, CliError> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        CliError::Usage(format!(
            "port {} is taken ({e}); is another spigot dev running? choose another with --listen (make run ARGS=\"--listen 127.0.0.1:{}\")",
            listen.port(),
            listen.port().wrapping_add(10)
        ))
    })
}

/// Serves the receiver on `listener` until Ctrl-C.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    receiver: AwsReceiver,
    door: TriggerDoor<S3Triggers>,
    switch: StageSwitch,
    stage: StageRef,
    stage_lag_ms: u64,
) -> Result<(), CliError> {
    let lagged = (stage_lag_ms > 0).then(|| {
        let lagged = Arc::new(std::sync::Mutex::new(LaggedStage::new(stage_lag_ms)));
        watch_stage(switch.clone(), lagged.clone());
        lagged
    });
    let router = axum::Router::new()
        .route("/webhook", axum::routing::post(webhook).fallback(not_found))
        .route(
            "/trigger/{name}",
            axum::routing::post(raise).fallback(not_found),
        )
        .route(
            "/",
            axum::routing::get(|| async { "spigot dev: POST GitHub webhooks to /webhook\n" }),
        )
        // A wrong path or method is a 404 that says where hooks go, not an empty 405.
        .fallback(not_found)
        .with_state(Arc::new(App {
            receiver,
            door,
            switch,
            stage,
            lagged,
        }));
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the dev server stopped")?;
    // What stopped, and what did not (make run's moto keeps the stack).
    eprintln!(
        "spigot dev stopped: the receiver, sink, drainer and evaluator are down; moto keeps running with the buffer, dead letters, filters and spigot state (`make run` picks them up again, `make stop` ends moto)"
    );
    Ok(())
}

/// The request as API Gateway would pass it on, or the 413 it would answer.
async fn inbound(app: &App, headers: &HeaderMap, body: Body) -> Result<Inbound, Response> {
    let refused = |r: EdgeRefusal| {
        let (status, content_type, body) = r.answer();
        tracing::warn!(answer = body, "refused as API Gateway would");
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::PAYLOAD_TOO_LARGE);
        (status, [("content-type", content_type)], body).into_response()
    };
    let Ok(body) = axum::body::to_bytes(body, edge::API_GATEWAY_MAX_BODY).await else {
        return Err(refused(EdgeRefusal::BodyTooLong));
    };
    let pairs = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
    if let Err(r) = edge::admit(body.len(), pairs) {
        return Err(refused(r));
    }
    Ok(Inbound {
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
        stage_variables: Default::default(),
        stage: Some(app.stage.clone()),
    })
}

fn json_answer(answer: spigot_receiver::Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [("content-type", "application/json")],
        answer.body.to_string(),
    )
        .into_response()
}

async fn webhook(AxState(app): AxState<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let mut inbound = match inbound(&app, &headers, body).await {
        Ok(i) => i,
        Err(refused) => return refused,
    };
    if let Some(lagged) = &app.lagged {
        let seen = lagged.lock().unwrap().at(SystemClock.now_ms()).cloned();
        inbound.stage_variables = seen.unwrap_or_default();
    } else {
        match app.switch.variables().await {
            Ok(vars) => inbound.stage_variables = vars,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the stage; the receiver will buffer")
            }
        }
    }
    json_answer(app.receiver.handle(&inbound, SystemClock.now_ms()).await)
}

async fn raise(
    AxState(app): AxState<Arc<App>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match inbound(&app, &headers, body).await {
        Ok(inbound) => json_answer(app.door.handle(&name, &inbound, SystemClock.now_ms()).await),
        Err(refused) => refused,
    }
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        [("content-type", "application/json")],
        serde_json::json!({
            "status": "rejected",
            "error": format!("nothing at {method} {}: POST GitHub webhooks to /webhook", uri.path())
        })
        .to_string(),
    )
        .into_response()
}
