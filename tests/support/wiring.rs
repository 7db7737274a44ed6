//! The handlers, built by their crates' `build` on a local stack, and the
//! requests GitHub would send them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use aws_lambda_events::http::HeaderValue;
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::local::LocalStack;
use spigot_core::ports::{Buffer, DeadLetter, PortError, QuietMetrics, Received};
use spigot_core::signature::sign_sha256;
use spigot_engine::EngineConfig;

/// The secret every test payload is signed with.
pub const SECRET: &str = "spigot-local-test-secret";

/// Which API Gateway event shape a request is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// REST API, payload 1.0.
    V1,
    /// HTTP API, payload 2.0.
    V2,
}

/// The same request as an HTTP API (payload 2.0) event: header names in
/// lower case, `version`, `routeKey`, `rawPath`, `requestContext.http`, no
/// `multiValueHeaders`; `stageVariables` left out when there are none.
pub fn as_http_api_event(req: &ApiGatewayProxyRequest) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    let stage = req.request_context.stage.clone().unwrap_or("live".into());
    let mut event = serde_json::json!({
        "version": "2.0",
        "routeKey": "POST /webhook",
        "rawPath": format!("/{stage}/webhook"),
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": req.request_context.apiid.clone().unwrap_or("abc123defg".into()),
            "domainName": "abc123defg.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123defg",
            "http": {
                "method": "POST",
                "path": format!("/{stage}/webhook"),
                "protocol": "HTTP/1.1",
                "sourceIp": "140.82.115.1",
                "userAgent": "GitHub-Hookshot/044aadd"
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "POST /webhook",
            "stage": stage,
            "time": "24/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1795521600000u64
        },
        "isBase64Encoded": req.is_base64_encoded,
    });
    if let Some(body) = &req.body {
        event["body"] = serde_json::Value::String(body.clone());
    }
    if !req.stage_variables.is_empty() {
        event["stageVariables"] = serde_json::to_value(&req.stage_variables).unwrap();
    }
    event
}

