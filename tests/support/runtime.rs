//! A fake Lambda Runtime API on loopback: hands a function's bootstrap the
//! queued events one by one (`/next`, with the request-id, deadline, ARN and
//! trace headers), records when each was served and answered, the responses
//! and the errors, and holds `/next` open once the queue is empty. Used by the
//! log tests and the cold-start harness.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use tokio::sync::Notify;

#[derive(Default)]
struct Shared {
    events: Mutex<VecDeque<String>>,
    first_next: Mutex<Option<Instant>>,
    served: Mutex<Vec<Instant>>,
    answered: Mutex<Vec<(Instant, String)>>,
    errors: Mutex<Vec<String>>,
    done: Notify,
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
            .route("/2018-06-01/runtime/init/error", axum::routing::post(error))
            .with_state(shared.clone());
        let address = crate::serve(app).await.to_string();
        Self { address, shared }
    }

    /// Waits until every event was handed out and `/next` asked again, or an error was reported.
    pub async fn done(&self) {
        self.shared.done.notified().await
    }

    /// When the function first asked for an event (its init ended).
    pub fn first_next(&self) -> Option<Instant> {
        *self.shared.first_next.lock().unwrap()
    }

    /// When each event was handed out.
    pub fn served(&self) -> Vec<Instant> {
        self.shared.served.lock().unwrap().clone()
    }

    /// When each response came, with its body.
    pub fn answered(&self) -> Vec<(Instant, String)> {
        self.shared.answered.lock().unwrap().clone()
    }

    /// The response bodies so far.
    pub fn responses(&self) -> Vec<String> {
        self.answered().into_iter().map(|(_, b)| b).collect()
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
    shared
        .first_next
        .lock()
        .unwrap()
        .get_or_insert(Instant::now());
    let event = shared.events.lock().unwrap().pop_front();
    let Some(event) = event else {
        shared.done.notify_one();
        // Out of events: hold the function here until the caller ends it.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let n = {
        let mut served = shared.served.lock().unwrap();
        served.push(Instant::now());
        served.len()
    };
    let deadline = spigot_aws::now_ms() + 30_000;
    let mut headers = HeaderMap::new();
    headers.insert(
        "lambda-runtime-aws-request-id",
        format!("req-{n}").parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:spigot-test"
            .parse()
            .unwrap(),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793".parse().unwrap(),
    );
    headers.insert("content-type", "application/json".parse().unwrap());
    (headers, event)
}

async fn response(State(shared): State<Arc<Shared>>, body: Bytes) -> &'static str {
    shared
        .answered
        .lock()
        .unwrap()
        .push((Instant::now(), String::from_utf8_lossy(&body).into_owned()));
    "{}"
}

async fn error(State(shared): State<Arc<Shared>>, body: Bytes) -> &'static str {
    shared
        .errors
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    shared.done.notify_one();
    "{}"
}
