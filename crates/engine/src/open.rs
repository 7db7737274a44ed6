//! An envelope back to the hook it carries: the body inline or read from the
//! claim-check store, checked against the SHA-256 recorded at receipt.

use spigot_core::envelope::Envelope;
use spigot_core::ports::{PayloadStore, PortErrorKind};
use spigot_core::webhook::Hook;

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
pub async fn open<P: PayloadStore>(
    env: &Envelope,
    payloads: Option<&P>,
) -> Result<Opened, OpenError> {
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
