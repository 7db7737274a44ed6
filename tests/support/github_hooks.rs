//! A local HTTP server speaking GitHub's hook-deliveries wire format
//! (`/repos/{o}/{r}/hooks/{id}/deliveries`, `/orgs/{org}/hooks/{id}/deliveries`,
//! `/app/hook/deliveries`): list (newest first, `cursor` pages through `Link`,
//! `per_page` honoured up to its own page size), get one (with the request's
//! headers and payload), and redeliver (`POST .../{id}/attempts` → 202), which
//! POSTs the stored hook, signed with the hook's secret, to the hook's URL as
//! GitHub would and records the outcome as a new attempt. It also delivers new
//! events the same way ([`FakeHooks::deliver`]), answers rate limits and 401s
//! on demand, sells a GitHub App installation tokens, and records every call (method, path, `Authorization`, `Accept`,
//! `X-GitHub-Api-Version`). Shapes follow `@octokit/openapi`
//! (`hook-delivery-item`, `hook-delivery`; see tests/fixtures/SOURCE.md).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::github::GitHubCall;

/// One attempt GitHub made, with what it sent.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The attempt's id.
    pub id: u64,
    /// The event's id (`X-GitHub-Delivery`).
    pub guid: String,
    /// The hook's deliveries path (`repos/o/n/hooks/1/deliveries`).
    pub hook: String,
    /// Seconds since the epoch.
    pub delivered_at: u64,
    /// A redelivery?
    pub redelivery: bool,
    /// What the hook's URL answered (0: no answer).
    pub status_code: u16,
    /// The event.
    pub event: String,
    /// The payload's `repository.full_name`.
    pub repository: Option<String>,
    /// The payload, as sent.
    pub body: Vec<u8>,
}

/// A fault the next matching call answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: 1`.
    TooManyRequests,
    /// 403 "secondary rate limit" with `Retry-After: 1`.
    SecondaryRateLimit,
}

#[derive(Debug, Default)]
struct Shared {
    attempts: Mutex<Vec<Attempt>>,
    calls: Mutex<Vec<GitHubCall>>,
    /// (is a POST, fault) queued for the next call of that kind.
    faults: Mutex<VecDeque<(bool, Fault)>>,
    unauthorized: Mutex<bool>,
    page_size: usize,
    /// The hook's URL and secret.
    url: String,
    secret: String,
}

/// The server.
#[derive(Debug, Clone)]
pub struct FakeHooks {
    /// `http://127.0.0.1:port` (`GITHUB_API_URL`).
    pub url: String,
    shared: Arc<Shared>,
}

/// Seconds since the epoch.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl FakeHooks {
    /// A GitHub whose hooks deliver to `hook_url`, signed with `secret`, listing `page_size` a page.
    pub async fn start(hook_url: &str, secret: &str, page_size: usize) -> Self {
        let shared = Arc::new(Shared {
            page_size,
            url: hook_url.to_string(),
            secret: secret.to_string(),
            ..Default::default()
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let url = format!("http://{}", crate::serve(app).await);
        Self { url, shared }
    }

    /// Records an attempt made `age` seconds ago without sending anything; its id.
    pub fn seed(
        &self,
        hook: &str,
        guid: &str,
        body: &[u8],
        status_code: u16,
        age: u64,
        redelivery: bool,
    ) -> u64 {
        let mut all = self.shared.attempts.lock().unwrap();
        let id = all.len() as u64 + 1000;
        all.push(Attempt {
            id,
            guid: guid.to_string(),
            hook: hook.to_string(),
            delivered_at: now_s() - age,
            redelivery,
            status_code,
            event: "push".into(),
            repository: repository_of(body),
            body: body.to_vec(),
        });
        id
    }

    /// Delivers a new `push` event now, as GitHub would; the status the hook answered (0: none).
    pub async fn deliver(&self, hook: &str, guid: &str, body: &[u8]) -> u16 {
        send(&self.shared, hook, guid, body, false).await
    }

    /// Queues a fault for the next GET (`post == false`) or POST.
    pub fn fault_next(&self, post: bool, fault: Fault) {
        self.shared.faults.lock().unwrap().push_back((post, fault));
    }

    /// Every call answers 401 Bad credentials while set.
    pub fn set_unauthorized(&self, yes: bool) {
        *self.shared.unauthorized.lock().unwrap() = yes;
    }

    /// Every attempt so far, in the order made.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.attempts.lock().unwrap().clone()
    }

    /// The redeliveries made so far.
    pub fn redeliveries(&self) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.redelivery)
            .collect()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<GitHubCall> {
        self.shared.calls.lock().unwrap().clone()
    }
}

fn repository_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["repository"]["full_name"].as_str().map(String::from)
}

/// POSTs the hook to its URL as GitHub does and records the attempt.
async fn send(shared: &Shared, hook: &str, guid: &str, body: &[u8], redelivery: bool) -> u16 {
    let hook_id = hook.split('/').rev().nth(1).unwrap_or("0").to_string();
    let answer = reqwest::Client::new()
        .post(&shared.url)
        .timeout(Duration::from_secs(10))
        .header("User-Agent", "GitHub-Hookshot/fake")
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", guid)
        .header("X-GitHub-Hook-ID", hook_id)
        .header(
            "X-Hub-Signature-256",
            spigot_core::signature::sign_sha256(shared.secret.as_bytes(), body),
        )
        .body(body.to_vec())
        .send()
        .await;
    let status_code = answer.map(|r| r.status().as_u16()).unwrap_or(0);
    let mut all = shared.attempts.lock().unwrap();
    let id = all.len() as u64 + 1000;
    all.push(Attempt {
        id,
        guid: guid.to_string(),
        hook: hook.to_string(),
        delivered_at: now_s(),
        redelivery,
        status_code,
        event: "push".into(),
        repository: repository_of(body),
        body: body.to_vec(),
    });
    status_code
}

