//! The receiver: API Gateway proxy event -> verify -> forward or buffer.
//!
//! [`Receiver::handle`] is generic over core's ports, so the same code runs
//! in Lambda, in `spigot dev`, and in tests (against moto or in memory).

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use aws_lambda_events::encodings::Body as ResponseBody;
use aws_lambda_events::http::HeaderValue;
use serde_json::json;
use spigot_core::Verifier;
use spigot_core::delivery::Delivery;
use spigot_core::envelope::Envelope;
use spigot_core::metrics::Metrics;
use spigot_core::ports::{Buffer, DeadLetter, EvalQueue, PayloadStore, Target};
use spigot_core::spigot::{STAGE_VARIABLE, State};
use spigot_core::webhook::{self, Hook};

/// Claim-check prefix of buffered bodies (the drainer deletes them after delivery).
pub const BUFFER_PAYLOADS: &str = "payloads/";
/// Claim-check prefix of bodies on their way to the evaluator.
pub const EVAL_PAYLOADS: &str = "payloads/eval/";

/// The receiver and the ports it drives.
pub struct Receiver<B, P, T, E> {
    /// The FIFO buffer (and its dead-letter queue).
    pub buffer: B,
    /// Claim-check storage; `None` answers 413 to hooks too large for a message.
    pub payloads: Option<P>,
    /// The target; `None` in pull mode (every hook is buffered for the relay).
    pub target: Option<T>,
    /// The evaluation queue for push events; `None` when pipelines are not used.
    pub eval: Option<E>,
    /// Signature verification.
    pub verifier: Verifier,
    /// Envelopes larger than this keep their body in the payload store.
    pub claim_check_bytes: usize,
}

/// What happened to one request, for the response and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Buffered,
    DeadLettered,
    Pong,
    Unauthorized,
    BadRequest,
    TooLarge,
    Unavailable,
}

impl Outcome {
    fn metric(self) -> &'static str {
        match self {
            Outcome::Delivered => "Forwarded",
            Outcome::Buffered => "Buffered",
            Outcome::DeadLettered => "DeadLettered",
            Outcome::Pong => "Pings",
            Outcome::Unauthorized => "Unauthorized",
            Outcome::BadRequest => "BadRequests",
            Outcome::TooLarge => "TooLarge",
            Outcome::Unavailable => "BufferErrors",
        }
    }
}

