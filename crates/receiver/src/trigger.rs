//! `POST /trigger/{name}`: a CI pipeline without AWS credentials raises a
//! pull-deployment trigger over HTTPS. The body is signed like a GitHub hook
//! (`X-Hub-Signature-256: sha256=HMAC(body)`) with the trigger secret, which
//! is not the webhook secret: a leaked webhook secret cannot deploy.
//!
//! Body (JSON, optional): `{"data": {"VERSION": "1.4.2"}, "by": "ci"}`.
//! Answers: 202 `{"status": "raised", "trigger", "sequence"}`; 401 for a bad
//! signature (nothing raised); 400 for an unreadable body or name; 503 when
//! the bucket cannot be written.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::{AwsError, S3Triggers};
use spigot_core::Verifier;
use spigot_core::config::Settings;
use spigot_core::metrics::Metrics;
use spigot_core::ports::{MetricsSink, StdoutMetrics, Triggers};
use spigot_core::trigger::{self, TriggerError};

use crate::{Answer, ApiEvent, ApiResponse, Inbound};

/// Who a raise over HTTPS is by when the body does not say.
pub const DEFAULT_BY: &str = "POST /trigger";

/// The trigger door and the mailbox behind it.
pub struct TriggerDoor<S> {
    /// The triggers in the config bucket; `None`: no bucket, every raise is a 503.
    pub store: Option<S>,
    /// Checks the trigger secret's signature.
    pub verifier: Verifier,
    /// Where the EMF metrics go.
    pub metrics: Arc<dyn MetricsSink>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    by: Option<String>,
}

/// The door of a deployment: `TRIGGER_SECRET_ARN` (or `TRIGGER_SECRET`) and `CONFIG_BUCKET`.
pub async fn build(
    sdk: &SdkConfig,
    settings: &Settings,
) -> Result<TriggerDoor<S3Triggers>, AwsError> {
    let secrets = crate::secrets(
        sdk,
        "TRIGGER_SECRET",
        settings.trigger_secret_arn.as_deref(),
        settings.trigger_secret.as_deref(),
    )
    .await?;
    Ok(TriggerDoor {
        store: settings
            .resources
            .get(spigot_core::resources::Resource::Bucket)
            .map(|b| S3Triggers::new(spigot_aws::s3_client(sdk), b)),
        verifier: Verifier::new(secrets, false),
        metrics: Arc::new(StdoutMetrics),
    })
}

impl<S: Triggers> TriggerDoor<S> {
    /// Raises trigger `name` for a signed request received at `now_ms`.
    pub async fn handle(&self, name: &str, inbound: &Inbound, now_ms: u64) -> Answer {
        let (metric, status, body) = self.raise(name, inbound, now_ms).await;
        self.metrics
            .emit(&Metrics::new("receiver").count(metric, 1), now_ms);
        Answer { status, body }
    }

    /// Handles an API Gateway event for `POST /trigger/{name}`, answering in its shape.
    pub async fn handle_api_event(&self, name: &str, event: &ApiEvent, now_ms: u64) -> ApiResponse {
        let answer = match Inbound::from_event(event) {
            Ok(inbound) => self.handle(name, &inbound, now_ms).await,
            Err(e) => Answer {
                status: 400,
                body: json!({"status": "rejected", "error": e.to_string()}),
            },
        };
        answer.to_event_response(event)
    }

    async fn raise(
        &self,
        name: &str,
        inbound: &Inbound,
        now_ms: u64,
    ) -> (&'static str, u16, serde_json::Value) {
        let rejected = |e: &str| json!({"status": "rejected", "error": e});
        if let Err(e) =
            self.verifier
                .verify(&inbound.body, inbound.header("x-hub-signature-256"), None)
        {
            tracing::warn!(trigger = name, error = %e, "trigger refused: bad signature");
            return (
                "TriggersUnauthorized",
                401,
                rejected("the trigger signature is missing or does not match"),
            );
        }
        let body: Body = if inbound.body.iter().all(u8::is_ascii_whitespace) {
            Body {
                data: BTreeMap::new(),
                by: None,
            }
        } else {
            match serde_json::from_slice(&inbound.body) {
                Ok(b) => b,
                Err(e) => {
                    let e = format!("the body is not {{\"data\": {{...}}, \"by\": \"...\"}}: {e}");
                    return ("TriggersRejected", 400, rejected(&e));
                }
            }
        };
        let Some(store) = &self.store else {
            tracing::error!("no CONFIG_BUCKET: triggers cannot be raised");
            return (
                "TriggerErrors",
                503,
                json!({"status": "error", "error": "triggers are not configured"}),
            );
        };
        let by = body.by.unwrap_or_else(|| DEFAULT_BY.to_string());
        match trigger::raise(store, name, &by, body.data, now_ms).await {
            Ok(r) => {
                tracing::info!(trigger = name, sequence = r.sequence, by = %r.by, "trigger raised");
                (
                    "TriggersRaised",
                    202,
                    json!({"status": "raised", "trigger": r.trigger, "sequence": r.sequence}),
                )
            }
            Err(TriggerError::Invalid(e)) => ("TriggersRejected", 400, rejected(&e)),
            Err(e) => {
                tracing::error!(trigger = name, error = %e, "cannot raise the trigger");
                (
                    "TriggerErrors",
                    503,
                    json!({"status": "error", "error": "the trigger could not be raised; try again"}),
                )
            }
        }
    }
}

