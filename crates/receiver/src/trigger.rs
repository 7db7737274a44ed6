//! `POST /trigger/{name}`: a CI pipeline without AWS credentials raises a
//! pull-deployment trigger over HTTPS (off unless `TRIGGER_ENDPOINT` is set).
//! `X-Spigot-Signature: t=UNIX_SECONDS,n=NONCE,v1=HEX` signs, with the
//! trigger secret (not the webhook secret), the method, the path
//! `/trigger/{name}`, the time, a once-only nonce and the body's SHA-256
//! ([`spigot_core::trigger::canonical`]): a captured request cannot be sent
//! again (its nonce is kept, created If-None-Match), later than 5 minutes, or
//! to another trigger.
//!
//! Body (JSON): `{"data": {"VERSION": "1.4.2"}, "by": "ci"}` (`{}` at least).
//! Answers: 202 `{"status": "raised", "trigger", "sequence"}`; 401 for a
//! bad, stale or missing signature; 409 for a nonce already used; 400 for an
//! empty or unreadable body or name (nothing raised in any of these); 404
//! while the endpoint is off; 503 when the bucket cannot be written.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::{AwsError, S3Triggers};
use spigot_core::config::{Secret, Settings};
use spigot_core::metrics::Metrics;
use spigot_core::ports::{MetricsSink, StdoutMetrics, Triggers, Write};
use spigot_core::trigger::{self, TriggerError};
use spigot_core::{Keyring, Secrets};

use crate::{Answer, ApiEvent, ApiResponse, Inbound};

/// Who a raise over HTTPS is by when the body does not say.
pub const DEFAULT_BY: &str = "POST /trigger";

/// The trigger door and the mailbox behind it.
pub struct TriggerDoor<S> {
    /// The triggers in the config bucket; `None`: no bucket, every raise is a 503.
    pub store: Option<S>,
    /// Checks the trigger secret's signature (read again like the webhook secret).
    pub verifier: Keyring,
    /// Where the EMF metrics go.
    pub metrics: Arc<dyn MetricsSink>,
    /// `TRIGGER_ENDPOINT`: false, every request is a 404.
    pub enabled: bool,
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
    let webhook = crate::webhook_secrets(sdk, settings).await?;
    build_with(sdk, settings, webhook.as_ref()).await
}

