//! Requests raised for a GitHub push (a pipeline filter's `Trigger`). The
//! agent believes nothing the request says about the push: it reads the bytes
//! the request names, checks GitHub's signature over them with its own copy
//! of the webhook secret, and takes repository, branch and commit from them.
//! A push older than `--max-push-age`, or older than one this agent already
//! deployed from the same branch (a replayed or late body), is skipped with a
//! receipt saying why: the newest push of a branch wins.

use std::collections::BTreeMap;
use std::time::Duration;

use spigot_core::ports::{Read, Triggers};
use spigot_core::push::Push;
use spigot_core::signature::{Secrets, Verifier};
use spigot_core::time::format_rfc3339;
use spigot_core::trigger::{Keys, MAX_PUSH_BYTES, PushRef, Request};

/// The newest push of a branch this agent deployed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deployed {
    /// Its head commit.
    pub commit: String,
    /// When it was pushed, Unix seconds (0: the push did not say).
    pub pushed_at: u64,
    /// The request that deployed it.
    pub sequence: u64,
}

/// What the agent does with a push request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run the script with these variables; once done, remember `deployed`
    /// (`owner/repo@branch` and the push; `None` for a request that is no push).
    Run {
        /// What to remember once the run is done.
        deployed: Option<(String, Deployed)>,
        /// `SPIGOT_*` variables about the push.
        env: Vec<(String, String)>,
    },
    /// Not run, rightly (too old, superseded): why.
    Skip(String),
    /// Not run, wrongly (unverifiable, unreadable): why.
    Refuse(String),
}

/// How the agent checks push requests.
pub struct PushCheck {
    /// The webhook secrets GitHub signs with (`None`: push requests are refused).
    pub secrets: Option<Secrets>,
    /// Pushes older than this are skipped.
    pub max_age: Duration,
}

impl PushCheck {
    /// Reads, verifies and judges the push `push` of `request` of trigger
    /// `trigger`, given what this agent has deployed and the time now.
    pub async fn judge<T: Triggers>(
        &self,
        store: &T,
        request: &Request,
        push: &PushRef,
        deployed: &BTreeMap<String, Deployed>,
        now_secs: u64,
    ) -> Verdict {
        let Some(secrets) = &self.secrets else {
            return Verdict::Refuse(
                "a push request needs the webhook secret to check GitHub's signature (--webhook-secret-file)".into(),
            );
        };
        let body = match self.body(store, &request.trigger, push).await {
            Ok(body) => body,
            Err(why) => return Verdict::Refuse(why.to_string()),
        };
        if let Err(e) =
            Verifier::new(Some(secrets.clone()), false).verify(&body, Some(&push.signature), None)
        {
            return Verdict::Refuse(format!(
                "GitHub's signature of the push does not check out ({e}); nothing of it is believed"
            ));
        }
        let payload = match spigot_core::webhook::payload_of(push.content_type.as_deref(), &body) {
            Ok(p) => p,
            Err(e) => return Verdict::Refuse(format!("the push is unreadable: {e}")),
        };
        let parsed = match Push::parse(&payload) {
            Ok(p) => p,
            Err(e) => return Verdict::Refuse(format!("the push is unreadable: {e}")),
        };
        judge_push(&parsed, push, request, deployed, now_secs, self.max_age)
    }

    /// The bytes `push` names, whole and unchanged.
    async fn body<T: Triggers>(
        &self,
        store: &T,
        trigger: &str,
        push: &PushRef,
    ) -> Result<Vec<u8>, UnreadablePush> {
        let key = Keys(trigger).body(&push.sha256);
        match store.read_at_most(&key, MAX_PUSH_BYTES).await {
            Ok(Read::Found { bytes, .. }) if bytes.len() > MAX_PUSH_BYTES => Err(UnreadablePush(
                format!("the push at {key} is larger than {MAX_PUSH_BYTES} bytes"),
            )),
            Ok(Read::Found { bytes, .. }) => {
                if spigot_core::envelope::sha256_hex(&bytes) == push.sha256 {
                    Ok(bytes)
                } else {
                    Err(UnreadablePush(format!(
                        "the push at {key} is not the one the request names (its SHA-256 differs)"
                    )))
                }
            }
            Ok(_) => Err(UnreadablePush(format!(
                "the push's bytes are not in the bucket ({key})"
            ))),
            Err(e) => Err(UnreadablePush(format!("cannot read the push's bytes: {e}"))),
        }
    }
}

