//! The archive and the timeline.
//!
//! Every hook the receiver accepts is kept, with its headers and exact bytes,
//! and every step a hook takes is recorded against its delivery id. Both are
//! records of one stream (Kinesis Data Firehose) that batches them into
//! objects under [`ARCHIVE_PREFIX`]`YYYY/MM/DD/HH/` (UTC, the hour a batch
//! arrived); a lifecycle rule expires them after `ArchiveDays`.
//!
//! A record is framed so that bodies travel as bytes, not base64:
//! `SPG1 {head length} {body length}\n{head JSON}{gzipped body}\n`. The head
//! holds the steps and, for a kept hook, its delivery, event, repository,
//! headers and the body's SHA-256; the body is gzipped (a 10 KB push is one
//! five-kilobyte Firehose unit). Objects are read as untrusted input: bounded,
//! and a record that does not parse ends the object's reading with a reason.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::envelope::sha256_hex;
use crate::webhook::Hook;

/// Where the archive's objects land in the bucket (and what its lifecycle rule expires).
pub use crate::layout::ARCHIVE as ARCHIVE_PREFIX;
/// The largest record the stream takes (Firehose: 1,000 KiB before base64).
pub const MAX_RECORD_BYTES: usize = 1_000 * 1024;
/// The largest body a record gives back when unzipped (GitHub's limit is 25 MB).
pub const MAX_BODY_BYTES: u64 = 26 * 1024 * 1024;
/// The header that marks a replayed hook: the delivery id it is a replay of.
pub const REPLAY_HEADER: &str = "x-spigot-replay";

const MAGIC: &[u8] = b"SPG1 ";

/// One step a hook took, recorded against its delivery id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `X-GitHub-Delivery` of the hook.
    pub delivery: String,
    /// `repository.full_name`, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repository: String,
    /// `X-GitHub-Event`, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event: String,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// What happened to a hook at one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum What {
    /// Its signature verified and the receiver took it.
    Received {
        /// Size of the body.
        bytes: u64,
    },
    /// Forwarded live by the receiver.
    Forwarded {
        /// The target's status.
        status: u16,
        /// How long the target took.
        ms: u64,
    },
    /// Put in the buffer.
    Buffered {
        /// Why it was not forwarded live.
        why: String,
    },
    /// An attempt to deliver it from the buffer that failed.
    Attempt {
        /// Who tried (`drainer`, `relay`, `replay`).
        by: String,
        /// The target's status, when it answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// How long the attempt took.
        ms: u64,
        /// Why it failed.
        error: String,
    },
    /// Delivered from the buffer (or by a replay to another target).
    Delivered {
        /// Who delivered it.
        by: String,
        /// The target's status.
        status: u16,
        /// How long the target took.
        ms: u64,
    },
    /// Put in the dead-letter queue.
    DeadLettered {
        /// Who put it there.
        by: String,
        /// Why.
        reason: String,
    },
    /// Sent from the dead-letter queue back to the buffer.
    Redriven {
        /// The operator.
        by: String,
    },
    /// Sent again from the archive.
    Replayed {
        /// The operator.
        by: String,
        /// Where: `buffer`, or the URL of another target.
        to: String,
    },
    /// A pipeline filter matched it (or its pipeline was not started).
    Pipeline {
        /// The pipeline or `trigger:NAME`.
        name: String,
        /// True when the pipeline was started (or the trigger raised).
        started: bool,
        /// Why not, or how.
        why: String,
    },
    /// Taken already within `DEDUPE_WINDOW`: answered 200, not taken again.
    Duplicate,
}

impl Step {
    /// A step of `delivery` (repository and event when known).
    pub fn of(at_ms: u64, delivery: &str, repository: &str, event: &str, what: What) -> Self {
        Self {
            at_ms,
            delivery: delivery.to_string(),
            repository: repository.to_string(),
            event: event.to_string(),
            what,
        }
    }