fn item(a: &Attempt) -> serde_json::Value {
    let at = spigot_core::time::format_rfc3339(a.delivered_at);
    json!({
        "id": a.id,
        "guid": a.guid,
        "delivered_at": at,
        "redelivery": a.redelivery,
        "duration": 0.05,
        "status": match a.status_code { 0 => "failed to connect", s if (200..300).contains(&s) => "OK", _ => "Invalid HTTP Response" },
        "status_code": a.status_code,
        "event": a.event,
        "action": null,
        "installation_id": null,
        "repository_id": 4242,
        "throttled_at": null,
    })
}

fn answer(
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: serde_json::Value,
) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for (k, v) in headers {
        resp.headers_mut().insert(*k, v.parse().unwrap());
    }
    resp
}

async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    _body: Bytes,
) -> Response {
    crate::github::record_call(&shared.calls, format!("{method} {uri}"), &headers);
    let path = uri.path().trim_start_matches('/');
    // A GitHub App's installation token, bought with its JWT.
    if let Some(id) = path
        .strip_prefix("app/installations/")
        .and_then(|p| p.strip_suffix("/access_tokens"))
        && method == Method::POST
    {
        return answer(
            StatusCode::CREATED,
            &[],
            json!({"token": format!("ghs_installation_{id}"), "expires_at": "2099-01-01T00:00:00Z"}),
        );
    }
    let Some(at) = path.find("deliveries") else {
        return answer(StatusCode::NOT_FOUND, &[], json!({"message": "Not Found"}));
    };
    let hook = &path[..at + "deliveries".len()];
    let rest: Vec<&str> = path[at + "deliveries".len()..]
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if *shared.unauthorized.lock().unwrap() || !auth.starts_with("Bearer ") {
        return answer(
            StatusCode::UNAUTHORIZED,
            &[],
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        );
    }
    // The app's own hook takes the app's JWT, not an installation token.
    if hook.starts_with("app/") && auth.matches('.').count() != 2 {
        return answer(
            StatusCode::UNAUTHORIZED,
            &[],
            json!({"message": "A JSON web token could not be decoded"}),
        );
    }
    let post = method == Method::POST;
    let fault = {
        let mut faults = shared.faults.lock().unwrap();
        match faults.front() {
            Some((p, _)) if *p == post => faults.pop_front().map(|(_, f)| f),
            _ => None,
        }
    };
    match fault {
        Some(Fault::TooManyRequests) => {
            return answer(
                StatusCode::TOO_MANY_REQUESTS,
                &[("retry-after", "1".into())],
                json!({"message": "API rate limit exceeded"}),
            );
        }
        Some(Fault::SecondaryRateLimit) => {
            return answer(
                StatusCode::FORBIDDEN,
                &[
                    ("retry-after", "1".into()),
                    ("x-ratelimit-remaining", "4000".into()),
                ],
                json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}),
            );
        }
        None => {}
    }
    let query: std::collections::HashMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let find = |id: &str| {
        let id: u64 = id.parse().ok()?;
        shared
            .attempts
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.id == id && a.hook == hook)
            .cloned()
    };
    match (post, rest.as_slice()) {
        (false, []) => list(&shared, hook, &query, &headers),
        (false, [id]) => match find(id) {
            Some(a) => {
                let mut v = item(&a);
                v["url"] = json!(shared.url);
                v["request"] = json!({
                    "headers": {"X-GitHub-Delivery": a.guid, "X-GitHub-Event": a.event, "content-type": "application/json"},
                    "payload": serde_json::from_slice::<serde_json::Value>(&a.body).unwrap_or_default(),
                });
                v["response"] = json!({"headers": {}, "payload": ""});
                answer(StatusCode::OK, &[], v)
            }
            None => answer(StatusCode::NOT_FOUND, &[], json!({"message": "Not Found"})),
        },
        (true, [id, "attempts"]) => match find(id) {
            Some(a) => {
                // Redelivered before answering: the test sees its outcome at once.
                send(&shared, hook, &a.guid, &a.body, true).await;
                answer(StatusCode::ACCEPTED, &[], json!({}))
            }
            None => answer(StatusCode::NOT_FOUND, &[], json!({"message": "Not Found"})),
        },
        _ => answer(StatusCode::NOT_FOUND, &[], json!({"message": "Not Found"})),
    }
}

fn list(
    shared: &Shared,
    hook: &str,
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let per_page: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let size = per_page.min(shared.page_size).max(1);
    let mut all: Vec<Attempt> = shared
        .attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.hook == hook)
        .cloned()
        .collect();
    all.sort_by_key(|a| std::cmp::Reverse((a.delivered_at, a.id)));
    // The cursor names the last item of the previous page.
    let start = match query.get("cursor").and_then(|c| c.strip_prefix("v1_")) {
        Some(id) => match all.iter().position(|a| a.id.to_string() == id) {
            Some(i) => i + 1,
            None => {
                return answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &[],
                    json!({"message": "Invalid cursor"}),
                );
            }
        },
        None => 0,
    };
    let page: Vec<&Attempt> = all.iter().skip(start).take(size).collect();
    let body = serde_json::Value::Array(page.iter().map(|a| item(a)).collect());
    let mut extra = Vec::new();
    if start + size < all.len()
        && let Some(last) = page.last()
    {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        extra.push((
            "link",
            format!(
                "<http://{host}/{hook}?per_page={per_page}&cursor=v1_{}>; rel=\"next\"",
                last.id
            ),
        ));
    }
    answer(StatusCode::OK, &extra, body)
}
