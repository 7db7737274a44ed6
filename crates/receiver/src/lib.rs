//! The receiver: a webhook request -> verify -> forward or buffer.
//!
//! [`Receiver::handle`] is generic over core's ports and takes an [`Inbound`]
//! request, so the same code runs in Lambda (from an API Gateway event), in
//! `spigot dev` (from its HTTP server), and in tests.

pub mod ingress;
pub mod trigger;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use serde_json::json;
use spigot_aws::aws_config::SdkConfig;
use spigot_aws::{ApiStages, AwsError, HttpTarget, S3Payloads, SqsBuffer, SqsEvalQueue};
use spigot_core::archive::{Step, What, hook_record, step_records};
use spigot_core::claim::{StowError, dead_letter, stow};
use spigot_core::config::{DeliveryMode, Secret, Settings};
use spigot_core::delivery::Delivery;
use spigot_core::envelope::Envelope;
use spigot_core::metrics::Metrics;
use spigot_core::ports::{
    Archive, Bucket, Buffer, EvalQueue, MetricsSink, PortError, PortErrorKind, StageRef, Stages,
    StdoutMetrics, Target,
};
use spigot_core::spigot::{STAGE_VARIABLE, State};
use spigot_core::webhook::Hook;
use spigot_core::{Keyring, Secrets, Verifier};

pub use ingress::{Answer, ApiEvent, ApiResponse, Inbound};

/// Claim-check prefix of bodies on their way to the evaluator.
pub use spigot_core::layout::EVAL_PAYLOADS;
/// Claim-check prefix of buffered bodies (the drainer deletes them after delivery).
pub use spigot_core::layout::PAYLOADS as BUFFER_PAYLOADS;

/// The receiver and the ports it drives.
pub struct Receiver<B, P, T, E, C> {
    /// The FIFO buffer (and its dead-letter queue).
    pub buffer: B,
    /// Claim-check storage; `None` answers 413 to hooks too large for a message.
    pub payloads: Option<P>,
    /// The target; `None` in pull mode (every hook is buffered for the relay).
    pub target: Option<T>,
    /// The evaluation queue for push events; `None` when pipelines are not used.
    pub eval: Option<E>,
    /// Signature verification, its secrets read again from Secrets Manager
    /// every `SECRETS_CACHE_SECONDS` when they come from there.
    pub verifier: Keyring,
    /// Envelopes larger than this keep their body in the payload store.
    pub claim_check_bytes: usize,
    /// Where the EMF metrics of each request go.
    pub metrics: Arc<dyn MetricsSink>,
    /// Sets DRAINING on the request's stage when the target fails, so that later
    /// hooks queue behind the buffered ones; `None`: never.
    pub stages: Option<C>,
    /// This receiver's own DRAINING, kept while the stage change spreads.
    pub draining: Draining,
    /// A delivery id taken within this long is answered 200 and not taken
    /// again (`DEDUPE_WINDOW`; zero: off). Marks live in the payload store.
    pub dedupe_window: Duration,
    /// Where each hook taken is kept, with what became of it (`ARCHIVE_STREAM`;
    /// `None`: `ArchiveDays` 0).
    pub archive: Option<Arc<dyn Archive>>,
}

/// Where the receiver marks a delivery id it took (`DEDUPE_WINDOW`).
pub use spigot_core::layout::DEDUPE as DEDUPE_PREFIX;

/// A delivery id seen before, or not.
enum Seen {
    /// Taken at this time (ms), within the window.
    Before(u64),
    /// New here; `true` when a mark was written (removed again if the hook
    /// cannot be taken, so that GitHub's retry is not taken for a duplicate).
    New(bool),
}

/// A receiver that set DRAINING (its target failed) buffers for
/// `DRAIN_GRACE_SECONDS` whatever its requests say: the stage variable reaches
/// requests late, and a hook seeing the stale ON would overtake the one it
/// just buffered. (Another receiver instance is not told: the README says so.)
#[derive(Debug, Default)]
pub struct Draining {
    /// How long (0: not at all).
    pub grace: Duration,
    until_ms: std::sync::atomic::AtomicU64,
}