/// [`build`] with the webhook secrets the receiver already read, which the
/// trigger secret must not share (the webhook secret must not be able to deploy).
pub async fn build_with(
    sdk: &SdkConfig,
    settings: &Settings,
    webhook: Option<&Secrets>,
) -> Result<TriggerDoor<S3Triggers>, AwsError> {
    let trigger = crate::secrets(
        sdk,
        "TRIGGER_SECRET",
        settings.trigger_secret_arn.as_deref(),
        settings.trigger_secret.as_ref().map(Secret::expose),
    )
    .await?;
    if let (Some(w), Some(t)) = (webhook, &trigger)
        && t.shares_any(w)
    {
        return Err(AwsError::Secret(
            "TRIGGER_SECRET".into(),
            "it is also a webhook secret; give the trigger a secret of its own (whoever can sign a webhook must not be able to deploy)".into(),
        ));
    }
    let verifier = crate::keyring(
        sdk,
        settings,
        settings.trigger_secret_arn.as_deref(),
        trigger,
        false,
    );
    Ok(TriggerDoor {
        store: settings
            .resources
            .get(spigot_core::resources::Resource::Bucket)
            .map(|b| S3Triggers::new(spigot_aws::s3_client(sdk), b)),
        verifier,
        metrics: Arc::new(StdoutMetrics),
        enabled: settings.trigger_endpoint,
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

    async fn raise(&self, name: &str, inbound: &Inbound, now_ms: u64) -> Answered {
        match self.raise_checked(name, inbound, now_ms).await {
            Ok(answer) | Err(answer) => answer,
        }
    }

    /// Each check in turn; the first that fails is the answer.
    async fn raise_checked(
        &self,
        name: &str,
        inbound: &Inbound,
        now_ms: u64,
    ) -> Result<Answered, Answered> {
        if !self.enabled {
            return Err(rejected(
                404,
                "the trigger endpoint is off: deploy with TriggerEndpoint=on to raise triggers over HTTPS",
            ));
        }
        trigger::check_name("trigger", name).map_err(|e| rejected(400, &e.to_string()))?;
        let stamp = self.authenticate(name, inbound, now_ms).await?;
        let body = request_body(inbound)?;
        let Some(store) = &self.store else {
            tracing::error!("no CONFIG_BUCKET: triggers cannot be raised");
            return Err(error("triggers are not configured"));
        };
        take_nonce(store, name, &stamp).await?;
        let by = body.by.unwrap_or_else(|| DEFAULT_BY.to_string());
        // The nonce is this raise's own id: a create retried by the SDK is known as its own.
        match trigger::raise(store, name, &by, body.data, now_ms, &stamp.nonce).await {
            Ok(r) => {
                tracing::info!(trigger = name, sequence = r.sequence, by = %r.by, "trigger raised");
                Ok((
                    "TriggersRaised",
                    202,
                    json!({"status": "raised", "trigger": r.trigger, "sequence": r.sequence}),
                ))
            }
            Err(TriggerError::Invalid(e)) => Err(rejected(400, &e)),
            Err(e) => {
                tracing::error!(trigger = name, error = %e, "cannot raise the trigger");
                Err(error("the trigger could not be raised; try again"))
            }
        }
    }

    /// The request's stamp, when its signature verifies with the trigger
    /// secret and it was signed within `MAX_SKEW_SECS`.
    async fn authenticate(
        &self,
        name: &str,
        inbound: &Inbound,
        now_ms: u64,
    ) -> Result<trigger::Stamp, Answered> {
        let unauthorized = |why: String| {
            tracing::warn!(trigger = name, %why, "trigger refused");
            (
                "TriggersUnauthorized",
                401,
                json!({"status": "rejected", "error": why}),
            )
        };
        let Some(header) = inbound.header(trigger::SIGNATURE_HEADER) else {
            return Err(unauthorized(format!(
                "{} is missing: sign the method, path, time, a nonce and the body (t=…,n=…,v1=…)",
                trigger::SIGNATURE_HEADER
            )));
        };
        let stamp = trigger::Stamp::parse(header).map_err(|e| unauthorized(e.to_string()))?;
        let signed = trigger::canonical(name, stamp.t, &stamp.nonce, &inbound.body);
        let v1 = format!("sha256={}", stamp.v1);
        let (verifier, problem) = self.verifier.current(now_ms).await;
        if let Some(problem) = problem {
            tracing::error!(%problem, "TRIGGER_SECRET_ARN: the secrets in use are kept");
        }
        if verifier.verify(&signed, Some(&v1), None).is_err() {
            return Err(unauthorized("the trigger signature does not match".into()));
        }
        if !stamp.fresh(now_ms / 1000) {
            return Err(unauthorized(format!(
                "the request was signed at {} and it is now {}: more than {} s apart; sign it again",
                stamp.t,
                now_ms / 1000,
                trigger::MAX_SKEW_SECS
            )));
        }
        Ok(stamp)
    }
}

/// What the door answers: the metric, the status and the body.
type Answered = (&'static str, u16, serde_json::Value);

fn rejected(status: u16, why: &str) -> Answered {
    (
        "TriggersRejected",
        status,
        json!({"status": "rejected", "error": why}),
    )
}

fn error(why: &str) -> Answered {
    (
        "TriggerErrors",
        503,
        json!({"status": "error", "error": why}),
    )
}

/// The request's body: `{"data": {...}, "by": "..."}`, its data keys checked.
fn request_body(inbound: &Inbound) -> Result<Body, Answered> {
    if inbound.body.iter().all(u8::is_ascii_whitespace) {
        return Err(rejected(
            400,
            "the body is empty: send {\"data\": {...}} or at least {}",
        ));
    }
    let body: Body = serde_json::from_slice(&inbound.body).map_err(|e| {
        rejected(
            400,
            &format!("the body is not {{\"data\": {{...}}, \"by\": \"...\"}}: {e}"),
        )
    })?;
    body.data
        .keys()
        .try_for_each(|k| trigger::check_data_key(k))
        .map_err(|e| rejected(400, &e.to_string()))?;
    Ok(body)
}

/// Once only: the nonce is created If-None-Match before anything is raised.
async fn take_nonce<S: Triggers>(
    store: &S,
    name: &str,
    stamp: &trigger::Stamp,
) -> Result<(), Answered> {
    let key = trigger::nonce_key(name, &stamp.nonce);
    match store
        .write(&key, stamp.t.to_string().into_bytes(), Write::IfAbsent)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::warn!(trigger = name, nonce = %stamp.nonce, "trigger refused: nonce already used (a replay)");
            Err((
                "TriggersUnauthorized",
                409,
                json!({"status": "rejected", "error": "this request was already taken (its nonce is used): sign a new one"}),
            ))
        }
        Err(e) => {
            tracing::error!(trigger = name, error = %e, "cannot record the nonce");
            Err(error(
                "the trigger could not be raised; sign a new request and try again",
            ))
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
            verifier: Keyring::fixed(spigot_core::Verifier::new(
                Some(Secrets::parse("trigger-secret").unwrap()),
                false,
            )),
            metrics: Arc::new(QuietMetrics),
            enabled: true,
        }
    }

    const NOW_MS: u64 = 1_700_000_000_000;

    /// A request to `name` signed at `t` with `nonce`.
    fn stamped(name: &str, body: &str, secret: &str, t: u64, nonce: &str) -> Inbound {
        Inbound {
            headers: vec![(
                "X-Spigot-Signature".into(),
                trigger::sign(secret.as_bytes(), name, t, nonce, body.as_bytes()),
            )],
            body: body.as_bytes().to_vec(),
            ..Inbound::default()
        }
    }

    fn signed(name: &str, body: &str, nonce: &str) -> Inbound {
        stamped(name, body, "trigger-secret", NOW_MS / 1000, nonce)
    }

    #[tokio::test]
    async fn signed_fresh_requests_raise_once_and_everything_else_is_refused() {
        let door = door();
        let body = r#"{"data": {"VERSION": "2"}, "by": "ci"}"#;
        let first = signed("web", body, "nonce-0000000001");
        let ok = door.handle("web", &first, NOW_MS).await;
        assert_eq!((ok.status, ok.body["sequence"].as_u64()), (202, Some(1)));
        // The same request again (captured and replayed): refused.
        let replay = door.handle("web", &first, NOW_MS + 1000).await;
        assert_eq!(replay.status, 409, "{:?}", replay.body);
        // Positive control: the same body, signed anew, raises.
        let again = door
            .handle("web", &signed("web", body, "nonce-0000000002"), NOW_MS)
            .await;
        assert_eq!(
            (again.status, again.body["sequence"].as_u64()),
            (202, Some(2))
        );
        let by_default = door
            .handle("web", &signed("web", "{}", "nonce-0000000003"), NOW_MS)
            .await;
        assert_eq!(by_default.status, 202);
        let r = trigger::request(door.store.as_ref().unwrap(), "web", 3)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.by, DEFAULT_BY);
        let old = NOW_MS / 1000 - 301;
        let webhook_style = Inbound {
            headers: vec![(
                "X-Hub-Signature-256".into(),
                sign_sha256(b"trigger-secret", b"{}"),
            )],
            body: b"{}".to_vec(),
            ..Inbound::default()
        };
        // Each refused, nothing raised.
        let cases = [
            (
                "web",
                stamped(
                    "web",
                    "{}",
                    "webhook-secret",
                    NOW_MS / 1000,
                    "nonce-0000000010",
                ),
                401,
            ),
            ("web", webhook_style, 401),
            (
                "web",
                stamped("web", "{}", "trigger-secret", old, "nonce-0000000011"),
                401,
            ),
            ("prod", signed("web", "{}", "nonce-0000000012"), 401),
            ("web", signed("web", "", "nonce-0000000013"), 400),
            ("web", signed("web", "not json", "nonce-0000000014"), 400),
            (
                "web",
                signed("web", r#"{"date": {}}"#, "nonce-0000000015"),
                400,
            ),
            ("../etc", signed("../etc", "{}", "nonce-0000000016"), 400),
            (
                "web",
                signed("web", r#"{"data": {"1BAD": "x"}}"#, "nonce-0000000017"),
                400,
            ),
            (
                "web",
                signed("web", r#"{"data": {"BASH_ENV": "x"}}"#, "nonce-0000000018"),
                400,
            ),
        ];
        for (name, inbound, status) in cases {
            let a = door.handle(name, &inbound, NOW_MS).await;
            assert_eq!(a.status, status, "{name} {:?}", a.body);
            assert!(a.body["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        let (head, _) = trigger::head(door.store.as_ref().unwrap(), "web")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.sequence, 3, "only the three good requests were raised");
        // Off: a 404, even signed.
        let off = TriggerDoor {
            enabled: false,
            ..door
        };
        let a = off
            .handle("web", &signed("web", "{}", "nonce-0000000020"), NOW_MS)
            .await;
        assert_eq!(a.status, 404);
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
