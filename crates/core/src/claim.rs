//! The claim-check protocol, one module for every party: a hook becomes an
//! envelope whose body travels inline or, when too large for a message, sits
//! in the bucket under `payloads/` ([`stow`], by the receiver and `spigot
//! replay`); an envelope becomes its hook again, the body read back and
//! checked against the SHA-256 recorded at receipt ([`open`], by the engine
//! and the evaluator); and an envelope that cannot be delivered becomes a
//! dead letter ([`dead_letter`], [`poison_letter`], by the receiver, the
//! engine and the evaluator).

use crate::envelope::Envelope;
use crate::ports::{Bucket, DeadLetter, PortErrorKind, Received};
use crate::webhook::Hook;

/// Why a hook could not be made ready to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StowError {
    /// Too large for a message, and no store to claim-check it in.
    #[error("{0}")]
    TooLarge(String),
    /// The store refused or did not answer.
    #[error("{0}")]
    Unavailable(String),
}

/// The envelope of `hook`, its body kept in `store` under `prefix` (as copy
/// `copy`) when the envelope would be larger than `limit` bytes: the
/// claim-check every sender to the buffer uses (the receiver, a replay).
pub async fn stow<P: Bucket>(
    hook: &Hook,
    store: Option<&P>,
    prefix: &str,
    limit: usize,
    copy: &str,
) -> Result<Envelope, StowError> {
    let mut env = Envelope::from_hook(hook);
    if env.encoded_len() <= limit {
        return Ok(env);
    }
    let Some(store) = store else {
        return Err(StowError::TooLarge(format!(
            "payload of {} bytes is larger than CLAIM_CHECK_BYTES={limit} and no CONFIG_BUCKET is set for claim-checks",
            hook.body.len(),
        )));
    };
    let key = env.check_body(prefix, hook.body.len() as u64, copy);
    store
        .put(&key, hook.body.clone())
        .await
        .map_err(|e| StowError::Unavailable(format!("cannot store the payload: {e}")))?;
    Ok(env)
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The body may be readable later (the store is unreachable or not configured).
    #[error("{0}")]
    Retry(String),
    /// The envelope can never give its hook (bad base64, altered bytes).
    #[error("{0}")]
    Permanent(String),
    /// S3 refused to read the body (403). Without s3:ListBucket that is also
    /// how S3 answers for a body that is gone, so it is not retried for long:
    /// see [`DENIED_READS`].
    #[error("{0}")]
    Denied(String),
}

/// Refused claim-check reads after which a hook is dead-lettered with that
/// reason instead of spending its whole attempt budget (hours) blocking its repository.
pub const DENIED_READS: u32 = 3;

/// An opened envelope: the hook, and the claim-check key to delete once it is delivered.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The hook, byte-identical to what was received.
    pub hook: Hook,
    /// The claim-check object, when the body was stored aside.
    pub claim: Option<String>,
    /// Hex SHA-256 of the body (what the signature covered).
    pub sha256: String,
}

/// Opens `env`, reading a claim-checked body from `payloads`.
pub async fn open<P: Bucket>(env: &Envelope, payloads: Option<&P>) -> Result<Opened, OpenError> {
    let body = match env.inline_body() {
        Ok(Some(b)) => b,
        Ok(None) => {
            let key = env.claim_key().unwrap_or_default();
            let store = payloads.ok_or_else(|| {
                OpenError::Retry("claim-checked hook but no CONFIG_BUCKET is set".into())
            })?;
            store.get(key).await.map_err(|e| match e.kind {
                // Gone for good (another copy's delivery, the lifecycle): waiting cannot bring it back.
                PortErrorKind::NotFound => {
                    OpenError::Permanent(format!("claim-check payload is missing: {e}"))
                }
                PortErrorKind::Denied => OpenError::Denied(format!(
                    "S3 refused to read the claim-check payload (403: missing, and the role may not list payloads/, or the role may not read it): {e}"
                )),
                _ => OpenError::Retry(format!("cannot read claim-check payload: {e}")),
            })?
        }
        Err(e) => return Err(OpenError::Permanent(e.to_string())),
    };
    let claim = env.claim_key().map(str::to_string);
    let hook = env
        .clone()
        .into_hook(body)
        .map_err(|e| OpenError::Permanent(e.to_string()))?;
    Ok(Opened {
        hook,
        claim,
        sha256: env.sha256.clone(),
    })
}

/// The dead letter of `env`: sent again (fresh deduplication id, the reason
/// recorded), in a FIFO group of its own so any letter can be listed or
/// redriven alone.
pub fn dead_letter(mut env: Envelope, reason: String, status: Option<u16>) -> DeadLetter {
    env.resend(Some(reason.clone()));
    DeadLetter {
        body: env.encode(),
        group: env.dedup_id(),
        dedup_id: env.dedup_id(),
        reason,
        status,
    }
}

/// The dead letter of a message that is not an envelope: its text as received.
pub fn poison_letter(m: &Received, reason: String) -> DeadLetter {
    DeadLetter {
        body: m.body.clone(),
        group: if m.group.is_empty() {
            "poison".into()
        } else {
            m.group.clone()
        },
        dedup_id: format!("poison-{}", m.message_id),
        reason,
        status: None,
    }
}