/// What a script is told of a verified push (taken from its bytes, never
/// from what the request says).
fn push_environment(
    parsed: &Push<'_>,
    push: &PushRef,
    branch: &str,
    pushed_at: u64,
) -> Vec<(String, String)> {
    vec![
        ("SPIGOT_EVENT".to_string(), "push".to_string()),
        ("SPIGOT_DELIVERY".into(), push.delivery.clone()),
        ("SPIGOT_REPOSITORY".into(), parsed.repository.to_string()),
        ("SPIGOT_REF".into(), parsed.git_ref.to_string()),
        ("SPIGOT_BRANCH".into(), branch.to_string()),
        ("SPIGOT_SHA".into(), parsed.after.to_string()),
        (
            "SPIGOT_PUSHED_AT".into(),
            if pushed_at > 0 {
                format_rfc3339(pushed_at)
            } else {
                String::new()
            },
        ),
    ]
}

/// Why the bytes a push request names cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UnreadablePush(String);

/// The verdict on a verified push.
fn judge_push(
    parsed: &Push<'_>,
    push: &PushRef,
    request: &Request,
    deployed: &BTreeMap<String, Deployed>,
    now_secs: u64,
    max_age: Duration,
) -> Verdict {
    let Some(branch_name) = parsed.branch() else {
        return Verdict::Skip(format!("{} is not a branch", parsed.git_ref));
    };
    if parsed.deleted {
        return Verdict::Skip(format!("branch {branch_name} was deleted"));
    }
    let branch = format!("{}@{branch_name}", parsed.repository);
    let pushed_at = parsed.pushed_at.unwrap_or(0);
    if pushed_at > 0 && now_secs.saturating_sub(pushed_at) > max_age.as_secs() {
        return Verdict::Skip(format!(
            "pushed at {}, more than --max-push-age ({} s) ago",
            format_rfc3339(pushed_at),
            max_age.as_secs()
        ));
    }
    if let Some(last) = deployed.get(&branch) {
        if last.commit == parsed.after {
            return Verdict::Skip(format!(
                "commit {} of {branch} is already deployed (request {})",
                parsed.after, last.sequence
            ));
        }
        if pushed_at < last.pushed_at {
            return Verdict::Skip(format!(
                "pushed at {}, before commit {} of {branch} (pushed at {}) that request {} deployed",
                format_rfc3339(pushed_at),
                last.commit,
                format_rfc3339(last.pushed_at),
                last.sequence
            ));
        }
    }
    let env = push_environment(parsed, push, branch_name, pushed_at);
    Verdict::Run {
        deployed: Some((
            branch,
            Deployed {
                commit: parsed.after.to_string(),
                pushed_at,
                sequence: request.sequence,
            },
        )),
        env,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spigot_core::ports::Write;
    use spigot_core::ports::memory::MemoryTriggers;
    use spigot_core::signature::sign_sha256;

    const SECRET: &str = "a-webhook-secret-of-some-length";

    fn body(branch: &str, sha: &str, pushed_at: u64) -> Vec<u8> {
        serde_json::json!({
            "ref": format!("refs/heads/{branch}"), "before": "0".repeat(40), "after": sha,
            "repository": {"full_name": "octo/app", "pushed_at": pushed_at},
            "commits": [],
        })
        .to_string()
        .into_bytes()
    }

    async fn request(
        store: &MemoryTriggers,
        bytes: &[u8],
        signed_with: &str,
    ) -> (Request, PushRef) {
        let sha256 = spigot_core::envelope::sha256_hex(bytes);
        store
            .write(&Keys("web").body(&sha256), bytes.to_vec(), Write::Always)
            .await
            .unwrap();
        let push = PushRef {
            delivery: "d-1".into(),
            sha256,
            signature: sign_sha256(signed_with.as_bytes(), bytes),
            content_type: None,
        };
        let request = Request {
            trigger: "web".into(),
            sequence: 7,
            by: "evaluator".into(),
            data: BTreeMap::new(),
            raised_at: String::new(),
            raised_at_ms: 0,
            token: String::new(),
            push: Some(push.clone()),
        };
        (request, push)
    }

    fn check() -> PushCheck {
        PushCheck {
            secrets: Some(Secrets::parse(SECRET).unwrap()),
            max_age: Duration::from_secs(3600),
        }
    }

    #[tokio::test]
    async fn a_signed_fresh_push_runs_with_its_own_facts() {
        let store = MemoryTriggers::default();
        let (r, p) = request(&store, &body("main", &"a".repeat(40), 1_000), SECRET).await;
        match check().judge(&store, &r, &p, &BTreeMap::new(), 1_060).await {
            Verdict::Run { deployed, env } => {
                let (branch, deployed) = deployed.unwrap();
                assert_eq!(branch, "octo/app@main");
                assert_eq!(deployed.sequence, 7);
                assert!(env.contains(&("SPIGOT_SHA".into(), "a".repeat(40))));
                assert!(env.contains(&("SPIGOT_BRANCH".into(), "main".into())));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn forged_swapped_old_and_superseded_pushes_do_not_run() {
        let store = MemoryTriggers::default();
        let none = BTreeMap::new();
        // Signed with another secret: refused.
        let (r, p) = request(
            &store,
            &body("main", &"b".repeat(40), 1_000),
            "not-the-secret",
        )
        .await;
        assert!(
            matches!(check().judge(&store, &r, &p, &none, 1_000).await, Verdict::Refuse(w) if w.contains("signature"))
        );
        // The bytes under the key are not the ones named.
        let (r, mut p) = request(&store, &body("main", &"c".repeat(40), 1_000), SECRET).await;
        p.sha256 = spigot_core::envelope::sha256_hex(b"other");
        assert!(
            matches!(check().judge(&store, &r, &p, &none, 1_000).await, Verdict::Refuse(w) if w.contains("not in the bucket"))
        );
        // No secret: refused, saying what is missing.
        let (r, p) = request(&store, &body("main", &"d".repeat(40), 1_000), SECRET).await;
        let blind = PushCheck {
            secrets: None,
            ..check()
        };
        assert!(
            matches!(blind.judge(&store, &r, &p, &none, 1_000).await, Verdict::Refuse(w) if w.contains("--webhook-secret-file"))
        );
        // Older than the age limit: skipped.
        assert!(
            matches!(check().judge(&store, &r, &p, &none, 1_000 + 3_601).await, Verdict::Skip(w) if w.contains("--max-push-age"))
        );
        // Older than what was deployed from the branch, or the same commit: skipped.
        let deployed = BTreeMap::from([(
            "octo/app@main".to_string(),
            Deployed {
                commit: "e".repeat(40),
                pushed_at: 1_001,
                sequence: 3,
            },
        )]);
        assert!(
            matches!(check().judge(&store, &r, &p, &deployed, 1_010).await, Verdict::Skip(w) if w.contains("request 3 deployed"))
        );
        let (r, p) = request(&store, &body("main", &"e".repeat(40), 1_001), SECRET).await;
        assert!(
            matches!(check().judge(&store, &r, &p, &deployed, 1_010).await, Verdict::Skip(w) if w.contains("already deployed"))
        );
        // Positive control: a newer push of the branch runs.
        let (r, p) = request(&store, &body("main", &"f".repeat(40), 1_002), SECRET).await;
        assert!(matches!(
            check().judge(&store, &r, &p, &deployed, 1_010).await,
            Verdict::Run { .. }
        ));
    }
}