    /// The step's name (`received`, `delivered`, ...).
    pub fn name(&self) -> &'static str {
        match self.what {
            What::Received { .. } => "received",
            What::Forwarded { .. } => "forwarded",
            What::Buffered { .. } => "buffered",
            What::Attempt { .. } => "attempt",
            What::Delivered { .. } => "delivered",
            What::DeadLettered { .. } => "dead-lettered",
            What::Redriven { .. } => "redriven",
            What::Replayed { .. } => "replayed",
            What::Pipeline { .. } => "pipeline",
            What::Duplicate => "duplicate",
        }
    }
}

/// A kept hook as its record's head holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptHead {
    /// `X-GitHub-Delivery`.
    pub delivery: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// `repository.full_name`, when the payload has one.
    #[serde(default)]
    pub repository: Option<String>,
    /// The headers that travelled with it, as received.
    pub headers: Vec<(String, String)>,
    /// When the receiver took it (ms).
    pub received_at_ms: u64,
    /// Size of the body.
    pub bytes: u64,
    /// Hex SHA-256 of the body.
    pub sha256: String,
}

/// A kept hook read back: its head and its gzipped body (unzipped on demand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// What the record says of it.
    pub head: KeptHead,
    gzipped: Vec<u8>,
}

impl Kept {
    /// The body exactly as received, checked against its SHA-256.
    pub fn body(&self) -> Result<Vec<u8>, ArchiveError> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(self.gzipped.as_slice())
            .take(MAX_BODY_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| ArchiveError::Body(self.head.delivery.clone(), e.to_string()))?;
        if out.len() as u64 > MAX_BODY_BYTES || sha256_hex(&out) != self.head.sha256 {
            return Err(ArchiveError::Body(
                self.head.delivery.clone(),
                "its bytes do not match the SHA-256 kept with them".into(),
            ));
        }
        Ok(out)
    }

    /// The hook again, as the receiver took it (`json_body` as read then).
    pub fn hook(&self) -> Result<Hook, ArchiveError> {
        let body = self.body()?;
        Ok(Hook {
            delivery: self.head.delivery.clone(),
            event: self.head.event.clone(),
            repository: self.head.repository.clone(),
            headers: self.head.headers.clone(),
            json_body: serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok(),
            body,
            received_at_ms: self.head.received_at_ms,
        })
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The hook it keeps, if it keeps one.
    pub kept: Option<Kept>,
    /// The steps it records.
    pub steps: Vec<Step>,
}

/// Why an archive object or record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// The framing or the head is not a Spigot record.
    #[error("not an archive record at byte {0}: {1}")]
    Framing(usize, String),
    /// A kept body cannot be unzipped or does not match its SHA-256.
    #[error("the body of {0} cannot be read back: {1}")]
    Body(String, String),
}

#[derive(Serialize, Deserialize)]
struct Head {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hook: Option<KeptHead>,
    #[serde(default)]
    steps: Vec<Step>,
}