impl<B, P, T, E> Receiver<B, P, T, E>
where
    B: Buffer,
    P: PayloadStore,
    T: Target,
    E: EvalQueue,
{
    /// Handles one webhook request received at `now_ms`.
    pub async fn handle(
        &self,
        req: &ApiGatewayProxyRequest,
        now_ms: u64,
    ) -> ApiGatewayProxyResponse {
        let (outcome, status, body) = self.process(req, now_ms).await;
        println!(
            "{}",
            Metrics::new("receiver")
                .count(outcome.metric(), 1)
                .line(now_ms)
        );
        respond(status, body)
    }

    async fn process(
        &self,
        req: &ApiGatewayProxyRequest,
        now_ms: u64,
    ) -> (Outcome, u16, serde_json::Value) {
        let bad = |outcome: Outcome, status: u16, error: String| {
            (
                outcome,
                status,
                json!({"status": "rejected", "error": error}),
            )
        };
        let body = match webhook::decode_body(req.body.as_deref(), req.is_base64_encoded) {
            Ok(b) => b,
            Err(e) => return bad(Outcome::BadRequest, 400, e.to_string()),
        };
        let headers: Vec<(&str, &str)> = req
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
            .collect();
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let delivery_hint = find("x-github-delivery")
            .unwrap_or("-")
            .chars()
            .take(64)
            .collect::<String>();
        if let Err(e) =
            self.verifier
                .verify(&body, find("x-hub-signature-256"), find("x-hub-signature"))
        {
            tracing::warn!(delivery = %delivery_hint, error = %e, "refused: bad signature");
            return bad(Outcome::Unauthorized, 401, e.to_string());
        }
        let hook = match Hook::read(headers.iter().copied(), body, now_ms) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(delivery = %delivery_hint, error = %e, "refused: unreadable hook");
                return bad(Outcome::BadRequest, 400, e.to_string());
            }
        };
        let (delivery, event) = (hook.delivery.clone(), hook.event.clone());
        tracing::info!(%delivery, %event, repository = ?hook.repository, bytes = hook.body.len(), "received");
        if hook.event == "ping" {
            return (
                Outcome::Pong,
                200,
                json!({"status": "pong", "delivery": delivery}),
            );
        }
        if let (true, Some(eval)) = (hook.event == "push", &self.eval) {
            let sent = match self.envelope(&hook, EVAL_PAYLOADS).await {
                Ok(env) => eval.enqueue(&env).await.map_err(|e| e.to_string()),
                Err(r) => Err(r.1),
            };
            if let Err(e) = sent {
                tracing::error!(%delivery, error = %e, "cannot queue push for pipeline evaluation");
                return (
                    Outcome::Unavailable,
                    503,
                    json!({"status": "error", "delivery": delivery,
                           "error": format!("cannot queue the push for pipeline evaluation ({e}); redeliver it from GitHub")}),
                );
            }
        }
        let state =
            State::from_stage_variable(req.stage_variables.get(STAGE_VARIABLE).map(String::as_str));
        let target = match (&state, &self.target) {
            (Ok(State::On), Some(t)) => t,
            (Err(e), _) => {
                tracing::error!(%delivery, error = %e, "spigot state unreadable; buffering to be safe");
                return self.buffer(hook, None).await;
            }
            _ => return self.buffer(hook, None).await,
        };
        match target.deliver(&hook).await {
            Delivery::Delivered(status) => {
                tracing::info!(%delivery, status, "forwarded");
                (
                    Outcome::Delivered,
                    200,
                    json!({"status": "delivered", "delivery": delivery}),
                )
            }
            Delivery::Retryable(f) => {
                tracing::warn!(%delivery, reason = %f.reason, "target unavailable; buffering");
                self.buffer(hook, Some(f.reason)).await
            }
            Delivery::Permanent(f) => self.dead_letter(hook, f.reason, f.status).await,
        }
    }

    /// The envelope of `hook`, its body claim-checked under `prefix` when too large.
    async fn envelope(&self, hook: &Hook, prefix: &str) -> Result<Envelope, (u16, String)> {
        let mut env = Envelope::from_hook(hook);
        let size = env.encoded_len();
        if size <= self.claim_check_bytes {
            return Ok(env);
        }
        let Some(store) = &self.payloads else {
            return Err((
                413,
                format!(
                    "payload of {} bytes is larger than CLAIM_CHECK_BYTES={} and no CONFIG_BUCKET is set for claim-checks",
                    hook.body.len(),
                    self.claim_check_bytes
                ),
            ));
        };
        let key = env.check_body(prefix, hook.body.len() as u64);
        store
            .put(&key, hook.body.clone())
            .await
            .map_err(|e| (503, format!("cannot store the payload: {e}")))?;
        Ok(env)
    }

    async fn buffer(
        &self,
        hook: Hook,
        reason: Option<String>,
    ) -> (Outcome, u16, serde_json::Value) {
        let delivery = hook.delivery.clone();
        let result = match self.envelope(&hook, BUFFER_PAYLOADS).await {
            Ok(env) => self
                .buffer
                .send(&env)
                .await
                .map_err(|e| (503, e.to_string())),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(%delivery, "buffered");
                let mut body = json!({"status": "buffered", "delivery": delivery});
                if let Some(r) = reason {
                    body["reason"] = json!(r);
                }
                (Outcome::Buffered, 202, body)
            }
            Err((status, e)) => {
                tracing::error!(%delivery, error = %e, "cannot buffer");
                let outcome = if status == 413 {
                    Outcome::TooLarge
                } else {
                    Outcome::Unavailable
                };
                let error = if status == 413 {
                    e
                } else {
                    format!("cannot buffer the hook ({e}); redeliver it from GitHub")
                };
                (
                    outcome,
                    status,
                    json!({"status": "error", "delivery": delivery, "error": error}),
                )
            }
        }
    }

    async fn dead_letter(
        &self,
        hook: Hook,
        reason: String,
        status: Option<u16>,
    ) -> (Outcome, u16, serde_json::Value) {
        let delivery = hook.delivery.clone();
        tracing::warn!(%delivery, %reason, "target refused the hook; dead-lettering");
        let result = match self.envelope(&hook, BUFFER_PAYLOADS).await {
            Ok(mut env) => {
                env.resend(Some(reason.clone()));
                let letter = DeadLetter {
                    body: env.encode(),
                    // One group per dead letter: any of them can be listed or redriven alone.
                    group: env.dedup_id(),
                    dedup_id: env.dedup_id(),
                    reason: reason.clone(),
                    status,
                };
                self.buffer
                    .dead_letter(&letter)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err((_, e)) => Err(e),
        };
        match result {
            Ok(()) => (
                Outcome::DeadLettered,
                502,
                json!({"status": "dead-lettered", "delivery": delivery, "reason": reason}),
            ),
            Err(e) => {
                tracing::error!(%delivery, error = %e, "cannot dead-letter");
                (
                    Outcome::Unavailable,
                    503,
                    json!({"status": "error", "delivery": delivery,
                           "error": format!("target refused the hook ({reason}) and it could not be dead-lettered ({e}); redeliver it from GitHub")}),
                )
            }
        }
    }
}