impl Draining {
    /// Kept for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            until_ms: Default::default(),
        }
    }

    fn begin(&self, now_ms: u64) {
        let until = now_ms + self.grace.as_millis() as u64;
        self.until_ms
            .fetch_max(until, std::sync::atomic::Ordering::SeqCst);
    }

    fn holds(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Tells apart the claim-check copies this process stores within one millisecond.
static COPIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A name for a stored copy of a body, its own within this process (GitHub
/// may redeliver the same delivery id).
fn copy_name(at_ms: u64) -> String {
    let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{at_ms}-{n}")
}

/// How long the receiver waits for the DRAINING flip (best effort, beside the buffering).
pub const DRAINING_FLIP_TIMEOUT: Duration = Duration::from_secs(1);

/// The receiver on AWS adapters.
pub type AwsReceiver = Receiver<SqsBuffer, S3Payloads, HttpTarget, SqsEvalQueue, ApiStages>;
/// The environment the template gives the receiver (every variable its
/// settings read when deployed; `tests/tests/template.rs` checks the template sets exactly these).
pub const ENVIRONMENT: &[&str] = &[
    "WEBHOOK_SECRET_ARN",
    "TRIGGER_SECRET_ARN",
    "ALLOW_SHA1",
    "TARGET_URL",
    "ALLOW_INSECURE_TARGET",
    "EVENT_PATHS",
    "FORWARD_TIMEOUT_MS",
    "BUFFER_QUEUE_URL",
    "BUFFER_DLQ_URL",
    "EVAL_QUEUE_URL",
    "CONFIG_BUCKET",
    "DELIVERY_MODE",
    "DRAIN_GRACE_SECONDS",
    "TRIGGER_ENDPOINT",
    "DEDUPE_WINDOW",
    "SECRETS_CACHE_SECONDS",
    "ARCHIVE_STREAM",
];

/// The receiver of a deployment (or a local stack), as its settings name it;
/// the webhook secret is read from Secrets Manager when `WEBHOOK_SECRET_ARN` is set.
pub async fn build(sdk: &SdkConfig, settings: &Settings) -> Result<AwsReceiver, AwsError> {
    build_with(sdk, settings, webhook_secrets(sdk, settings).await?)
}

/// The webhook secrets the settings name (`WEBHOOK_SECRET_ARN`, else
/// `WEBHOOK_SECRET`), read once for the receiver and the trigger door.
pub async fn webhook_secrets(
    sdk: &SdkConfig,
    settings: &Settings,
) -> Result<Option<Secrets>, AwsError> {
    secrets(
        sdk,
        "WEBHOOK_SECRET",
        settings.webhook_secret_arn.as_deref(),
        settings.webhook_secret.as_ref().map(Secret::expose),
    )
    .await
}

/// [`build`] with the webhook secrets already read ([`webhook_secrets`]).
pub fn build_with(
    sdk: &SdkConfig,
    settings: &Settings,
    webhook: Option<Secrets>,
) -> Result<AwsReceiver, AwsError> {
    let arn = settings.webhook_secret_arn.as_deref();
    let verifier = keyring(sdk, settings, arn, webhook, settings.allow_sha1);
    Ok(Receiver {
        buffer: SqsBuffer::from_settings(sdk, settings)?,
        payloads: S3Payloads::from_settings(sdk, settings),
        target: match settings.delivery_mode {
            DeliveryMode::Pull => None,
            DeliveryMode::Push => Some(HttpTarget::from_settings(settings)?),
        },
        eval: SqsEvalQueue::from_settings(sdk, settings),
        verifier,
        claim_check_bytes: settings.claim_check_bytes,
        metrics: Arc::new(StdoutMetrics),
        stages: Some(ApiStages::new(sdk)),
        draining: Draining::new(Duration::from_secs(settings.drain_grace_seconds)),
        dedupe_window: Duration::from_secs(settings.dedupe_window),
        archive: spigot_aws::FirehoseArchive::shared(sdk, settings),
    })
}

/// The secrets named by a setting: read from Secrets Manager when `arn` is
/// given, else `inline`; none refuses every request.
pub async fn secrets(
    sdk: &SdkConfig,
    name: &str,
    arn: Option<&str>,
    inline: Option<&str>,
) -> Result<Option<Secrets>, AwsError> {
    let secret = match arn {
        Some(arn) => Some(spigot_aws::fetch_secret(sdk, arn).await?),
        None => inline.map(str::to_string),
    };
    let secrets = secret
        .as_deref()
        .map(Secrets::parse)
        .transpose()
        .map_err(|e| AwsError::Secret(name.into(), e.to_string()))?;
    if let Some(s) = &secrets {
        s.check_strength()
            .map_err(|why| AwsError::Secret(name.into(), why.to_string()))?;
    }
    Ok(secrets)
}

/// The verifier of `read`, a setting's secrets as [`secrets`] read them;
/// those from Secrets Manager (`arn`) are read again every
/// `SECRETS_CACHE_SECONDS`, so a revoked secret stops verifying within that time.
pub fn keyring(
    sdk: &SdkConfig,
    settings: &Settings,
    arn: Option<&str>,
    read: Option<Secrets>,
    allow_sha1: bool,
) -> Keyring {
    let verifier = Verifier::new(read, allow_sha1);
    match arn {
        Some(arn) => Keyring::refreshing(
            verifier,
            Box::new(spigot_aws::SecretsManagerFetch::new(sdk, arn)),
            settings.secrets_cache_seconds.saturating_mul(1000),
            spigot_aws::now_ms(),
        ),
        None => Keyring::fixed(verifier),
    }
}

/// A request the receiver took: what became of the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Taken {
    Delivered {
        delivery: String,
        status: u16,
        ms: u64,
    },
    Buffered {
        delivery: String,
        /// The target's failure, told to GitHub.
        reason: Option<String>,
        /// Why it was not forwarded, for the timeline.
        why: String,
    },
    DeadLettered {
        delivery: String,
        reason: String,
    },
    Pong(String),
    /// Taken already within `DEDUPE_WINDOW` (at this time, ms): not taken again.
    Duplicate {
        delivery: String,
        first_ms: u64,
    },
    /// Taken, but its pipeline evaluation could not be queued.
    Unevaluated(Box<Taken>),
}

/// A request the receiver refused, or a hook it could not keep. The details
/// are logged where the refusal is made; only what the public may read is here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// The signature does not verify.
    Unauthorized,
    /// The body or the GitHub headers cannot be read (which, is said).
    BadRequest(String),
    /// Too large for a queue message, and no bucket to claim-check it.
    TooLarge { delivery: String },
    /// The hook could not be kept (queue or bucket unreachable): GitHub must redeliver it.
    Unavailable { delivery: String },
}