/// The record that keeps `hook` with the steps the receiver saw.
pub fn hook_record(hook: &Hook, steps: &[Step]) -> Vec<u8> {
    let head = KeptHead {
        delivery: hook.delivery.clone(),
        event: hook.event.clone(),
        repository: hook.repository.clone(),
        headers: hook.headers.clone(),
        received_at_ms: hook.received_at_ms,
        bytes: hook.body.len() as u64,
        sha256: sha256_hex(&hook.body),
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let gzipped = gz
        .write_all(&hook.body)
        .and_then(|()| gz.finish())
        .unwrap_or_default();
    frame(
        &Head {
            hook: Some(head),
            steps: steps.to_vec(),
        },
        &gzipped,
    )
}

/// Records of `steps`, as few as fit under [`MAX_RECORD_BYTES`] each.
pub fn step_records(steps: &[Step]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut chunk: Vec<Step> = Vec::new();
    let mut size = 0;
    for step in steps {
        let len = serde_json::to_vec(step).map_or(0, |v| v.len()) + 1;
        if !chunk.is_empty() && size + len > MAX_RECORD_BYTES - 64 {
            records.push(steps_frame(std::mem::take(&mut chunk)));
            size = 0;
        }
        size += len;
        chunk.push(step.clone());
    }
    if !chunk.is_empty() {
        records.push(steps_frame(chunk));
    }
    records
}

fn steps_frame(steps: Vec<Step>) -> Vec<u8> {
    frame(&Head { hook: None, steps }, &[])
}

fn frame(head: &Head, body: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(head).unwrap_or_default();
    let mut out = Vec::with_capacity(head.len() + body.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(format!("{} {}\n", head.len(), body.len()).as_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    out.push(b'\n');
    out
}

/// The records of one archive object, in order. A record that does not
/// parse ends the reading: what came before it is returned with the error.
pub fn read_object(bytes: &[u8]) -> (Vec<Entry>, Option<ArchiveError>) {
    let mut entries = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match read_record(bytes, at) {
            Ok((entry, next)) => {
                entries.push(entry);
                at = next;
            }
            Err(e) => return (entries, Some(e)),
        }
    }
    (entries, None)
}

fn read_record(bytes: &[u8], at: usize) -> Result<(Entry, usize), ArchiveError> {
    let bad = |why: &str| ArchiveError::Framing(at, why.to_string());
    let rest = &bytes[at..];
    let rest = rest
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("no SPG1 mark"))?;
    let line_end = rest
        .iter()
        .take(48)
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no lengths line"))?;
    let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("lengths not text"))?;
    let (head_len, body_len) = line.split_once(' ').ok_or_else(|| bad("two lengths"))?;
    let parse = |n: &str| {
        n.parse::<usize>()
            .ok()
            .filter(|&n| n <= MAX_RECORD_BYTES)
            .ok_or_else(|| bad("a length out of bounds"))
    };
    let (head_len, body_len) = (parse(head_len)?, parse(body_len)?);
    let start = line_end + 1;
    let end = start + head_len + body_len;
    if rest.get(end) != Some(&b'\n') {
        return Err(bad("truncated"));
    }
    let head: Head = serde_json::from_slice(&rest[start..start + head_len])
        .map_err(|e| bad(&format!("head: {e}")))?;
    let kept = head.hook.map(|head| Kept {
        head,
        gzipped: rest[start + head_len..end].to_vec(),
    });
    let next = at + MAGIC.len() + end + 1;
    Ok((
        Entry {
            kept,
            steps: head.steps,
        },
        next,
    ))
}

/// The hour prefixes (`archive/YYYY/MM/DD/HH/`) holding what arrived between
/// `since_ms` and `until_ms`, oldest first. The hour before `since` is
/// included: a batch lands under the hour its first record arrived.
pub fn hour_prefixes(since_ms: u64, until_ms: u64) -> Vec<String> {
    let first = (since_ms / 3_600_000).saturating_sub(1);
    let last = until_ms / 3_600_000;
    (first..=last)
        .map(|hour| format!("{ARCHIVE_PREFIX}{}/", hour_path(hour)))
        .collect()
}

/// `YYYY/MM/DD/HH` of an hour since the epoch.
fn hour_path(hour: u64) -> String {
    let t = crate::time::format_rfc3339(hour.saturating_mul(3600));
    // YYYY-MM-DDTHH:...
    format!("{}/{}/{}/{}", &t[0..4], &t[5..7], &t[8..10], &t[11..13])
}

/// The hour since the epoch of `YYYY/MM/DD/HH`.
fn hour_of_path(path: &str) -> Option<u64> {
    let p: Vec<&str> = path.split('/').collect();
    let [y, m, d, h] = p.as_slice() else {
        return None;
    };
    crate::time::parse_rfc3339(&format!("{y}-{m}-{d}T{h}:00:00Z")).map(|s| s / 3600)
}

/// The repository index: an empty object per repository and hour in which
/// a record of it was written, so that a repository's records are found by
/// reading only its hours.
pub use crate::layout::ARCHIVE_REPOS as REPOS_PREFIX;

/// Where `repository`'s index marks live (`archive/repos/{owner}/{name}/`;
/// a segment that is not plain becomes its SHA-256).
pub fn repository_prefix(repository: &str) -> String {
    use crate::envelope::key_part;
    let segment = match repository.split_once('/') {
        Some((owner, name)) => format!("{}/{}", key_part(owner, 100), key_part(name, 100)),
        None => key_part(repository, 200),
    };
    format!("{REPOS_PREFIX}{segment}/")
}

