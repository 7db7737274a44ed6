//! Test harness: a moto server on loopback, local stacks in it, and a
//! switchable fake target that records every request.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use aws_lambda_events::http::HeaderValue;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, Uri};
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::local::LocalStack;
use spigot_core::signature::sign_sha256;

/// The secret every test payload is signed with.
pub const SECRET: &str = "spigot-test-secret";

/// The endpoint of a moto server: `MOTO_ENDPOINT`, or one started for this test process.
pub fn moto() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(e) = std::env::var("MOTO_ENDPOINT") {
            return e;
        }
        let port = free_port();
        let python = python();
        // The shell watches this test process and stops moto when it ends.
        let script = format!(
            "{python} -m moto.server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & M=$!; \
             trap 'kill $M 2>/dev/null' EXIT; \
             while kill -0 {pid} 2>/dev/null && kill -0 $M 2>/dev/null; do sleep 0.5; done",
            pid = std::process::id()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot start sh for moto");
        std::thread::spawn(move || child.wait());
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port} with {python}; run `make venv` or set MOTO_ENDPOINT"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        format!("http://127.0.0.1:{port}")
    })
}

/// The Python that has moto: `SPIGOT_PYTHON`, the project's `.venv`, or `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("SPIGOT_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
    if std::path::Path::new(venv).exists() {
        return venv.to_string();
    }
    "python3".to_string()
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A name no other test uses: `t<nanos><n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{nanos:x}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// SDK config for the moto server.
pub async fn sdk() -> SdkConfig {
    spigot_aws::sdk_config(Some(moto())).await
}

/// A fresh local stack in moto.
pub async fn stack() -> (SdkConfig, LocalStack) {
    let sdk = sdk().await;
    let stack = spigot_aws::local::provision(&sdk, moto(), &unique("t"))
        .await
        .expect("provision local stack in moto");
    (sdk, stack)
}

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

/// A local HTTP target whose answer can be switched, recording every POST.
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
    rule: Mutex<Option<Rule>>,
}

impl FakeTarget {
    /// Starts a target answering 200.
    pub async fn start() -> Self {
        let state = Arc::new(TargetState::default());
        state.status.store(200, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(record)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
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
) -> StatusCode {
    let default = state.status.load(Ordering::SeqCst);
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return StatusCode::from_u16(default).unwrap();
    }
    let n = state.seen.fetch_add(1, Ordering::SeqCst) + 1;
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
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
    StatusCode::from_u16(status).unwrap()
}

/// A GitHub-style push payload for `repo`, with a marker to tell hooks apart.
pub fn push_payload(repo: &str, marker: &str) -> String {
    serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": "1111111111111111111111111111111111111111",
        "repository": {"name": repo.split('/').nth(1).unwrap_or(repo), "full_name": repo},
        "commits": [{"id": "1111111111111111111111111111111111111111", "added": [], "modified": ["README.md"], "removed": []}],
        "marker": marker,
    })
    .to_string()
}

/// An API Gateway proxy request as GitHub's hook would arrive, signed with [`SECRET`].
pub fn signed_request(
    event: &str,
    delivery: &str,
    body: &[u8],
    state: Option<&str>,
) -> ApiGatewayProxyRequest {
    let mut req = ApiGatewayProxyRequest::default();
    for (k, v) in [
        ("X-GitHub-Event", event.to_string()),
        ("X-GitHub-Delivery", delivery.to_string()),
        ("X-GitHub-Hook-ID", "4242".to_string()),
        ("X-Hub-Signature-256", sign_sha256(SECRET.as_bytes(), body)),
        ("Content-Type", "application/json".to_string()),
        ("User-Agent", "GitHub-Hookshot/abc123".to_string()),
    ] {
        req.headers.insert(k, HeaderValue::from_str(&v).unwrap());
    }
    match std::str::from_utf8(body) {
        Ok(text) => req.body = Some(text.to_string()),
        Err(_) => {
            use base64::Engine;
            req.body = Some(base64::engine::general_purpose::STANDARD.encode(body));
            req.is_base64_encoded = true;
        }
    }
    if let Some(s) = state {
        req.stage_variables.insert("spigot_state".into(), s.into());
    }
    req
}

/// Every message body in a queue with its attributes. Receives with a hold until
/// the queue gives nothing more (FIFO groups included), then releases them all.
pub async fn peek_all(
    sdk: &SdkConfig,
    queue_url: &str,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(sdk);
    let held = receive_held(&sqs, queue_url, false).await;
    for m in &held {
        let _ = sqs
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
            .visibility_timeout(0)
            .send()
            .await;
    }
    held.into_iter().map(body_and_attributes).collect()
}

/// Receives with a hold until the queue gives nothing more; with `delete`, deletes each as it comes.
async fn receive_held(
    sqs: &spigot_aws::aws_sdk_sqs::Client,
    queue_url: &str,
    delete: bool,
) -> Vec<spigot_aws::aws_sdk_sqs::types::Message> {
    let mut seen = Vec::new();
    loop {
        let msgs = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if msgs.is_empty() {
            return seen;
        }
        for m in msgs {
            if delete {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                    .send()
                    .await
                    .unwrap();
            }
            seen.push(m);
        }
    }
}

fn body_and_attributes(
    m: spigot_aws::aws_sdk_sqs::types::Message,
) -> (String, std::collections::HashMap<String, String>) {
    let attrs = m
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
        .collect();
    (m.body.unwrap_or_default(), attrs)
}

/// `ApproximateNumberOfMessages` + `...NotVisible` of a queue.
pub async fn depth(sdk: &SdkConfig, queue_url: &str) -> (u64, u64) {
    use spigot_aws::aws_sdk_sqs::types::QueueAttributeName as A;
    let out = spigot_aws::aws_sdk_sqs::Client::new(sdk)
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes.unwrap_or_default();
    let get = |a: A| attrs.get(&a).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        get(A::ApproximateNumberOfMessages),
        get(A::ApproximateNumberOfMessagesNotVisible),
    )
}

/// The receiver Lambda's handler over the real adapters of a local stack.
pub type RealReceiver = spigot_receiver::Receiver<
    spigot_aws::SqsBuffer,
    spigot_aws::S3Payloads,
    spigot_aws::HttpTarget,
    spigot_aws::SqsEvalQueue,
>;

/// A receiver on `stack` forwarding to `target_url` with `timeout_ms`.
pub fn receiver(
    sdk: &SdkConfig,
    stack: &LocalStack,
    target_url: &str,
    timeout_ms: u64,
) -> RealReceiver {
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(sdk);
    spigot_receiver::Receiver {
        buffer: spigot_aws::SqsBuffer::new(sqs.clone(), &stack.buffer_url, &stack.buffer_dlq_url),
        payloads: Some(spigot_aws::S3Payloads::new(
            spigot_aws::s3_client(sdk),
            &stack.bucket,
        )),
        target: Some(
            spigot_aws::HttpTarget::new(
                target_url,
                Default::default(),
                spigot_core::config::origin(target_url),
                Duration::from_millis(timeout_ms),
            )
            .unwrap(),
        ),
        eval: Some(spigot_aws::SqsEvalQueue::new(sqs, &stack.eval_url)),
        verifier: spigot_core::Verifier::new(
            Some(spigot_core::Secrets::parse(SECRET).unwrap()),
            false,
        ),
        claim_check_bytes: 262_144,
    }
}

/// Loads a file of `events/`.
pub fn event_file(name: &str) -> ApiGatewayProxyRequest {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Loads a file of `tests/fixtures/` as bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The status and JSON body of a proxy response.
pub fn answer(
    resp: &aws_lambda_events::apigw::ApiGatewayProxyResponse,
) -> (i64, serde_json::Value) {
    let body = match &resp.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => serde_json::from_str(t).unwrap(),
        _ => serde_json::Value::Null,
    };
    (resp.status_code, body)
}

/// The drainer over the real adapters of a local stack.
pub type RealDrainer = spigot_drainer::Drainer<
    RecordingBuffer,
    spigot_aws::S3Payloads,
    spigot_aws::HttpTarget,
    spigot_aws::StageSwitch,
>;

/// Drain settings for tests: short backoff so retries come back within seconds.
pub fn test_engine_config(
    concurrency: usize,
    timeout_ms: u64,
) -> spigot_drainer::engine::EngineConfig {
    spigot_drainer::engine::EngineConfig {
        concurrency,
        breaker_threshold: 3,
        wait_seconds: 0,
        stop_before: Duration::from_millis(timeout_ms + 500),
        until_empty: true,
        heartbeat: None,
        backoff_base: 1,
        backoff_cap: 2,
    }
}

/// A drainer on `stack` delivering to `target_url`.
pub fn drainer(
    sdk: &SdkConfig,
    stack: &LocalStack,
    target_url: &str,
    concurrency: usize,
) -> RealDrainer {
    spigot_drainer::Drainer {
        engine: spigot_drainer::engine::Engine {
            buffer: RecordingBuffer::new(spigot_aws::SqsBuffer::new(
                spigot_aws::aws_sdk_sqs::Client::new(sdk),
                &stack.buffer_url,
                &stack.buffer_dlq_url,
            )),
            payloads: Some(spigot_aws::S3Payloads::new(
                spigot_aws::s3_client(sdk),
                &stack.bucket,
            )),
            target: spigot_aws::HttpTarget::new(
                target_url,
                Default::default(),
                spigot_core::config::origin(target_url),
                Duration::from_millis(2000),
            )
            .unwrap(),
            config: test_engine_config(concurrency, 2000),
        },
        switch: switch(sdk, stack),
    }
}

/// The stage switch of a local stack.
pub fn switch(sdk: &SdkConfig, stack: &LocalStack) -> spigot_aws::StageSwitch {
    spigot_aws::StageSwitch::new(
        spigot_aws::aws_sdk_apigateway::Client::new(sdk),
        &stack.api_id,
        &stack.stage,
    )
}

/// A buffer that records the `ApproximateReceiveCount` of everything it receives.
pub struct RecordingBuffer {
    inner: spigot_aws::SqsBuffer,
    /// Receive counts seen, in order.
    pub receive_counts: Mutex<Vec<u32>>,
}

impl RecordingBuffer {
    /// Wraps `inner`.
    pub fn new(inner: spigot_aws::SqsBuffer) -> Self {
        Self {
            inner,
            receive_counts: Mutex::new(Vec::new()),
        }
    }
}

impl spigot_core::ports::Buffer for RecordingBuffer {
    async fn send(&self, e: &spigot_core::Envelope) -> Result<(), spigot_core::ports::PortError> {
        self.inner.send(e).await
    }
    async fn receive(
        &self,
        max: i32,
        wait: i32,
    ) -> Result<Vec<spigot_core::ports::Received>, spigot_core::ports::PortError> {
        let got = self.inner.receive(max, wait).await?;
        self.receive_counts
            .lock()
            .unwrap()
            .extend(got.iter().map(|m| m.receive_count));
        Ok(got)
    }
    async fn delete(&self, r: &[String]) -> Result<(), spigot_core::ports::PortError> {
        self.inner.delete(r).await
    }
    async fn set_visibility(&self, r: &str, s: i32) -> Result<(), spigot_core::ports::PortError> {
        self.inner.set_visibility(r, s).await
    }
    async fn dead_letter(
        &self,
        l: &spigot_core::ports::DeadLetter,
    ) -> Result<(), spigot_core::ports::PortError> {
        self.inner.dead_letter(l).await
    }
}

/// Sets a queue attribute (a short visibility timeout for crash tests, say).
pub async fn set_visibility_timeout(sdk: &SdkConfig, queue_url: &str, seconds: u32) {
    spigot_aws::aws_sdk_sqs::Client::new(sdk)
        .set_queue_attributes()
        .queue_url(queue_url)
        .attributes(
            spigot_aws::aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            seconds.to_string(),
        )
        .send()
        .await
        .unwrap();
}

/// The ledger of a scenario: what went in and what came out at the target.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Delivery ids sent in, in order, with their repository and body.
    pub sent: Vec<(String, String, Vec<u8>)>,
}

impl Ledger {
    /// Sends `n` hooks across `repos` through the receiver (spigot state `state`).
    pub async fn send_round_robin(
        &mut self,
        r: &RealReceiver,
        n: usize,
        repos: &[&str],
        state: &str,
    ) {
        for i in 0..n {
            let repo = repos[i % repos.len()];
            let delivery = unique("h");
            let body = push_payload(repo, &format!("{i}")).into_bytes();
            let (status, json) = answer(
                &r.handle(&signed_request("push", &delivery, &body, Some(state)), 1)
                    .await,
            );
            assert!(status == 202 || status == 200, "hook {i}: {status} {json}");
            self.sent.push((delivery, repo.to_string(), body));
        }
    }

    /// Checks the target's log against the ledger: every hook delivered byte-identical,
    /// in send order within each repository. Returns (delivered distinct, duplicates).
    pub fn check(&self, got: &[Recorded], expect_missing: &[String]) -> (usize, usize) {
        let mut seen = std::collections::HashMap::new();
        let mut duplicates = 0;
        let mut last_index: std::collections::HashMap<String, usize> = Default::default();
        for rec in got {
            let id = rec.header("x-github-delivery").unwrap().to_string();
            let (index, (_, repo, body)) = self
                .sent
                .iter()
                .enumerate()
                .find(|(_, (d, _, _))| *d == id)
                .unwrap_or_else(|| panic!("target got unknown delivery {id}"));
            assert_eq!(&rec.body, body, "delivery {id} not byte-identical");
            if seen.insert(id.clone(), ()).is_some() {
                duplicates += 1;
                continue;
            }
            if let Some(prev) = last_index.insert(repo.clone(), index) {
                assert!(
                    prev < index,
                    "repository {repo}: delivery {id} arrived out of order"
                );
            }
        }
        for (d, _, _) in &self.sent {
            if expect_missing.contains(d) {
                assert!(!seen.contains_key(d), "{d} should not have been delivered");
            } else {
                assert!(seen.contains_key(d), "hook {d} was lost");
            }
        }
        (seen.len(), duplicates)
    }
}

/// A local endpoint speaking CodePipeline's JSON wire protocol (awsJson1_1),
/// recording every request; moto does not implement StartPipelineExecution.
pub struct FakeCodePipeline {
    /// `http://127.0.0.1:port`
    pub url: String,
    state: Arc<PipelineState>,
}

