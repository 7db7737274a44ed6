//! A switchable local HTTP target that records every request.

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, Uri};

/// One request as the fake target saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    /// A header by name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Rule = Box<dyn Fn(&Recorded, usize) -> Option<u16> + Send + Sync>;

/// A local HTTP target whose answer can be switched, recording every POST
/// (a clone is a handle on the same target).
#[derive(Clone)]
pub struct FakeTarget {
    /// `http://127.0.0.1:port`
    pub url: String,
    state: Arc<TargetState>,
}

#[derive(Default)]
struct TargetState {
    status: AtomicU16,
    delay_ms: AtomicU64,
    seen: AtomicUsize,
    got: Mutex<Vec<Recorded>>,
    retry_after: AtomicU64,
    /// When each POST arrived, in order.
    times: Mutex<Vec<std::time::Instant>>,
    rule: Mutex<Option<Rule>>,
}

impl FakeTarget {
    /// Starts a target answering 200.
    pub async fn start() -> Self {
        let state = Arc::new(TargetState::default());
        state.status.store(200, Ordering::SeqCst);
        let app = axum::Router::new()
            .fallback(record)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        let url = format!("http://{}", crate::serve(app).await);
        Self { url, state }
    }

    /// Answers `status` from now on (health probes too).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Waits `ms` before answering a POST.
    pub fn set_delay_ms(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// A per-request rule (request, POST number from 1) → status, overriding the default when `Some`.
    pub fn set_rule(&self, rule: impl Fn(&Recorded, usize) -> Option<u16> + Send + Sync + 'static) {
        *self.state.rule.lock().unwrap() = Some(Box::new(rule));
    }

    /// Sends `Retry-After: seconds` with every 429 and 503 (0: none).
    pub fn set_retry_after(&self, seconds: u64) {
        self.state.retry_after.store(seconds, Ordering::SeqCst);
    }

    /// When each POST arrived, in arrival order.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.state.times.lock().unwrap().clone()
    }

    /// Every POST or PUT accepted with a 2xx, in arrival order.
    pub fn accepted(&self) -> Vec<Recorded> {
        self.state.got.lock().unwrap().clone()
    }

    /// How many POSTs arrived, whatever the answer.
    pub fn attempts(&self) -> usize {
        self.state.seen.load(Ordering::SeqCst)
    }
}

async fn record(
    AxState(state): AxState<Arc<TargetState>>,
    uri: Uri,
    headers: HeaderMap,
    method: axum::http::Method,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let default = state.status.load(Ordering::SeqCst);
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return StatusCode::from_u16(default).unwrap().into_response();
    }
    let n = state.seen.fetch_add(1, Ordering::SeqCst) + 1;
    state.times.lock().unwrap().push(std::time::Instant::now());
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
        at: std::time::Instant::now(),
    };
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = state
        .rule
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|r| r(&rec, n))
        .unwrap_or(default);
    if (200..300).contains(&status) {
        state.got.lock().unwrap().push(rec);
    }
    let retry_after = state.retry_after.load(Ordering::SeqCst);
    let code = StatusCode::from_u16(status).unwrap();
    if retry_after > 0 && (status == 429 || status == 503) {
        return (code, [("retry-after", retry_after.to_string())]).into_response();
    }
    code.into_response()
}