impl Taken {
    fn answer(self) -> (&'static str, Answer) {
        let (metric, status, body) = match self {
            Taken::Delivered { delivery, .. } => (
                "Forwarded",
                200,
                json!({"status": "delivered", "delivery": delivery}),
            ),
            Taken::Buffered {
                delivery, reason, ..
            } => {
                let mut body = json!({"status": "buffered", "delivery": delivery});
                if let Some(r) = reason {
                    body["reason"] = json!(r);
                }
                ("Buffered", 202, body)
            }
            // Kept (in the dead-letter queue, redrivable): 2xx, so GitHub's log
            // and the reconciler count it as received and do not redeliver it.
            Taken::DeadLettered { delivery, reason } => (
                "DeadLettered",
                202,
                json!({"status": "dead-lettered", "delivery": delivery, "reason": reason}),
            ),
            Taken::Pong(d) => ("Pings", 200, json!({"status": "pong", "delivery": d})),
            Taken::Duplicate { delivery, first_ms } => (
                "Duplicates",
                200,
                json!({"status": "duplicate", "delivery": delivery,
                       "first_taken": spigot_core::time::format_rfc3339(first_ms / 1000)}),
            ),
            Taken::Unevaluated(taken) => {
                let (_, mut answer) = taken.answer();
                answer.body["error"] = json!(EVALUATION_UNAVAILABLE);
                ("EvalErrors", 503, answer.body)
            }
        };
        (metric, Answer { status, body })
    }

    /// What became of the hook, as the timeline records it.
    fn step(&self) -> What {
        match self {
            Taken::Delivered { status, ms, .. } => What::Forwarded {
                status: *status,
                ms: *ms,
            },
            Taken::Buffered { why, .. } => What::Buffered { why: why.clone() },
            Taken::DeadLettered { reason, .. } => What::DeadLettered {
                by: "receiver".into(),
                reason: reason.clone(),
            },
            Taken::Duplicate { .. } => What::Duplicate,
            // Never recorded: a ping is answered before anything is kept.
            Taken::Pong(_) => What::Duplicate,
            Taken::Unevaluated(taken) => taken.step(),
        }
    }
}

/// How long the receiver waits for the archive before answering without it.
pub const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the public is told. The details (SDK errors, endpoints, settings)
/// went to the log where the refusal was made; a caller learns what went
/// wrong, not how the receiver is configured or which signature it accepts.
const UNAUTHORIZED: &str = "the webhook signature is missing or does not match";
const TOO_LARGE: &str = "the payload is too large to keep";
const UNAVAILABLE: &str = "the hook could not be kept; redeliver it from GitHub";
const EVALUATION_UNAVAILABLE: &str =
    "the hook was taken, but its pipeline evaluation could not be queued; redeliver it from GitHub";

impl Refusal {
    fn answer(self) -> (&'static str, Answer) {
        let rejected = |e: &str| json!({"status": "rejected", "error": e});
        let error = |d: String, e: &str| json!({"status": "error", "delivery": d, "error": e});
        let (metric, status, body) = match self {
            Refusal::Unauthorized => ("Unauthorized", 401, rejected(UNAUTHORIZED)),
            Refusal::BadRequest(e) => ("BadRequests", 400, rejected(&e)),
            Refusal::TooLarge { delivery } => ("TooLarge", 413, error(delivery, TOO_LARGE)),
            Refusal::Unavailable { delivery } => {
                ("BufferErrors", 503, error(delivery, UNAVAILABLE))
            }
        };
        (metric, Answer { status, body })
    }
}

