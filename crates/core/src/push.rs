//! The few fields of a push payload that routing needs, read borrowed:
//! serde skips everything else without building it.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::Deserialize;

/// GitHub puts at most this many commits in a push payload.
pub const MAX_PAYLOAD_COMMITS: usize = 20;

/// A push payload that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a push payload: {0}")]
pub struct PushError(String);

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "ref", borrow)]
    git_ref: Cow<'a, str>,
    #[serde(default, borrow)]
    before: Cow<'a, str>,
    #[serde(default, borrow)]
    after: Cow<'a, str>,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    forced: bool,
    #[serde(borrow)]
    repository: Repo<'a>,
    #[serde(default, borrow)]
    commits: Option<Vec<Commit<'a>>>,
}

#[derive(Deserialize)]
struct Repo<'a> {
    #[serde(borrow)]
    full_name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Commit<'a> {
    #[serde(default, borrow)]
    added: Option<Vec<Cow<'a, str>>>,
    #[serde(default, borrow)]
    modified: Option<Vec<Cow<'a, str>>>,
    #[serde(default, borrow)]
    removed: Option<Vec<Cow<'a, str>>>,
}

/// A push, as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push<'a> {
    /// `repository.full_name` (`owner/name`).
    pub repository: Cow<'a, str>,
    /// The full ref, `refs/heads/feature/a/b` or `refs/tags/v1`.
    pub git_ref: Cow<'a, str>,
    /// SHA before the push.
    pub before: Cow<'a, str>,
    /// SHA after the push (the commit to build).
    pub after: Cow<'a, str>,
    /// A new branch or tag.
    pub created: bool,
    /// A deleted branch or tag.
    pub deleted: bool,
    /// A force push.
    pub forced: bool,
    /// Union of added, modified and removed paths over all commits.
    pub paths: BTreeSet<Cow<'a, str>>,
    /// How many commits the payload lists.
    pub commit_count: usize,
    /// Whether any commit carried file lists at all.
    pub has_file_lists: bool,
}

impl<'a> Push<'a> {
    /// Reads a push payload (JSON bytes).
    pub fn parse(payload: &'a [u8]) -> Result<Self, PushError> {
        let raw: Raw<'a> = serde_json::from_slice(payload).map_err(|e| PushError(e.to_string()))?;
        let commits = raw.commits.unwrap_or_default();
        let mut paths = BTreeSet::new();
        let mut has_file_lists = false;
        for c in &commits {
            for list in [&c.added, &c.modified, &c.removed].into_iter().flatten() {
                has_file_lists = true;
                paths.extend(list.iter().cloned());
            }
        }
        Ok(Self {
            repository: raw.repository.full_name,
            git_ref: raw.git_ref,
            before: raw.before,
            after: raw.after,
            created: raw.created,
            deleted: raw.deleted,
            forced: raw.forced,
            paths,
            commit_count: commits.len(),
            has_file_lists,
        })
    }

    /// The branch name, slashes kept (`refs/heads/feature/a/b` → `feature/a/b`); `None` for tags.
    pub fn branch(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/heads/")
    }

    /// True for tag pushes.
    pub fn is_tag(&self) -> bool {
        self.git_ref.starts_with("refs/tags/")
    }

    /// Why path matching cannot be trusted for this push, if it cannot.
    pub fn conservative_reason(&self) -> Option<&'static str> {
        if self.commit_count >= MAX_PAYLOAD_COMMITS {
            Some("the commit list may be truncated (GitHub lists at most 20 commits)")
        } else if self.created && self.commit_count == 0 {
            Some("a new branch pushed without a commit list")
        } else if self.commit_count > 0 && !self.has_file_lists {
            Some("the push carries no file lists")
        } else if self.commit_count == 0 && self.forced {
            Some("a force push without a commit list")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_full_branch_names_and_the_union_of_paths() {
        let p = br#"{"ref":"refs/heads/feature/a/b","before":"1","after":"2","repository":{"name":"mono","full_name":"octo-org/mono"},
            "commits":[{"added":["a"],"modified":["b"],"removed":[]},{"added":[],"modified":["b"],"removed":["c\/d"]}],"extra":{"deep":[1,2,3]}}"#;
        let push = Push::parse(p).unwrap();
        assert_eq!(push.repository, "octo-org/mono");
        assert_eq!(push.branch(), Some("feature/a/b"));
        assert_eq!(
            push.paths.iter().map(|c| c.as_ref()).collect::<Vec<_>>(),
            ["a", "b", "c/d"]
        );
        assert_eq!(push.conservative_reason(), None);
    }

    #[test]
    fn tags_have_no_branch() {
        let push =
            Push::parse(br#"{"ref":"refs/tags/v1","repository":{"full_name":"o/r"}}"#).unwrap();
        assert!(push.is_tag());
        assert_eq!(push.branch(), None);
    }

    #[test]
    fn conservative_cases() {
        let commits = (0..20)
            .map(|_| r#"{"added":[],"modified":["x"],"removed":[]}"#)
            .collect::<Vec<_>>()
            .join(",");
        let truncated = format!(
            r#"{{"ref":"refs/heads/main","repository":{{"full_name":"o/r"}},"commits":[{commits}]}}"#
        );
        assert!(
            Push::parse(truncated.as_bytes())
                .unwrap()
                .conservative_reason()
                .unwrap()
                .contains("truncated")
        );
        let created = br#"{"ref":"refs/heads/new","created":true,"repository":{"full_name":"o/r"},"commits":[]}"#;
        assert!(
            Push::parse(created)
                .unwrap()
                .conservative_reason()
                .unwrap()
                .contains("new branch")
        );
        let no_lists =
            br#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"},"commits":[{"id":"1"}]}"#;
        assert!(
            Push::parse(no_lists)
                .unwrap()
                .conservative_reason()
                .unwrap()
                .contains("no file lists")
        );
    }

    #[test]
    fn the_github_example_push_reads() {
        let fixture = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/push.json"
        ))
        .unwrap();
        let push = Push::parse(&fixture).unwrap();
        assert_eq!(push.repository, "Codertocat/Hello-World");
        assert_eq!(push.branch(), Some("master"));
    }

    #[test]
    fn not_a_push_is_an_error() {
        assert!(Push::parse(b"{}").is_err());
        assert!(Push::parse(b"[").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_json_never_panics(s in ".{0,200}") {
            let _ = Push::parse(s.as_bytes());
        }
    }
}
