//! Coalescing a drained backlog: consecutive pushes to one branch of one
//! repository mean one build, so a drain may deliver only the newest of such
//! a run. Anything else between them (a pull request, a tag, a branch
//! deletion, a body not at hand) breaks the run, so order across events holds.

use std::fmt;

use crate::envelope::Envelope;

/// `DRAIN_COALESCE`: what a drain may coalesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Coalesce {
    /// Every hook is delivered (the default).
    #[default]
    None,
    /// A push is skipped when the next hook of its repository is a push to the same branch.
    Push,
}

impl Coalesce {
    /// `none` or `push`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "" | "none" => Some(Coalesce::None),
            "push" => Some(Coalesce::Push),
            _ => None,
        }
    }
}

impl fmt::Display for Coalesce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Coalesce::None => "none",
            Coalesce::Push => "push",
        })
    }
}

/// The branch a push moves (`refs/heads/…`), when `env` is a push that
/// coalescing may collapse: an inline body, a branch (not a tag), not a deletion.
pub fn push_branch(env: &Envelope) -> Option<String> {
    if env.event != "push" {
        return None;
    }
    let body = env.inline_body().ok()??;
    #[derive(serde::Deserialize)]
    struct Push {
        #[serde(rename = "ref")]
        git_ref: String,
        #[serde(default)]
        deleted: bool,
    }
    let push: Push = serde_json::from_slice(&body).ok()?;
    (push.git_ref.starts_with("refs/heads/") && !push.deleted).then_some(push.git_ref)
}

/// True when, under `mode`, `earlier` is made redundant by `later` (the next
/// hook of the same repository): both pushes to the same branch.
pub fn supersedes(mode: Coalesce, earlier: &Envelope, later: &Envelope) -> bool {
    mode == Coalesce::Push
        && earlier.repository == later.repository
        && push_branch(earlier).is_some_and(|b| push_branch(later).as_ref() == Some(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::Hook;

    fn hook(event: &str, body: serde_json::Value) -> Envelope {
        Envelope::from_hook(&Hook {
            delivery: "d".into(),
            event: event.into(),
            repository: Some("octo-org/a".into()),
            headers: vec![],
            body: body.to_string().into_bytes(),
            received_at_ms: 0,
            json_body: true,
        })
    }

    #[test]
    fn only_pushes_to_the_same_branch_collapse() {
        let main = hook("push", serde_json::json!({"ref": "refs/heads/main"}));
        let main2 = hook(
            "push",
            serde_json::json!({"ref": "refs/heads/main", "after": "2"}),
        );
        let dev = hook("push", serde_json::json!({"ref": "refs/heads/dev"}));
        let tag = hook("push", serde_json::json!({"ref": "refs/tags/v1"}));
        let gone = hook(
            "push",
            serde_json::json!({"ref": "refs/heads/main", "deleted": true}),
        );
        let pr = hook(
            "pull_request",
            serde_json::json!({"ref": "refs/heads/main"}),
        );
        assert!(supersedes(Coalesce::Push, &main, &main2));
        assert!(!supersedes(Coalesce::None, &main, &main2), "off by default");
        assert!(!supersedes(Coalesce::Push, &main, &dev));
        assert!(!supersedes(Coalesce::Push, &tag, &tag));
        assert!(
            !supersedes(Coalesce::Push, &main, &gone),
            "a deletion is delivered"
        );
        assert!(!supersedes(Coalesce::Push, &gone, &main));
        assert!(!supersedes(Coalesce::Push, &pr, &main));
        assert!(!supersedes(Coalesce::Push, &main, &pr));
        assert_eq!(Coalesce::parse("push"), Some(Coalesce::Push));
        assert_eq!(Coalesce::parse("all"), None);
    }
}