impl<B, P, T, E, C> Receiver<B, P, T, E, C>
where
    B: Buffer,
    P: Bucket,
    T: Target,
    E: EvalQueue,
    C: Stages,
{
    /// Handles one webhook request received at `now_ms`.
    pub async fn handle(&self, inbound: &Inbound, now_ms: u64) -> Answer {
        let (metric, answer) = match self.process(inbound, now_ms).await {
            Ok(taken) => taken.answer(),
            Err(refusal) => refusal.answer(),
        };
        self.metrics
            .emit(&Metrics::new("receiver").count(metric, 1), now_ms);
        answer
    }

    /// Handles an API Gateway REST proxy event.
    pub async fn handle_event(
        &self,
        req: &ApiGatewayProxyRequest,
        now_ms: u64,
    ) -> ApiGatewayProxyResponse {
        self.answer(Inbound::from_rest(req), now_ms).await.to_rest()
    }

    /// Handles an API Gateway event of either payload version, answering in its shape.
    pub async fn handle_api_event(&self, event: &ApiEvent, now_ms: u64) -> ApiResponse {
        self.answer(Inbound::from_event(event), now_ms)
            .await
            .to_event_response(event)
    }

    /// The answer to a request read from an event (an unreadable one is a 400).
    async fn answer(
        &self,
        inbound: Result<Inbound, spigot_core::webhook::WebhookError>,
        now_ms: u64,
    ) -> Answer {
        match inbound {
            Ok(inbound) => self.handle(&inbound, now_ms).await,
            Err(e) => {
                let (metric, answer) = Refusal::BadRequest(e.to_string()).answer();
                self.metrics
                    .emit(&Metrics::new("receiver").count(metric, 1), now_ms);
                answer
            }
        }
    }

    async fn process(&self, inbound: &Inbound, now_ms: u64) -> Result<Taken, Refusal> {
        let hook = self.verify(inbound, now_ms).await?;
        let delivery = hook.delivery.clone();
        tracing::info!(%delivery, event = %hook.event, repository = hook.repository.as_deref().unwrap_or(""), bytes = hook.body.len(), "received");
        if hook.event == "ping" {
            return Ok(Taken::Pong(delivery));
        }
        let marked = match self.seen(&delivery, now_ms).await {
            Seen::Before(first_ms) => {
                tracing::warn!(%delivery, first_ms, "delivery id taken before within DEDUPE_WINDOW; answered 200, not taken again");
                let steps = [Self::step_of(&hook, now_ms, What::Duplicate)];
                self.keep(step_records(&steps), &steps, &delivery).await;
                return Ok(Taken::Duplicate { delivery, first_ms });
            }
            Seen::New(marked) => marked,
        };
        // The hook and its evaluation are not coupled: a push whose evaluation
        // cannot be queued is still forwarded (or kept), then answered 503 so
        // that GitHub and the reconciler redeliver it for its pipelines.
        let queued = self.queue_evaluation(&hook).await;
        let taken = self.take(&hook, inbound, now_ms).await;
        if taken.is_err() && marked {
            self.unmark(&delivery).await;
        }
        if let (Some(_), Ok(taken)) = (&self.archive, &taken) {
            let received = What::Received {
                bytes: hook.body.len() as u64,
            };
            let steps = [
                Self::step_of(&hook, now_ms, received),
                Self::step_of(&hook, spigot_aws::now_ms().max(now_ms), taken.step()),
            ];
            self.keep(vec![hook_record(&hook, &steps)], &steps, &delivery)
                .await;
        }
        Ok(match queued {
            Ok(()) => taken?,
            Err(()) => Taken::Unevaluated(Box::new(taken?)),
        })
    }

    fn step_of(hook: &Hook, at_ms: u64, what: What) -> Step {
        let repository = hook.repository.as_deref().unwrap_or("");
        Step::of(at_ms, &hook.delivery, repository, &hook.event, what)
    }

    /// Puts `records` in the archive, if there is one, and marks the
    /// repository index for `steps` (bounded: a slow or failing archive never
    /// costs a hook its answer; it is logged and counted).
    async fn keep(&self, records: Vec<Vec<u8>>, steps: &[Step], delivery: &str) {
        let Some(archive) = &self.archive else {
            return;
        };
        let kept = archive.keep(records, steps);
        let problem = match tokio::time::timeout(ARCHIVE_TIMEOUT, kept).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", ARCHIVE_TIMEOUT.as_millis()),
        };
        tracing::error!(%delivery, error = %problem, "cannot archive the hook; it goes on unarchived");
        self.metrics.emit(
            &Metrics::new("receiver").count("ArchiveErrors", 1),
            spigot_aws::now_ms(),
        );
    }

    /// The mark of delivery id `delivery` (hashed: the header is unsigned).
    fn mark_key(delivery: &str) -> String {
        format!(
            "{DEDUPE_PREFIX}{}",
            spigot_core::envelope::sha256_hex(delivery.as_bytes())
        )
    }

    /// Whether `delivery` was taken within the window: marks it if not.
    /// Fails open: a store that cannot answer never costs a hook.
    async fn seen(&self, delivery: &str, now_ms: u64) -> Seen {
        let (false, Some(store)) = (self.dedupe_window.is_zero(), &self.payloads) else {
            return Seen::New(false);
        };
        let key = Self::mark_key(delivery);
        let stamp = now_ms.to_string().into_bytes();
        let failed = |e: PortError| {
            tracing::warn!(%delivery, error = %e, "cannot check DEDUPE_WINDOW; taking the hook");
            Seen::New(false)
        };
        match store.create(&key, stamp.clone()).await {
            Ok(true) => return Seen::New(true),
            Ok(false) => {}
            Err(e) => return failed(e),
        }
        let first = match store.get(&key).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).trim().parse::<u64>().ok(),
            Err(e) if e.kind == PortErrorKind::NotFound => None,
            Err(e) => return failed(e),
        };
        let window_ms = u64::try_from(self.dedupe_window.as_millis()).unwrap_or(u64::MAX);
        match first {
            Some(at) if now_ms.saturating_sub(at) < window_ms => Seen::Before(at),
            // Older than the window (or unreadable): taken again, and marked anew.
            _ => match store.put(&key, stamp).await {
                Ok(()) => Seen::New(true),
                Err(e) => failed(e),
            },
        }
    }

    /// Removes the mark of a hook that could not be taken (best effort).
    async fn unmark(&self, delivery: &str) {
        if let Some(store) = &self.payloads
            && let Err(e) = store.delete(&Self::mark_key(delivery)).await
        {
            tracing::warn!(%delivery, error = %e, "cannot remove the DEDUPE_WINDOW mark of a hook not taken; GitHub's retry within the window will be answered as a duplicate");
        }
    }

    /// Queues a push for pipeline evaluation (other events and no queue: nothing to do).
    async fn queue_evaluation(&self, hook: &Hook) -> Result<(), ()> {
        let (true, Some(eval)) = (hook.event == "push", &self.eval) else {
            return Ok(());
        };
        let sent = match self.envelope(hook, EVAL_PAYLOADS).await {
            Ok(env) => eval.enqueue(&env).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        sent.map_err(|e| {
            tracing::error!(delivery = %hook.delivery, error = %e, "cannot queue push for pipeline evaluation; the hook itself goes on");
        })
    }

    /// Forwards, buffers or dead-letters a verified hook, as the spigot's state says.
    async fn take(&self, hook: &Hook, inbound: &Inbound, now_ms: u64) -> Result<Taken, Refusal> {
        let delivery = hook.delivery.clone();
        let state = State::from_stage_variable(
            inbound
                .stage_variables
                .get(STAGE_VARIABLE)
                .map(String::as_str),
        );
        if matches!(state, Ok(State::On)) && self.draining.holds(now_ms) {
            tracing::info!(%delivery, "this receiver set DRAINING moments ago (the stage is still spreading): buffering");
            let why = "this receiver set DRAINING moments ago";
            return self.buffer(hook, None, why.into()).await;
        }
        let target = match (&state, &self.target) {
            (Ok(s), Some(t)) if s.forwards() => t,
            (Err(e), _) => {
                tracing::error!(%delivery, error = %e, "spigot state unreadable; buffering to be safe");
                let why = format!("spigot state unreadable: {e}");
                return self.buffer(hook, None, why).await;
            }
            (Ok(s), None) => {
                let why = format!("pull delivery (the spigot is {s})");
                return self.buffer(hook, None, why).await;
            }
            (Ok(s), Some(_)) => {
                let why = format!("the spigot is {s}");
                return self.buffer(hook, None, why).await;
            }
        };
        let started = std::time::Instant::now();
        let delivered = target.deliver(hook).await;
        let ms = started.elapsed().as_millis() as u64;
        match delivered {
            Delivery::Delivered(status) => {
                tracing::info!(%delivery, status, ms, "forwarded");
                Ok(Taken::Delivered {
                    delivery,
                    status,
                    ms,
                })
            }
            Delivery::Retryable(f) => {
                tracing::warn!(%delivery, reason = %f.reason, "target unavailable; buffering");
                self.draining.begin(now_ms);
                let why = format!("the target failed: {}", f.reason);
                let (taken, ()) = tokio::join!(
                    self.buffer(hook, Some(f.reason), why),
                    self.mark_draining(inbound.stage.as_ref())
                );
                taken
            }
            Delivery::Permanent(f) => self.dead_letter(hook, f.reason, f.status).await,
        }
    }

    /// The target failed while ON: later hooks must queue behind this one, so the
    /// stage goes DRAINING (best effort, bounded; the drainer sets ON when drained).
    async fn mark_draining(&self, stage: Option<&StageRef>) {
        let (Some(stages), Some(stage)) = (&self.stages, stage) else {
            return;
        };
        // Only over ON: an operator's OFF (or a DRAINING already set) is left as it is.
        let flip = stages.transition(stage, State::On, State::Draining);
        match tokio::time::timeout(DRAINING_FLIP_TIMEOUT, flip).await {
            Ok(Ok(None)) => {
                tracing::info!(api = %stage.api_id, stage = %stage.stage, "spigot ON -> DRAINING");
                // The dashboard's state changes.
                self.metrics.emit(
                    &Metrics::new("receiver").count("StateChanges", 1),
                    spigot_aws::now_ms(),
                );
            }
            Ok(Ok(Some(found))) => {
                tracing::info!(api = %stage.api_id, stage = %stage.stage, %found, "spigot is not ON any more: left as it is")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot set DRAINING; later hooks may overtake")
            }
            Err(_) => tracing::warn!("setting DRAINING timed out; later hooks may overtake"),
        }
    }

    /// The hook of a request whose signature verifies.
    async fn verify(&self, inbound: &Inbound, now_ms: u64) -> Result<Hook, Refusal> {
        let delivery_hint: String = inbound
            .header("x-github-delivery")
            .unwrap_or("-")
            .chars()
            .take(64)
            .collect();
        let (verifier, problem) = self.verifier.current(now_ms).await;
        if let Some(problem) = problem {
            tracing::error!(%problem, "WEBHOOK_SECRET_ARN: the secrets in use are kept");
        }
        if let Err(e) = verifier.verify(
            &inbound.body,
            inbound.header("x-hub-signature-256"),
            inbound.header("x-hub-signature"),
        ) {
            tracing::warn!(delivery = %delivery_hint, error = %e, "refused: bad signature");
            return Err(Refusal::Unauthorized);
        }
        let headers = inbound
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        Hook::read(headers, inbound.body.clone(), now_ms).map_err(|e| {
            tracing::warn!(delivery = %delivery_hint, error = %e, "refused: unreadable hook");
            Refusal::BadRequest(e.to_string())
        })
    }

    /// The envelope of `hook`, its body claim-checked under `prefix` when too large.
    async fn envelope(&self, hook: &Hook, prefix: &str) -> Result<Envelope, StowError> {
        stow(
            hook,
            self.payloads.as_ref(),
            prefix,
            self.claim_check_bytes,
            &copy_name(hook.received_at_ms),
        )
        .await
    }

    async fn buffer(
        &self,
        hook: &Hook,
        reason: Option<String>,
        why: String,
    ) -> Result<Taken, Refusal> {
        let delivery = hook.delivery.clone();
        let result = match self.envelope(hook, BUFFER_PAYLOADS).await {
            Ok(env) => self
                .buffer
                .send(&env)
                .await
                .map_err(|e| StowError::Unavailable(e.to_string())),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(%delivery, "buffered");
                Ok(Taken::Buffered {
                    delivery,
                    reason,
                    why,
                })
            }
            Err(StowError::TooLarge(message)) => {
                tracing::error!(%delivery, error = %message, "cannot buffer");
                Err(Refusal::TooLarge { delivery })
            }
            Err(StowError::Unavailable(e)) => {
                tracing::error!(%delivery, error = %e, "cannot buffer");
                Err(Refusal::Unavailable { delivery })
            }
        }
    }

    async fn dead_letter(
        &self,
        hook: &Hook,
        reason: String,
        status: Option<u16>,
    ) -> Result<Taken, Refusal> {
        let delivery = hook.delivery.clone();
        tracing::warn!(%delivery, %reason, "target refused the hook; dead-lettering");
        let result = match self.envelope(hook, BUFFER_PAYLOADS).await {
            Ok(env) => self
                .buffer
                .dead_letter(&dead_letter(env, reason.clone(), status))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => Ok(Taken::DeadLettered { delivery, reason }),
            Err(e) => {
                tracing::error!(%delivery, %reason, error = %e, "target refused the hook and it could not be dead-lettered");
                Err(Refusal::Unavailable { delivery })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spigot_core::ports::memory::*;
    use spigot_core::signature::sign_sha256;
    use spigot_core::{Failure, Secrets};

    type Mem = Receiver<MemoryBuffer, MemoryPayloads, MemoryTarget, MemoryEvalQueue, MemoryStages>;

    fn receiver(script: Vec<Delivery>) -> Mem {
        Receiver {
            buffer: MemoryBuffer::default(),
            payloads: Some(MemoryPayloads::default()),
            target: Some(MemoryTarget {
                script: std::sync::Mutex::new(script.into()),
                ..Default::default()
            }),
            eval: Some(MemoryEvalQueue::default()),
            verifier: Keyring::fixed(Verifier::new(
                Some(Secrets::parse("s3cret").unwrap()),
                false,
            )),
            claim_check_bytes: 1024,
            metrics: Arc::new(spigot_core::ports::QuietMetrics),
            stages: Some(MemoryStages::default()),
            draining: Draining::default(),
            dedupe_window: Duration::ZERO,
            archive: None,
        }
    }

    fn request(event: &str, body: &str, state: Option<&str>) -> ApiGatewayProxyRequest {
        use aws_lambda_events::http::HeaderValue;
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
            retry_after: None,
        })]);
        let resp = r.handle_event(&request("push", PUSH, Some("ON")), 1).await;
        assert_eq!(resp.status_code, 202);
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
    async fn a_failing_target_sets_draining_on_the_request_stage_and_a_refusal_does_not() {
        let stage = StageRef {
            api_id: "api1".into(),
            stage: "live".into(),
            kind: spigot_core::ports::ApiKind::Rest,
        };
        let with_stage = |req: ApiGatewayProxyRequest| {
            let mut inbound = Inbound::from_rest(&req).unwrap();
            inbound.stage = Some(stage.clone());
            inbound
        };
        let down = receiver(vec![Delivery::unreachable("connection refused")]);
        let answer = down
            .handle(&with_stage(request("push", PUSH, Some("ON"))), 1)
            .await;
        assert_eq!(answer.status, 202);
        let set = down.stages.as_ref().unwrap().0.lock().unwrap().clone();
        assert_eq!(set, vec![(stage.clone(), State::Draining)]);

        // An operator's OFF that reached the control plane (the request
        // still saw ON, the edge lags) is never overwritten by DRAINING.
        let off = receiver(vec![Delivery::unreachable("connection refused")]);
        off.stages
            .as_ref()
            .unwrap()
            .0
            .lock()
            .unwrap()
            .push((stage.clone(), State::Off));
        let answer = off
            .handle(&with_stage(request("push", PUSH, Some("ON"))), 1)
            .await;
        assert_eq!(answer.status, 202);
        let set = off.stages.as_ref().unwrap().0.lock().unwrap().clone();
        assert_eq!(set, vec![(stage.clone(), State::Off)], "OFF stays");

        let refused = receiver(vec![Delivery::Permanent(Failure {
            status: Some(404),
            reason: "target answered 404".into(),
            retry_after: None,
        })]);
        let answer = refused
            .handle(&with_stage(request("push", PUSH, Some("ON"))), 1)
            .await;
        assert_eq!(answer.status, 202);
        assert!(
            refused
                .stages
                .as_ref()
                .unwrap()
                .0
                .lock()
                .unwrap()
                .is_empty()
        );
    }

    /// 401 and 503 bodies say what, not how: no endpoint, no SDK text, no setting.
    #[tokio::test]
    async fn error_bodies_name_no_endpoint_sdk_text_or_setting() {
        let r = receiver(vec![]);
        *r.buffer.fail.lock().unwrap() = Some(
            "SQS SendMessage to the buffer failed: dispatch failure: io error: https://sqs.us-east-1.amazonaws.com/123/b.fifo".into(),
        );
        let unavailable = r
            .handle_event(&request("issues", "{}", Some("OFF")), 1)
            .await;
        let mut unsigned = request("issues", "{}", Some("ON"));
        unsigned.headers.remove("x-hub-signature-256");
        let unauthorized = receiver(vec![]).handle_event(&unsigned, 1).await;
        let mut no_secret = receiver(vec![]);
        no_secret.verifier = Keyring::fixed(Verifier::new(None, false));
        let unconfigured = no_secret
            .handle_event(&request("issues", "{}", Some("ON")), 1)
            .await;
        for (resp, status) in [(unavailable, 503), (unauthorized, 401), (unconfigured, 401)] {
            assert_eq!(resp.status_code, status);
            let Some(aws_lambda_events::encodings::Body::Text(t)) = resp.body else {
                panic!()
            };
            for leak in [
                "http",
                "SQS",
                "dispatch",
                "amazonaws",
                "WEBHOOK_SECRET",
                "ALLOW_SHA1",
                "SHA-1",
                "sha1",
                "CONFIG_BUCKET",
                "CLAIM_CHECK",
            ] {
                assert!(!t.contains(leak), "{status} body leaks {leak:?}: {t}");
            }
        }
    }

    /// Each hook taken is kept with its outcome; a request refused at
    /// the door, or a hook that could not be kept, is not; an archive that
    /// fails changes no answer.
    #[tokio::test]
    async fn hooks_taken_are_archived_with_their_outcome_and_refusals_are_not() {
        use spigot_core::archive::What;
        let archive = Arc::new(MemoryArchive::default());
        let mut r = receiver(vec![]);
        r.archive = Some(archive.clone());
        let forwarded = r.handle_event(&request("push", PUSH, Some("ON")), 1).await;
        assert_eq!(forwarded.status_code, 200);
        let mut forged = request("push", PUSH, Some("ON"));
        forged.body = Some(PUSH.replace("o/r", "o/x"));
        assert_eq!(r.handle_event(&forged, 2).await.status_code, 401);
        *r.buffer.fail.lock().unwrap() = Some("SQS is down".into());
        let unkept = r
            .handle_event(&request("issues", "{}", Some("OFF")), 3)
            .await;
        assert_eq!(unkept.status_code, 503);
        *r.buffer.fail.lock().unwrap() = None;
        let buffered = r
            .handle_event(&request("issues", "{}", Some("OFF")), 4)
            .await;
        assert_eq!(buffered.status_code, 202);
        let entries = archive.entries();
        assert_eq!(
            entries.len(),
            2,
            "the forwarded and the buffered hook, nothing else"
        );
        let kept = entries[0].kept.as_ref().unwrap();
        assert_eq!(kept.body().unwrap(), PUSH.as_bytes());
        assert_eq!(kept.head.repository.as_deref(), Some("o/r"));
        assert!(
            matches!(entries[0].steps[0].what, What::Received { bytes } if bytes == PUSH.len() as u64)
        );
        assert!(matches!(
            entries[0].steps[1].what,
            What::Forwarded { status: 200, .. }
        ));
        assert!(
            matches!(&entries[1].steps[1].what, What::Buffered { why } if why.contains("OFF")),
            "{:?}",
            entries[1].steps
        );
    }

    /// An archive that cannot take the record costs the hook nothing.
    #[tokio::test]
    async fn a_failing_archive_changes_no_answer() {
        struct Broken;
        impl Archive for Broken {
            fn put(
                &self,
                _records: Vec<Vec<u8>>,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(), PortError>> + Send + '_>,
            > {
                Box::pin(async { Err(PortError::new("Firehose is down")) })
            }
        }
        let mut r = receiver(vec![]);
        r.archive = Some(Arc::new(Broken));
        let resp = r.handle_event(&request("push", PUSH, Some("ON")), 1).await;
        assert_eq!(resp.status_code, 200);
        assert_eq!(r.target.as_ref().unwrap().got.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn buffer_failure_is_503_and_says_to_redeliver() {
        let r = receiver(vec![]);
        *r.buffer.fail.lock().unwrap() = Some("SQS is down".into());
        let resp = r
            .handle_event(&request("issues", "{}", Some("OFF")), 1)
            .await;
        assert_eq!(resp.status_code, 503);
        let Some(aws_lambda_events::encodings::Body::Text(t)) = resp.body else {
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
        let resp = r.handle_event(&request("push", &big, Some("OFF")), 1).await;
        assert_eq!(resp.status_code, 202);
        let sent = r.buffer.sent.lock().unwrap();
        let env = Envelope::decode(&sent[0]).unwrap();
        let key = env.claim_key().unwrap().to_string();
        assert!(key.starts_with("payloads/d-1/"), "{key}");
        let stored = r.payloads.as_ref().unwrap().0.lock().unwrap();
        assert_eq!(stored.get(&key).map(Vec::len), Some(big.len()));
        assert!(stored.keys().any(|k| k.starts_with("payloads/eval/d-1/")));
        assert_eq!(r.eval.as_ref().unwrap().0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn too_large_without_a_bucket_is_413() {
        let mut r = receiver(vec![]);
        r.payloads = None;
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
        let resp = r
            .handle_event(&request("issues", &big, Some("OFF")), 1)
            .await;
        assert_eq!(resp.status_code, 413);
    }

    #[tokio::test]
    async fn pull_mode_buffers_even_when_on() {
        let mut r = receiver(vec![]);
        r.target = None;
        let resp = r
            .handle_event(&request("issues", "{}", Some("ON")), 1)
            .await;
        assert_eq!(resp.status_code, 202);
        assert_eq!(r.buffer.sent.lock().unwrap().len(), 1);
    }
}
