//! What blocks a repository: the head hook the target keeps refusing, read
//! from the engine's attempt records (`attempts/` in the config bucket), and
//! `spigot dlq aside`, which marks that one hook for the dead-letter queue at
//! its next attempt so that its repository goes on.

use anyhow::Context;
use serde::Serialize;
use spigot_core::resources::Resource;
use spigot_engine::attempts::{self, Record};

use crate::CliError;
use crate::resources::Resolved;

/// Records read at most (each is one GetObject).
const MAX_RECORDS: usize = 100;

/// A hook that failed and waits for its next attempt, holding its repository.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Blocked {
    /// Its record's key in the bucket.
    pub key: String,
    /// What the engine recorded.
    #[serde(flatten)]
    pub record: Record,
}

/// Every hook with failed attempts, most attempts first (at most [`MAX_RECORDS`]).
pub(crate) async fn blocked(r: &Resolved) -> anyhow::Result<Vec<Blocked>> {
    let Some(bucket) = r.get(Resource::Bucket) else {
        return Ok(Vec::new());
    };
    let s3 = spigot_aws::s3_client(&r.sdk);
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(attempts::PREFIX)
        .max_keys(MAX_RECORDS as i32)
        .send()
        .await
        .with_context(|| format!("cannot list s3://{bucket}/{}", attempts::PREFIX))?;
    let mut out = Vec::new();
    for object in listed.contents() {
        let Some(key) = object.key() else { continue };
        let got = s3.get_object().bucket(bucket).key(key).send().await;
        let Ok(got) = got else { continue }; // cleared meanwhile
        let bytes = got.body.collect().await.map(|b| b.into_bytes());
        if let Some(record) = bytes.ok().and_then(|b| Record::parse(&b)) {
            out.push(Blocked {
                key: key.to_string(),
                record,
            });
        }
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.record.attempts));
    Ok(out)
}

/// Marks the blocked hook `delivery` (or the head of `repository`) to go to
/// the dead-letter queue at its next attempt, by `by`. Returns its record.
pub(crate) async fn aside(
    r: &Resolved,
    delivery: Option<&str>,
    repository: Option<&str>,
    by: &str,
) -> Result<Blocked, CliError> {
    let bucket = r.need(Resource::Bucket)?;
    let found = blocked(r).await?;
    let mut matching = found.into_iter().filter(|b| {
        b.record.queue != "evaluation"
            && delivery.is_none_or(|d| b.record.delivery == d)
            && repository.is_none_or(|repo| b.record.repository == repo)
    });
    let Some(mut hook) = matching.next() else {
        let what = delivery
            .map(|d| format!("delivery {d}"))
            .or(repository.map(|r| format!("repository {r}")))
            .unwrap_or_default();
        return Err(CliError::Failed(anyhow::anyhow!(
            "no blocked hook for {what}: `spigot status` lists the blocked repositories"
        )));
    };
    if matching.next().is_some() {
        return Err(CliError::Usage(
            "more than one blocked hook matches; name it with --delivery".into(),
        ));
    }
    hook.record.aside = Some(by.to_string());
    let body = serde_json::to_vec(&hook.record).context("cannot encode the record")?;
    spigot_aws::s3_client(&r.sdk)
        .put_object()
        .bucket(bucket)
        .key(&hook.key)
        .body(body.into())
        .send()
        .await
        .with_context(|| format!("cannot write s3://{bucket}/{}", hook.key))?;
    Ok(hook)
}

/// One line on a blocked hook, for `spigot status`.
pub(crate) fn line(b: &Blocked, now_ms: u64) -> String {
    let r = &b.record;
    let ago = now_ms.saturating_sub(r.at_ms) / 1000;
    let queue = if r.queue == "evaluation" {
        " (evaluation)"
    } else {
        ""
    };
    let aside = if r.aside.is_some() {
        "; moved aside, goes to the DLQ at its next attempt"
    } else {
        ""
    };
    format!(
        "{}{queue}: head {} ({}), {} failed attempts, last {ago} s ago: {}{aside}",
        spigot_core::text::printable(&r.repository),
        spigot_core::text::printable(&r.delivery),
        spigot_core::text::printable(&r.event),
        r.attempts,
        spigot_core::text::printable(&r.last)
    )
}

/// When a blocked repository's head hook is tried again, as the deployed
/// backoff says (2 s doubling to 5 minutes, ±20 %, or the target's Retry-After).
pub(crate) fn next_attempt(b: &Blocked, now_ms: u64) -> String {
    let r = &b.record;
    if r.queue == "evaluation" {
        return "evaluated again when SQS shows the push again (the evaluation queue's visibility timeout)".into();
    }
    // The backoff before jitter: 2 s doubling, capped.
    let plain = (2u64 << r.attempts.saturating_sub(1).min(20))
        .min(spigot_engine::policy::BACKOFF_CAP.unsigned_abs().into());
    let due_ms = r.at_ms.saturating_add(plain * 1000);
    let left = due_ms.saturating_sub(now_ms) / 1000;
    format!(
        "next attempt in about {left} s (backoff {plain} s ±20 % after attempt {}, unless the target asked for longer)",
        r.attempts
    )
}