/// The index mark of `repository` for the hour of `at_ms`.
pub fn index_key(repository: &str, at_ms: u64) -> String {
    format!(
        "{}{}",
        repository_prefix(repository),
        hour_path(at_ms / 3_600_000)
    )
}

/// The index marks of `steps` (one per repository and hour), in order.
pub fn index_keys(steps: &[Step]) -> Vec<String> {
    let mut keys: Vec<String> = steps
        .iter()
        .filter(|s| !s.repository.is_empty())
        .map(|s| index_key(&s.repository, s.at_ms))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The hour prefixes to read for a repository whose index marks under
/// [`repository_prefix`] are `keys`, between `since_ms` and `until_ms`: each
/// marked hour and the one before it (a batch lands under the hour its
/// first record arrived).
pub fn indexed_hour_prefixes(
    keys: &[String],
    prefix: &str,
    since_ms: u64,
    until_ms: u64,
) -> Vec<String> {
    let (first, last) = (
        (since_ms / 3_600_000).saturating_sub(1),
        until_ms / 3_600_000,
    );
    let mut hours: Vec<u64> = keys
        .iter()
        .filter_map(|k| hour_of_path(k.strip_prefix(prefix)?))
        .filter(|h| (first..=last).contains(h))
        .flat_map(|h| [h.saturating_sub(1), h])
        .collect();
    hours.sort_unstable();
    hours.dedup();
    hours
        .into_iter()
        .map(|h| format!("{ARCHIVE_PREFIX}{}/", hour_path(h)))
        .collect()
}

/// One hook as `spigot events` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// When it was received (ms).
    pub at_ms: u64,
    /// Its delivery id.
    pub delivery: String,
    /// Its event.
    pub event: String,
    /// Its repository (empty when the payload has none).
    pub repository: String,
    /// Where it is now: `delivered`, `buffered`, `retrying`, `dead-lettered`, `duplicate`.
    pub outcome: String,
    /// Delivery attempts from the buffer (failed and delivered).
    pub attempts: u32,
    /// Times it was replayed.
    pub replays: u32,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this repository.
    pub repository: Option<String>,
    /// Only this event.
    pub event: Option<String>,
    /// Received at or after (ms).
    pub since_ms: u64,
    /// Received before (ms); `None`: now.
    pub until_ms: Option<u64>,
}

impl Query {
    fn admits(&self, at_ms: u64, repository: &str, event: &str) -> bool {
        at_ms >= self.since_ms
            && self.until_ms.is_none_or(|u| at_ms < u)
            && self.repository.as_deref().is_none_or(|r| r == repository)
            && self.event.as_deref().is_none_or(|e| e == event)
    }
}

/// The hooks `query` asks for, newest first, each with where it is now.
pub fn rows(entries: &[Entry], query: &Query) -> Vec<Row> {
    let mut by_delivery: std::collections::BTreeMap<&str, Vec<&Step>> = Default::default();
    for step in entries.iter().flat_map(|e| &e.steps) {
        by_delivery.entry(&step.delivery).or_default().push(step);
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for step in entries.iter().flat_map(|e| &e.steps) {
        if !matches!(step.what, What::Received { .. })
            || !query.admits(step.at_ms, &step.repository, &step.event)
            || !seen.insert(step.delivery.as_str())
        {
            continue;
        }
        let mut steps = by_delivery
            .remove(step.delivery.as_str())
            .unwrap_or_default();
        steps.sort_by_key(|s| s.at_ms);
        rows.push(Row {
            at_ms: step.at_ms,
            delivery: step.delivery.clone(),
            event: step.event.clone(),
            repository: step.repository.clone(),
            outcome: outcome(&steps).to_string(),
            attempts: steps
                .iter()
                .filter(|s| matches!(s.what, What::Attempt { .. } | What::Delivered { .. }))
                .count() as u32,
            replays: steps
                .iter()
                .filter(|s| matches!(s.what, What::Replayed { .. }))
                .count() as u32,
        });
    }
    rows.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then(a.delivery.cmp(&b.delivery)));
    rows
}