fn respond(status: u16, body: serde_json::Value) -> ApiGatewayProxyResponse {
    let mut resp = ApiGatewayProxyResponse::default();
    resp.status_code = i64::from(status);
    resp.headers
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp.body = Some(ResponseBody::Text(body.to_string()));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use spigot_core::ports::memory::*;
    use spigot_core::signature::sign_sha256;
    use spigot_core::{Failure, Secrets};

    type Mem = Receiver<MemoryBuffer, MemoryPayloads, MemoryTarget, MemoryEvalQueue>;

    fn receiver(script: Vec<Delivery>) -> Mem {
        Receiver {
            buffer: MemoryBuffer::default(),
            payloads: Some(MemoryPayloads::default()),
            target: Some(MemoryTarget {
                script: std::sync::Mutex::new(script.into()),
                ..Default::default()
            }),
            eval: Some(MemoryEvalQueue::default()),
            verifier: Verifier::new(Some(Secrets::parse("s3cret").unwrap()), false),
            claim_check_bytes: 1024,
        }
    }

    fn request(event: &str, body: &str, state: Option<&str>) -> ApiGatewayProxyRequest {
        let mut req = ApiGatewayProxyRequest::default();
        for (k, v) in [
            ("X-GitHub-Event", event.to_string()),
            ("X-GitHub-Delivery", "d-1".to_string()),
            (
                "X-Hub-Signature-256",
                sign_sha256(b"s3cret", body.as_bytes()),
            ),
            ("Content-Type", "application/json".to_string()),
        ] {
            req.headers.insert(k, HeaderValue::from_str(&v).unwrap());
        }
        req.body = Some(body.to_string());
        if let Some(s) = state {
            req.stage_variables.insert(STAGE_VARIABLE.into(), s.into());
        }
        req
    }

    const PUSH: &str = r#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"}}"#;

    #[tokio::test]
    async fn permanent_failure_dead_letters_with_reason() {
        let r = receiver(vec![Delivery::Permanent(Failure {
            status: Some(404),
            reason: "target answered 404".into(),
        })]);
        let resp = r.handle(&request("push", PUSH, Some("ON")), 1).await;
        assert_eq!(resp.status_code, 502);
        let dead = r.buffer.dead.lock().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].status, Some(404));
        assert_ne!(
            dead[0].dedup_id, "d-1",
            "a dead letter gets a fresh dedup id"
        );
        assert!(r.buffer.sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn buffer_failure_is_503_and_says_to_redeliver() {
        let r = receiver(vec![]);
        *r.buffer.fail.lock().unwrap() = Some("SQS is down".into());
        let resp = r.handle(&request("issues", "{}", Some("OFF")), 1).await;
        assert_eq!(resp.status_code, 503);
        let Some(ResponseBody::Text(t)) = resp.body else {
            panic!()
        };
        assert!(t.contains("redeliver"), "{t}");
    }

    #[tokio::test]
    async fn large_hooks_are_claim_checked_and_pushes_reach_the_eval_queue() {
        let r = receiver(vec![]);
        let big = format!(
            r#"{{"repository":{{"full_name":"o/r"}},"pad":"{}"}}"#,
            "x".repeat(5000)
        );
        let resp = r.handle(&request("push", &big, Some("OFF")), 1).await;
        assert_eq!(resp.status_code, 202);
        let sent = r.buffer.sent.lock().unwrap();
        let env = Envelope::decode(&sent[0]).unwrap();
        assert_eq!(env.claim_key(), Some("payloads/d-1"));
        let stored = r.payloads.as_ref().unwrap().0.lock().unwrap();
        assert_eq!(stored.get("payloads/d-1").map(Vec::len), Some(big.len()));
        assert!(stored.contains_key("payloads/eval/d-1"));
        assert_eq!(r.eval.as_ref().unwrap().0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn too_large_without_a_bucket_is_413() {
        let mut r = receiver(vec![]);
        r.payloads = None;
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
        let resp = r.handle(&request("issues", &big, Some("OFF")), 1).await;
        assert_eq!(resp.status_code, 413);
    }

    #[tokio::test]
    async fn pull_mode_buffers_even_when_on() {
        let mut r = receiver(vec![]);
        r.target = None;
        let resp = r.handle(&request("issues", "{}", Some("ON")), 1).await;
        assert_eq!(resp.status_code, 202);
        assert_eq!(r.buffer.sent.lock().unwrap().len(), 1);
    }
}