/// Sends `req` to the receiver in `shape` (through the event deserialiser the
/// Lambda uses); the answer's status and JSON body.
pub async fn exchange(
    r: &RealReceiver,
    shape: Shape,
    req: &ApiGatewayProxyRequest,
) -> (i64, serde_json::Value) {
    let event = match shape {
        Shape::V1 => serde_json::to_value(req).unwrap(),
        Shape::V2 => as_http_api_event(req),
    };
    let event: spigot_receiver::ApiEvent = serde_json::from_value(event).unwrap();
    assert_eq!(
        matches!(event, spigot_receiver::ApiEvent::Http(_)),
        shape == Shape::V2
    );
    let resp = r.handle_api_event(&event, 1).await;
    let text = serde_json::to_value(&resp).unwrap();
    // The response is in the event's shape (2.0 has `cookies`, 1.0 `multiValueHeaders`).
    assert_eq!(text.get("cookies").is_some(), shape == Shape::V2, "{text}");
    let body = resp
        .body()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (resp.status(), body)
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

/// The receiver Lambda's handler over the real adapters of a local stack.
pub type RealReceiver = spigot_receiver::AwsReceiver;

/// A receiver on `stack` forwarding to `target_url` with `timeout_ms`, built as
/// the Lambda builds it and running under the receiver's role (moto enforces it).
pub async fn receiver(
    sdk: &SdkConfig,
    stack: &LocalStack,
    target_url: &str,
    timeout_ms: u64,
) -> RealReceiver {
    let mut settings = stack.settings();
    settings.target_url = Some(target_url.to_string());
    settings.forward_timeout_ms = timeout_ms;
    settings.webhook_secret = Some(SECRET.to_string().into());
    let sdk = crate::as_principal(sdk, stack, crate::Principal::Receiver).await;
    let mut r = spigot_receiver::build(&sdk, &settings).await.unwrap();
    r.metrics = Arc::new(QuietMetrics);
    r
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

/// The drainer over the real adapters of a local stack, its buffer recording receive counts.
pub type RealDrainer = spigot_drainer::Drainer<
    RecordingBuffer,
    spigot_aws::S3Payloads,
    spigot_aws::HttpTarget,
    spigot_aws::StageSwitch,
>;

/// A drainer on `stack` delivering to `target_url`, built as the Lambda builds
/// it under the drainer's role (moto enforces it), with test backoffs.
pub async fn drainer(
    sdk: &SdkConfig,
    stack: &LocalStack,
    target_url: &str,
    concurrency: usize,
) -> RealDrainer {
    let role = crate::as_principal(sdk, stack, crate::Principal::Drainer).await;
    drainer_as(&role, stack, target_url, concurrency)
}

/// A drainer on `stack` whose AWS calls carry `role`'s credentials.
pub fn drainer_as(
    role: &SdkConfig,
    stack: &LocalStack,
    target_url: &str,
    concurrency: usize,
) -> RealDrainer {
    let mut settings = stack.settings();
    settings.target_url = Some(target_url.to_string());
    settings.forward_timeout_ms = 2000;
    let built = spigot_drainer::build(role, &settings).unwrap();
    let engine = built.engine;
    spigot_drainer::Drainer {
        engine: spigot_engine::Engine::new(
            RecordingBuffer::new(engine.buffer),
            engine.payloads,
            engine.target,
            EngineConfig::test(concurrency, Duration::from_millis(2000)),
        )
        .with_timeline(engine.timeline, engine.by),
        switch: built.switch,
        metrics: Arc::new(QuietMetrics),
        // The tests look at the runs after ON themselves.
        grace: Duration::ZERO,
        // And at the resume health window (drain.rs) themselves.
        resume: Duration::ZERO,
        steady: Default::default(),
        stop: None,
    }
}

/// The stage switch of a local stack.
pub fn switch(sdk: &SdkConfig, stack: &LocalStack) -> spigot_aws::StageSwitch {
    spigot_aws::StageSwitch::from_settings(sdk, &stack.settings()).unwrap()
}

/// A buffer that records the `ApproximateReceiveCount` of everything it receives.
pub struct RecordingBuffer {
    inner: spigot_aws::SqsBuffer,
    /// Receive counts seen, in order.
    pub receive_counts: Mutex<Vec<u32>>,
    /// The next this many dead-letter sends fail (a DLQ outage).
    pub failing_dead_letters: std::sync::atomic::AtomicUsize,
}

impl RecordingBuffer {
    /// Wraps `inner`.
    pub fn new(inner: spigot_aws::SqsBuffer) -> Self {
        Self {
            inner,
            receive_counts: Mutex::new(Vec::new()),
            failing_dead_letters: Default::default(),
        }
    }
}

impl Buffer for RecordingBuffer {
    async fn send(&self, e: &spigot_core::Envelope) -> Result<(), PortError> {
        self.inner.send(e).await
    }
    async fn receive(&self, max: i32, wait: i32) -> Result<Vec<Received>, PortError> {
        let got = self.inner.receive(max, wait).await?;
        self.receive_counts
            .lock()
            .unwrap()
            .extend(got.iter().map(|m| m.receive_count));
        Ok(got)
    }
    async fn delete(&self, r: &[String]) -> Result<(), PortError> {
        self.inner.delete(r).await
    }
    async fn set_visibility(&self, r: &str, s: i32) -> Result<(), PortError> {
        self.inner.set_visibility(r, s).await
    }
    async fn visibility_timeout(&self) -> Result<std::time::Duration, PortError> {
        self.inner.visibility_timeout().await
    }
    async fn depth(&self) -> Result<u64, PortError> {
        self.inner.depth().await
    }
    async fn dead_letter(&self, l: &DeadLetter) -> Result<(), PortError> {
        use std::sync::atomic::Ordering;
        let failing = &self.failing_dead_letters;
        if failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(PortError::new(
                "SQS SendMessage to the dead-letter queue failed: unreachable",
            ));
        }
        self.inner.dead_letter(l).await
    }
}