/// Where a hook is, from its steps in time order.
fn outcome(steps: &[&Step]) -> &'static str {
    let mut now = "received";
    for step in steps {
        now = match step.what {
            What::Received { .. } | What::Pipeline { .. } => now,
            What::Forwarded { .. } | What::Delivered { .. } => "delivered",
            What::Buffered { .. } | What::Redriven { .. } => "buffered",
            What::Replayed { .. } => "replayed",
            What::Attempt { .. } => "retrying",
            What::DeadLettered { .. } => "dead-lettered",
            What::Duplicate => {
                if now == "received" {
                    "duplicate"
                } else {
                    now
                }
            }
        };
    }
    now
}

/// Every step of `delivery`, in time order.
pub fn timeline(entries: &[Entry], delivery: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = entries
        .iter()
        .flat_map(|e| &e.steps)
        .filter(|s| s.delivery == delivery)
        .cloned()
        .collect();
    steps.sort_by_key(|s| s.at_ms);
    steps
}

/// The kept hooks `query` asks for (one per delivery id: replays are not
/// kept again), in the order they were received.
pub fn kept<'e>(entries: &'e [Entry], query: &Query) -> Vec<&'e Kept> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<&Kept> = entries
        .iter()
        .filter_map(|e| e.kept.as_ref())
        .filter(|k| {
            query.admits(
                k.head.received_at_ms,
                k.head.repository.as_deref().unwrap_or(""),
                &k.head.event,
            )
        })
        .filter(|k| seen.insert(k.head.delivery.as_str()))
        .collect();
    kept.sort_by_key(|k| k.head.received_at_ms);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(delivery: &str, repo: &str, at: u64, body: &[u8]) -> Hook {
        Hook {
            delivery: delivery.into(),
            event: "push".into(),
            repository: Some(repo.into()),
            headers: vec![
                ("x-github-delivery".into(), delivery.into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: body.to_vec(),
            received_at_ms: at,
            json_body: true,
        }
    }

    fn received(h: &Hook) -> Step {
        Step::of(
            h.received_at_ms,
            &h.delivery,
            h.repository.as_deref().unwrap_or(""),
            &h.event,
            What::Received {
                bytes: h.body.len() as u64,
            },
        )
    }

    #[test]
    fn a_kept_hook_reads_back_byte_for_byte_with_its_steps() {
        let body = br#"{"ref":"refs/heads/main","repository":{"full_name":"o/a"}}"#;
        let h = hook("d1", "o/a", 1_000, body);
        let mut object = hook_record(&h, &[received(&h)]);
        object.extend(
            step_records(&[Step::of(
                2_000,
                "d1",
                "o/a",
                "push",
                What::Delivered {
                    by: "drainer".into(),
                    status: 200,
                    ms: 12,
                },
            )])
            .concat(),
        );
        let (entries, problem) = read_object(&object);
        assert_eq!(problem, None);
        assert_eq!(entries.len(), 2);
        let kept = entries[0].kept.as_ref().unwrap();
        assert_eq!(kept.hook().unwrap(), h);
        let steps = timeline(&entries, "d1");
        assert_eq!(
            steps.iter().map(Step::name).collect::<Vec<_>>(),
            ["received", "delivered"]
        );
        let rows = rows(&entries, &Query::default());
        assert_eq!(rows[0].outcome, "delivered");
        assert_eq!(rows[0].attempts, 1);
    }

    #[test]
    fn a_hook_over_ten_kilobytes_fits_one_firehose_unit() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/pull_request.opened.json"
        ))
        .unwrap();
        assert!(body.len() > 10_000, "the fixture is a real hook over 10 KB");
        let h = hook("d1", "o/a", 1_000, &body);
        let record = hook_record(&h, &[received(&h)]);
        assert!(
            record.len() <= 5 * 1024,
            "{} bytes for a {}-byte push",
            record.len(),
            body.len()
        );
    }

    #[test]
    fn a_corrupt_or_truncated_object_says_where_and_keeps_what_came_before() {
        let h = hook("d1", "o/a", 1_000, b"{}");
        let good = hook_record(&h, &[received(&h)]);
        let mut object = good.clone();
        object.extend_from_slice(&good[..good.len() - 3]);
        let (entries, problem) = read_object(&object);
        assert_eq!(entries.len(), 1);
        assert!(matches!(problem, Some(ArchiveError::Framing(at, _)) if at == good.len()));
        let (none, problem) = read_object(b"SPG1 99999999999 0\n");
        assert!(none.is_empty() && problem.is_some());
        // A body whose bytes were changed is refused on reading back.
        let mut tampered = read_object(&good).0.remove(0).kept.unwrap();
        tampered.head.sha256 = sha256_hex(b"other");
        assert!(tampered.body().is_err());
    }

    #[test]
    fn rows_are_newest_first_filtered_and_say_where_each_hook_is() {
        let a1 = hook("a1", "o/a", 1_000, b"{}");
        let b1 = hook("b1", "o/b", 2_000, b"{}");
        let a2 = hook("a2", "o/a", 3_000, b"{}");
        let step = |at, d: &str, what| Step::of(at, d, "", "", what);
        let mut steps = vec![received(&a1), received(&b1), received(&a2)];
        steps.push(step(1_100, "a1", What::Buffered { why: "OFF".into() }));
        steps.push(step(
            1_200,
            "a1",
            What::Attempt {
                by: "drainer".into(),
                status: Some(503),
                ms: 3,
                error: "503".into(),
            },
        ));
        steps.push(step(
            1_300,
            "a1",
            What::DeadLettered {
                by: "drainer".into(),
                reason: "gave up".into(),
            },
        ));
        steps.push(step(2_100, "b1", What::Forwarded { status: 200, ms: 4 }));
        let entries = vec![Entry { kept: None, steps }];
        let all = rows(&entries, &Query::default());
        assert_eq!(
            all.iter()
                .map(|r| (r.delivery.as_str(), r.outcome.as_str()))
                .collect::<Vec<_>>(),
            [
                ("a2", "received"),
                ("b1", "delivered"),
                ("a1", "dead-lettered")
            ]
        );
        let only_a = rows(
            &entries,
            &Query {
                repository: Some("o/a".into()),
                since_ms: 500,
                until_ms: Some(2_500),
                ..Query::default()
            },
        );
        assert_eq!(only_a.len(), 1);
        assert_eq!((only_a[0].delivery.as_str(), only_a[0].attempts), ("a1", 1));
    }

    #[test]
    fn a_repositorys_index_names_only_its_hours_and_the_ones_before() {
        let at = 1_796_133_600_000; // 2026-12-01T14:00:00Z
        let steps = [
            Step::of(
                at + 5,
                "d1",
                "octo-org/one",
                "push",
                What::Received { bytes: 1 },
            ),
            Step::of(at + 9, "d1", "octo-org/one", "push", What::Duplicate),
            Step::of(
                at + 7_200_000,
                "d2",
                "octo-org/one",
                "push",
                What::Duplicate,
            ),
            Step::of(at, "d3", "", "ping", What::Duplicate),
        ];
        let keys = index_keys(&steps);
        assert_eq!(
            keys,
            [
                "archive/repos/octo-org/one/2026/12/01/14",
                "archive/repos/octo-org/one/2026/12/01/16"
            ]
        );
        let prefix = repository_prefix("octo-org/one");
        assert_eq!(
            indexed_hour_prefixes(&keys, &prefix, at - 86_400_000, at + 86_400_000),
            [
                "archive/2026/12/01/13/",
                "archive/2026/12/01/14/",
                "archive/2026/12/01/15/",
                "archive/2026/12/01/16/"
            ]
        );
        // Outside the range asked: nothing to read.
        assert!(
            indexed_hour_prefixes(&keys, &prefix, at + 10 * 3_600_000, at + 11 * 3_600_000)
                .is_empty()
        );
        // A name that is no plain key segment cannot climb out of its prefix.
        assert!(!repository_prefix("../x/..").contains(".."));
    }

    #[test]
    fn hour_prefixes_cover_the_range_and_the_hour_before() {
        // 2026-12-01T14:00:00Z .. 14:30
        let since = 1_796_133_600_000;
        assert_eq!(
            hour_prefixes(since, since + 1_800_000),
            ["archive/2026/12/01/13/", "archive/2026/12/01/14/"]
        );
    }
}
