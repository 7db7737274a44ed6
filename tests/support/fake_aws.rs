//! One local endpoint for the AWS APIs moto lacks (CodePipeline
//! StartPipelineExecution, SQS StartMessageMoveTask, Lambda Invoke without
//! Docker): it speaks the services' wire formats, answers each operation from
//! a table keyed by `X-Amz-Target` (JSON protocols) or `METHOD /path` (REST
//! protocols), and records every call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use spigot_aws::aws_config::SdkConfig;

/// One call as the endpoint saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `X-Amz-Target`, or `METHOD /path` for REST protocols.
    pub operation: String,
    /// The request path.
    pub path: String,
    /// The body as text.
    pub body: String,
    /// The body as JSON (`Null` when it is not).
    pub json: serde_json::Value,
}

/// An answer: status, content type, body.
pub type Reply = (u16, &'static str, String);
type Rule = Box<dyn Fn(&Call) -> Option<Reply> + Send + Sync>;

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<Call>>,
    rules: Mutex<Vec<(String, Rule)>>,
}

/// The endpoint.
#[derive(Clone)]
pub struct FakeAws {
    /// `http://127.0.0.1:port`
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeAws {
    /// Starts an endpoint that answers `{}` to everything until told otherwise.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(shared.clone());
        let url = format!("http://{}", crate::serve(app).await);
        Self { url, shared }
    }

    /// Answers operations starting with `prefix` with `rule` (first matching rule that answers wins).
    pub fn on(
        &self,
        prefix: &str,
        rule: impl Fn(&Call) -> Option<Reply> + Send + Sync + 'static,
    ) -> &Self {
        self.shared
            .rules
            .lock()
            .unwrap()
            .push((prefix.to_string(), Box::new(rule)));
        self
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }
}

async fn serve(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let call = Call {
        operation: if target.is_empty() {
            format!("{method} {}", uri.path())
        } else {
            target.to_string()
        },
        path: uri.path().to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
        json: serde_json::from_slice(&body).unwrap_or_default(),
    };
    shared.calls.lock().unwrap().push(call.clone());
    let reply = shared
        .rules
        .lock()
        .unwrap()
        .iter()
        .filter(|(prefix, _)| call.operation.starts_with(prefix.as_str()))
        .find_map(|(_, rule)| rule(&call))
        .unwrap_or((200, "application/json", "{}".to_string()));
    let (status, content_type, text) = reply;
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", content_type)],
        text,
    )
        .into_response()
}

/// CodePipeline's JSON 1.1 protocol on a [`FakeAws`]: StartPipelineExecution with
/// unknown pipelines and throttling on demand; moto lacks it.
pub struct FakeCodePipeline {
    /// `http://127.0.0.1:port`
    pub url: String,
    aws: FakeAws,
    unknown: Arc<Mutex<Vec<String>>>,
    throttle: Arc<AtomicBool>,
    throttle_next: Arc<std::sync::atomic::AtomicUsize>,
}

const START: &str = "CodePipeline_20150709.StartPipelineExecution";

impl FakeCodePipeline {
    /// Starts the endpoint.
    pub async fn start() -> Self {
        let aws = FakeAws::start().await;
        let unknown = Arc::new(Mutex::new(Vec::<String>::new()));
        let throttle = Arc::new(AtomicBool::new(false));
        let error = |kind: &str, msg: &str| {
            let body = serde_json::json!({"__type": kind, "message": msg}).to_string();
            Some((400, "application/x-amz-json-1.1", body))
        };
        let throttle_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (u, t, next) = (unknown.clone(), throttle.clone(), throttle_next.clone());
        aws.on("", move |call| {
            if call.operation != START {
                return error(
                    "UnknownOperationException",
                    "only StartPipelineExecution is spoken here",
                );
            }
            let once = next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if t.load(Ordering::SeqCst) || once {
                return error("ThrottlingException", "Rate exceeded");
            }
            let name = call.json["name"].as_str().unwrap_or_default().to_string();
            if u.lock().unwrap().contains(&name) {
                return error(
                    "PipelineNotFoundException",
                    &format!("Account does not have a pipeline with name '{name}'"),
                );
            }
            let token = call.json["clientRequestToken"].as_str().unwrap_or("none");
            let body = serde_json::json!({"pipelineExecutionId": format!("exec-{token}")});
            Some((200, "application/x-amz-json-1.1", body.to_string()))
        });
        Self {
            url: aws.url.clone(),
            aws,
            unknown,
            throttle,
            throttle_next,
        }
    }

    /// Answer ThrottlingException to the next `n` starts only.
    pub fn throttle_next(&self, n: usize) {
        self.throttle_next.store(n, Ordering::SeqCst);
    }

    /// Pipelines that answer PipelineNotFoundException.
    pub fn set_unknown(&self, name: &str) {
        self.unknown.lock().unwrap().push(name.to_string());
    }

    /// Answer ThrottlingException to everything.
    pub fn set_throttle(&self, on: bool) {
        self.throttle.store(on, Ordering::SeqCst);
    }

    /// (X-Amz-Target, JSON body) of every request.
    pub fn requests(&self) -> Vec<(String, serde_json::Value)> {
        self.aws
            .calls()
            .into_iter()
            .map(|c| (c.operation, c.json))
            .collect()
    }

    /// Executions started: distinct `clientRequestToken`s of accepted starts
    /// (CodePipeline answers a repeated token with the same execution).
    pub fn executions(&self) -> usize {
        let mut tokens: Vec<String> = self
            .requests()
            .iter()
            .filter(|(op, _)| op == START)
            .filter_map(|(_, j)| j["clientRequestToken"].as_str().map(String::from))
            .collect();
        tokens.sort();
        tokens.dedup();
        tokens.len()
    }

    /// A client for this endpoint (no SDK retries, so each start is one request).
    pub fn client(&self, sdk: &SdkConfig) -> spigot_aws::CodePipelines {
        let conf = spigot_aws::aws_sdk_codepipeline::config::Builder::from(sdk)
            .endpoint_url(&self.url)
            .retry_config(
                spigot_aws::aws_sdk_codepipeline::config::retry::RetryConfig::standard()
                    .with_max_attempts(1),
            )
            .build();
        spigot_aws::CodePipelines::new(spigot_aws::aws_sdk_codepipeline::Client::from_conf(conf))
    }
}