/// The trigger an API Gateway event is for: `POST /trigger/{name}`, else `None` (a webhook).
pub fn route(event: &ApiEvent) -> Option<String> {
    let (path_parameters, resource) = match event {
        ApiEvent::Rest(r) => (&r.path_parameters, r.resource.clone().unwrap_or_default()),
        ApiEvent::Http(r) => (&r.path_parameters, r.route_key.clone().unwrap_or_default()),
    };
    if resource.ends_with("/trigger/{name}") {
        path_parameters.get("name").cloned()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spigot_core::Secrets;
    use spigot_core::ports::QuietMetrics;
    use spigot_core::ports::memory::MemoryTriggers;
    use spigot_core::signature::sign_sha256;

    fn door() -> TriggerDoor<MemoryTriggers> {
        TriggerDoor {
            store: Some(MemoryTriggers::default()),
            verifier: Verifier::new(Some(Secrets::parse("trigger-secret").unwrap()), false),
            metrics: Arc::new(QuietMetrics),
        }
    }

    fn signed(body: &str, secret: &str) -> Inbound {
        Inbound {
            headers: vec![(
                "X-Hub-Signature-256".into(),
                sign_sha256(secret.as_bytes(), body.as_bytes()),
            )],
            body: body.as_bytes().to_vec(),
            ..Inbound::default()
        }
    }

    #[tokio::test]
    async fn signed_requests_raise_and_everything_else_is_refused() {
        let door = door();
        let ok = door
            .handle(
                "web",
                &signed(
                    r#"{"data": {"VERSION": "2"}, "by": "ci"}"#,
                    "trigger-secret",
                ),
                1,
            )
            .await;
        assert_eq!((ok.status, ok.body["sequence"].as_u64()), (202, Some(1)));
        let empty = door.handle("web", &signed("", "trigger-secret"), 2).await;
        assert_eq!(
            (empty.status, empty.body["sequence"].as_u64()),
            (202, Some(2))
        );
        let r = trigger::request(door.store.as_ref().unwrap(), "web", 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.by, DEFAULT_BY);
        // The webhook secret, a wrong body, a wrong name, bad data: refused, nothing raised.
        let cases = [
            ("web", signed("{}", "webhook-secret"), 401),
            (
                "web",
                Inbound {
                    body: b"{}".to_vec(),
                    ..Inbound::default()
                },
                401,
            ),
            ("web", signed("not json", "trigger-secret"), 400),
            ("web", signed(r#"{"date": {}}"#, "trigger-secret"), 400),
            ("../etc", signed("{}", "trigger-secret"), 400),
            (
                "web",
                signed(r#"{"data": {"1BAD": "x"}}"#, "trigger-secret"),
                400,
            ),
        ];
        for (name, inbound, status) in cases {
            let a = door.handle(name, &inbound, 3).await;
            assert_eq!(a.status, status, "{name} {:?}", a.body);
            assert!(a.body["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        let (head, _) = trigger::head(door.store.as_ref().unwrap(), "web")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.sequence, 2, "only the two good requests were raised");
    }

    #[test]
    fn the_route_is_read_from_either_event_shape() {
        let rest: ApiEvent = serde_json::from_value(serde_json::json!({
            "resource": "/trigger/{name}", "path": "/trigger/web", "httpMethod": "POST",
            "pathParameters": {"name": "web"}, "headers": {}, "requestContext": {"httpMethod": "POST"}
        }))
        .unwrap();
        let http: ApiEvent = serde_json::from_value(serde_json::json!({
            "version": "2.0", "routeKey": "POST /trigger/{name}", "rawPath": "/live/trigger/api",
            "pathParameters": {"name": "api"}, "headers": {},
            "requestContext": {"http": {"method": "POST", "path": "/live/trigger/api"}}
        }))
        .unwrap();
        let hook: ApiEvent = serde_json::from_value(serde_json::json!({
            "resource": "/webhook", "path": "/webhook", "httpMethod": "POST",
            "pathParameters": {"name": "web"}, "headers": {}, "requestContext": {"httpMethod": "POST"}
        }))
        .unwrap();
        assert_eq!(route(&rest).as_deref(), Some("web"));
        assert_eq!(route(&http).as_deref(), Some("api"));
        assert_eq!(route(&hook), None);
    }
}
