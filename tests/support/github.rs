//! A local HTTP server speaking GitHub's REST wire format for what Spigot
//! calls: the compare API (paginated with `Link`, per_page honoured up to its
//! own page size), app installation tokens, and its error bodies and
//! rate-limit headers. It records every call.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One call as the server saw it.
#[derive(Debug, Clone)]
pub struct GitHubCall {
    /// `METHOD /path?query`.
    pub request: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The `X-GitHub-Api-Version` header.
    pub api_version: Option<String>,
}

/// How the compare endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareMode {
    /// The files, paginated.
    Files,
    /// 404 Not Found.
    NotFound,
    /// 403 with `X-RateLimit-Remaining: 0` and a reset an hour away.
    RateLimited,
    /// 429 with `Retry-After: 1` once, then the files.
    RetryAfterOnce,
}

#[derive(Debug)]
struct Shared {
    files: Vec<String>,
    page_size: usize,
    mode: Mutex<CompareMode>,
    calls: Mutex<Vec<GitHubCall>>,
}

/// The server.
#[derive(Debug, Clone)]
pub struct FakeGitHub {
    /// `http://127.0.0.1:port`
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeGitHub {
    /// Starts a server whose comparisons list `files`, `page_size` a page.
    pub async fn start(files: &[&str], page_size: usize) -> Self {
        let shared = Arc::new(Shared {
            files: files.iter().map(|f| f.to_string()).collect(),
            page_size,
            mode: Mutex::new(CompareMode::Files),
            calls: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route(
                "/repos/{owner}/{repo}/compare/{basehead}",
                axum::routing::get(compare),
            )
            .route(
                "/app/installations/{id}/access_tokens",
                axum::routing::post(installation_token),
            )
            .with_state(shared.clone());
        let url = format!("http://{}", crate::serve(app).await);
        Self { url, shared }
    }

    /// Switches how the compare endpoint answers.
    pub fn set_mode(&self, mode: CompareMode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<GitHubCall> {
        self.shared.calls.lock().unwrap().clone()
    }
}

fn record(shared: &Shared, request: String, headers: &HeaderMap) {
    record_call(&shared.calls, request, headers);
}

/// Appends a call with its headers to `calls`.
pub(crate) fn record_call(calls: &Mutex<Vec<GitHubCall>>, request: String, headers: &HeaderMap) {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    calls.lock().unwrap().push(GitHubCall {
        request,
        authorization: h("authorization"),
        accept: h("accept"),
        api_version: h("x-github-api-version"),
    });
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn compare(
    AxState(shared): AxState<Arc<Shared>>,
    Path((owner, repo, basehead)): Path<(String, String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per_page: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    record(
        &shared,
        format!("GET /repos/{owner}/{repo}/compare/{basehead}?page={page}"),
        &headers,
    );
    let mode = shared.mode.lock().unwrap().clone();
    match mode {
        CompareMode::NotFound => {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/commits/commits#compare-two-commits"}),
            );
        }
        CompareMode::RateLimited => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600;
            return (
                StatusCode::FORBIDDEN,
                [
                    ("content-type", "application/json".to_string()),
                    ("x-ratelimit-limit", "5000".to_string()),
                    ("x-ratelimit-remaining", "0".to_string()),
                    ("x-ratelimit-reset", reset.to_string()),
                ],
                serde_json::json!({"message": "API rate limit exceeded"}).to_string(),
            )
                .into_response();
        }
        CompareMode::RetryAfterOnce => {
            *shared.mode.lock().unwrap() = CompareMode::Files;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("content-type", "application/json"), ("retry-after", "1")],
                serde_json::json!({"message": "You have exceeded a secondary rate limit"})
                    .to_string(),
            )
                .into_response();
        }
        CompareMode::Files => {}
    }
    let size = per_page.min(shared.page_size).max(1);
    let chunk: Vec<_> = shared
        .files
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|f| serde_json::json!({"filename": f, "status": "modified"}))
        .collect();
    let body =
        serde_json::json!({"status": "ahead", "total_commits": 1, "commits": [], "files": chunk});
    let mut resp = json(StatusCode::OK, body);
    if page * size < shared.files.len() {
        let next = format!(
            "<{}/repos/{owner}/{repo}/compare/{basehead}?per_page={per_page}&page={}>; rel=\"next\"",
            headers
                .get("host")
                .map(|h| format!("http://{}", h.to_str().unwrap_or("")))
                .unwrap_or_default(),
            page + 1
        );
        resp.headers_mut().insert("link", next.parse().unwrap());
    }
    resp
}

async fn installation_token(
    AxState(shared): AxState<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(
        &shared,
        format!("POST /app/installations/{id}/access_tokens"),
        &headers,
    );
    json(
        StatusCode::CREATED,
        serde_json::json!({"token": format!("ghs_installation_{id}"), "expires_at": "2099-01-01T00:00:00Z"}),
    )
}

/// A fresh RSA-2048 key (PKCS#1 PEM) for a GitHub App, made by openssl.
pub fn app_key_pem() -> String {
    let dir = std::env::temp_dir().join(crate::moto::unique("app-key"));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .status()
        .expect("openssl makes the test key");
    assert!(ok.success());
    std::fs::read_to_string(&key).unwrap()
}
