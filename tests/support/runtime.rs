//! A fake Lambda Runtime API on loopback: hands a function's bootstrap the
//! queued events one by one (`/next`, with the request-id and deadline
//! headers), records the responses and errors, and holds `/next` open once
//! the queue is empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;

#[derive(Default)]
struct Shared {
    events: Mutex<VecDeque<String>>,
    responses: Mutex<Vec<(String, String)>>,
    errors: Mutex<Vec<String>>,
}

/// The fake Runtime API.
#[derive(Clone)]
pub struct FakeRuntime {
    /// `127.0.0.1:port` (`AWS_LAMBDA_RUNTIME_API`).
    pub address: String,
    shared: Arc<Shared>,
}

impl FakeRuntime {
    /// Serves `events` in order.
    pub async fn start(events: Vec<String>) -> Self {
        let shared = Arc::new(Shared {
            events: Mutex::new(events.into()),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new()
            .route(
                "/2018-06-01/runtime/invocation/next",
                axum::routing::get(next),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                axum::routing::post(response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                axum::routing::post(error),
            )
            .route(
                "/2018-06-01/runtime/init/error",
                axum::routing::post(init_error),
            )
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Self { address, shared }
    }

    /// (request id, body) of each response so far.
    pub fn responses(&self) -> Vec<(String, String)> {
        self.shared.responses.lock().unwrap().clone()
    }

    /// Errors the function reported.
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }

    /// The environment a bootstrap needs to find this API.
    pub fn env(&self, function: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.address.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", function),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/25/[$LATEST]test"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/spigot/test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let event = shared.events.lock().unwrap().pop_front();
    let Some(event) = event else {
        // Nothing more: hold the function here until the test ends it.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let id = format!("req-{}", crate::moto::unique(""));
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
    headers.insert(
        "lambda-runtime-deadline-ms",
        "99999999999999".parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:spigot-test"
            .parse()
            .unwrap(),
    );
    headers.insert("content-type", "application/json".parse().unwrap());
    (headers, event)
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> &'static str {
    let body = String::from_utf8_lossy(&body).into_owned();
    shared.responses.lock().unwrap().push((id, body));
    "{}"
}

async fn error(State(shared): State<Arc<Shared>>, body: Bytes) -> &'static str {
    shared
        .errors
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    "{}"
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> &'static str {
    error(State(shared), body).await
}