#[derive(Default)]
struct PipelineState {
    requests: Mutex<Vec<(String, serde_json::Value)>>,
    unknown: Mutex<Vec<String>>,
    throttle: std::sync::atomic::AtomicBool,
}

impl FakeCodePipeline {
    /// Starts the endpoint.
    pub async fn start() -> Self {
        let state = Arc::new(PipelineState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(pipeline_api)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Self { url, state }
    }

    /// Pipelines that answer PipelineNotFoundException.
    pub fn set_unknown(&self, name: &str) {
        self.state.unknown.lock().unwrap().push(name.to_string());
    }

    /// Answer ThrottlingException to everything.
    pub fn set_throttle(&self, on: bool) {
        self.state.throttle.store(on, Ordering::SeqCst);
    }

    /// (X-Amz-Target, JSON body) of every request.
    pub fn requests(&self) -> Vec<(String, serde_json::Value)> {
        self.state.requests.lock().unwrap().clone()
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

async fn pipeline_api(
    AxState(state): AxState<Arc<PipelineState>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    state
        .requests
        .lock()
        .unwrap()
        .push((target.clone(), json.clone()));
    let ct = [("content-type", "application/x-amz-json-1.1")];
    let error = |kind: &str, msg: &str| {
        (
            StatusCode::BAD_REQUEST,
            ct,
            serde_json::json!({"__type": kind, "message": msg}).to_string(),
        )
            .into_response()
    };
    if target != "CodePipeline_20150709.StartPipelineExecution" {
        return error(
            "UnknownOperationException",
            "only StartPipelineExecution is spoken here",
        );
    }
    if state.throttle.load(Ordering::SeqCst) {
        return error("ThrottlingException", "Rate exceeded");
    }
    let name = json["name"].as_str().unwrap_or_default().to_string();
    if state.unknown.lock().unwrap().contains(&name) {
        return error(
            "PipelineNotFoundException",
            &format!("Account does not have a pipeline with name '{name}'"),
        );
    }
    let id = format!(
        "exec-{}",
        json["clientRequestToken"].as_str().unwrap_or("none")
    );
    (
        StatusCode::OK,
        ct,
        serde_json::json!({"pipelineExecutionId": id}).to_string(),
    )
        .into_response()
}

/// Every message of a queue as an SQS Lambda event (deleted from the queue).
pub async fn take_as_sqs_event(
    sdk: &SdkConfig,
    queue_url: &str,
) -> aws_lambda_events::sqs::SqsEvent {
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(sdk);
    let mut event = aws_lambda_events::sqs::SqsEvent::default();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let msgs = out.messages.unwrap_or_default();
        if msgs.is_empty() {
            return event;
        }
        for m in msgs {
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .send()
                .await
                .unwrap();
            let mut rec = aws_lambda_events::sqs::SqsMessage::default();
            rec.message_id = m.message_id;
            rec.body = m.body;
            event.records.push(rec);
        }
    }
}

/// Every message of a queue, taken out of it (received and deleted): unlike
/// [`peek_all`], this sees all of a FIFO queue, whose groups lock behind
/// messages in flight. For the end of a test.
pub async fn take_all(
    sdk: &SdkConfig,
    queue_url: &str,
) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(sdk);
    receive_held(&sqs, queue_url, true)
        .await
        .into_iter()
        .map(body_and_attributes)
        .collect()
}
