//! The few fields of a push payload that routing needs, read borrowed:
//! serde skips everything else without building it.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::Deserialize;

use crate::time::parse_rfc3339;

/// A push webhook lists at most this many commits. (The 20-commit cap in
/// GitHub's push-event documentation applies to timeline events only, "not to
/// webhook deliveries".)
pub const MAX_PAYLOAD_COMMITS: usize = 2048;

/// Each commit's `added`, `removed` and `modified` lists are capped at this many
/// paths (GitHub's webhook documentation: "a maximum of 5000 ... file paths";
/// beyond it the list is cut and the API has the rest).
pub const MAX_FILES_PER_LIST: usize = 5000;

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
    #[serde(default, borrow)]
    head_commit: Option<HeadCommit<'a>>,
}

#[derive(Deserialize)]
struct Repo<'a> {
    #[serde(borrow)]
    full_name: Cow<'a, str>,
    #[serde(default, borrow)]
    pushed_at: Option<Stamp<'a>>,
    #[serde(default, borrow)]
    default_branch: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct HeadCommit<'a> {
    #[serde(default, borrow)]
    timestamp: Option<Cow<'a, str>>,
}

/// A time as GitHub writes it: Unix seconds (push payloads) or RFC 3339.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stamp<'a> {
    Seconds(u64),
    #[serde(borrow)]
    Text(Cow<'a, str>),
}

impl Stamp<'_> {
    fn seconds(&self) -> Option<u64> {
        match self {
            Stamp::Seconds(s) => Some(*s),
            Stamp::Text(t) => parse_rfc3339(t),
        }
    }
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
    /// Whether some commit's file list is at its cap ([`MAX_FILES_PER_LIST`]).
    pub file_list_at_cap: bool,
    /// When it was pushed (`repository.pushed_at`, else `head_commit.timestamp`), Unix seconds.
    pub pushed_at: Option<u64>,
    /// Where the changed paths came from.
    pub files_from: FilesFrom,
    /// `repository.default_branch`, what a new branch is compared against.
    pub default_branch: Option<Cow<'a, str>>,
}

/// Where a push's changed paths came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesFrom {
    /// The payload's commit lists.
    Payload,
    /// GitHub's compare API (the payload was incomplete).
    CompareApi,
}

/// Why a push's own commit lists do not describe its change, and what to compare instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incomplete {
    /// One sentence.
    pub reason: &'static str,
    /// Compare against the repository's default branch (a new branch) instead of `before`.
    pub against_default_branch: bool,
}

impl<'a> Push<'a> {
    /// Reads a push payload (JSON bytes).
    pub fn parse(payload: &'a [u8]) -> Result<Self, PushError> {
        let raw: Raw<'a> = serde_json::from_slice(payload).map_err(|e| PushError(e.to_string()))?;
        let commits = raw.commits.unwrap_or_default();
        let mut paths = BTreeSet::new();
        let mut has_file_lists = false;
        let mut file_list_at_cap = false;
        for c in &commits {
            for list in [&c.added, &c.modified, &c.removed].into_iter().flatten() {
                has_file_lists = true;
                file_list_at_cap |= list.len() >= MAX_FILES_PER_LIST;
                paths.extend(list.iter().cloned());
            }
        }
        let pushed_at = raw
            .repository
            .pushed_at
            .as_ref()
            .and_then(Stamp::seconds)
            .or_else(|| {
                raw.head_commit
                    .as_ref()?
                    .timestamp
                    .as_deref()
                    .and_then(parse_rfc3339)
            });
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
            file_list_at_cap,
            pushed_at,
            files_from: FilesFrom::Payload,
            default_branch: raw.repository.default_branch,
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

    /// Why the payload's commit lists do not describe this push's change, if they do not.
    pub fn incomplete(&self) -> Option<Incomplete> {
        if self.files_from == FilesFrom::CompareApi {
            return None;
        }
        // A new branch lists the commits new to the repository: with none (a branch
        // cut from an existing commit) the list says nothing of the change.
        let (reason, against_default_branch) = if self.created && self.commit_count == 0 {
            ("a new branch pushed without a commit list", true)
        } else if self.forced {
            (
                "a force push (its commit list does not describe the change)",
                false,
            )
        } else if self.commit_count >= MAX_PAYLOAD_COMMITS {
            ("the commit list is at GitHub's cap of 2,048 commits", false)
        } else if self.file_list_at_cap {
            (
                "a commit's file list is at GitHub's cap of 5,000 paths",
                false,
            )
        } else if self.commit_count > 0 && !self.has_file_lists {
            ("the push carries no file lists", false)
        } else {
            return None;
        };
        Some(Incomplete {
            reason,
            against_default_branch,
        })
    }

    /// Why path matching cannot be trusted for this push, if it cannot: it is
    /// incomplete and no complete file list was found.
    pub fn conservative_reason(&self) -> Option<&'static str> {
        self.incomplete().map(|i| i.reason)
    }

    /// The push with its complete changed-file list (from GitHub's compare API).
    pub fn with_files(mut self, files: impl IntoIterator<Item = String>) -> Push<'a> {
        self.paths = files.into_iter().map(Cow::Owned).collect();
        self.files_from = FilesFrom::CompareApi;
        self
    }
}

/// How a push's changed files were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The payload's commit lists describe the push.
    Payload,
    /// The payload was incomplete; GitHub's compare API listed this many files.
    CompareApi(usize),
    /// The payload was incomplete and the compare API could not help: match on
    /// repository and branch alone (over-triggering beats a silent miss).
    Fallback(String),
}

impl std::fmt::Display for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Completion::Payload => f.write_str("files from the payload"),
            Completion::CompareApi(n) => write!(f, "{n} files from the compare API"),
            Completion::Fallback(why) => {
                write!(f, "files unknown ({why}): repository and branch decide")
            }
        }
    }
}

/// Completes an incomplete push's file list from GitHub's compare API
/// (`before...after`, or the default branch for a new branch).
pub async fn complete<'a>(
    github: Option<&impl crate::ports::GitHub>,
    push: Push<'a>,
) -> (Push<'a>, Completion) {
    let Some(incomplete) = push.incomplete() else {
        return (push, Completion::Payload);
    };
    let Some(github) = github else {
        let why = format!(
            "{}; no GitHub credentials to ask the compare API",
            incomplete.reason
        );
        return (push, Completion::Fallback(why));
    };
    let base = if incomplete.against_default_branch {
        match push.default_branch.as_deref() {
            Some(b) => b.to_string(),
            None => {
                let why = format!("{}; the payload names no default branch", incomplete.reason);
                return (push, Completion::Fallback(why));
            }
        }
    } else {
        push.before.to_string()
    };
    match github
        .compare_files(&push.repository, &base, &push.after)
        .await
    {
        Ok(files) => {
            let n = files.len();
            (push.with_files(files), Completion::CompareApi(n))
        }
        Err(e) => {
            let why = format!("{}; compare API: {e}", incomplete.reason);
            (push, Completion::Fallback(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::format_rfc3339;

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
        let commits = (0..MAX_PAYLOAD_COMMITS)
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
                .contains("2,048 commits")
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

    fn push_with(fields: &str, commits: usize, files_per_list: usize) -> String {
        let files: Vec<String> = (0..files_per_list)
            .map(|i| format!("\"docs/{i}.md\""))
            .collect();
        let commit = format!(
            r#"{{"added":[],"modified":[{}],"removed":[]}}"#,
            files.join(",")
        );
        let commits = vec![commit; commits].join(",");
        format!(
            r#"{{"ref":"refs/heads/main","repository":{{"full_name":"o/r"}},{fields}"commits":[{commits}]}}"#
        )
    }

    #[test]
    fn completeness_table() {
        type Case = (&'static str, String, Option<bool>);
        // (what, payload, None: complete / Some(against the default branch))
        let cases: Vec<Case> = vec![
            ("25 commits (an ordinary merge)", push_with("", 25, 1), None),
            ("2,047 commits", push_with("", 2047, 1), None),
            (
                "2,048 commits: at the cap",
                push_with("", 2048, 1),
                Some(false),
            ),
            ("4,999 paths in a list", push_with("", 1, 4999), None),
            (
                "5,000 paths in a list: at the cap",
                push_with("", 1, 5000),
                Some(false),
            ),
            (
                "a force push",
                push_with(r#""forced":true,"#, 3, 1),
                Some(false),
            ),
            (
                "a new branch with commits",
                push_with(r#""created":true,"#, 2, 1),
                None,
            ),
            (
                "a new branch without commits",
                push_with(r#""created":true,"#, 0, 0),
                Some(true),
            ),
        ];
        for (what, payload, want) in cases {
            let push = Push::parse(payload.as_bytes()).unwrap();
            assert_eq!(
                push.incomplete().map(|i| i.against_default_branch),
                want,
                "{what}: {:?}",
                push.incomplete()
            );
            let complete = push.with_files(["a".to_string()]);
            assert_eq!(
                complete.incomplete(),
                None,
                "{what}: files from the compare API are complete"
            );
            assert_eq!(complete.files_from, FilesFrom::CompareApi);
        }
    }

    #[test]
    fn push_times_read_both_forms() {
        assert_eq!(
            parse_rfc3339("2019-05-15T15:20:30-07:00"),
            Some(1_557_958_830)
        );
        assert_eq!(parse_rfc3339("2019-05-15T22:20:30Z"), Some(1_557_958_830));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00.123Z"), Some(951_782_400));
        assert_eq!(format_rfc3339(1_557_958_830), "2019-05-15T22:20:30Z");
        for bad in [
            "",
            "yesterday",
            "2019-13-15T15:20:30Z",
            "2019-05-15T15:20:30",
            "2019-05-15T15:20:30+9999999999999999:00",
            "2019-05-15T15:20:30+24:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        let fixture = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/push.json"
        ))
        .unwrap();
        assert_eq!(
            Push::parse(&fixture).unwrap().pushed_at,
            Some(1_557_933_657)
        );
        let only_head = br#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"},"head_commit":{"timestamp":"2019-05-15T22:20:30Z"}}"#;
        assert_eq!(
            Push::parse(only_head).unwrap().pushed_at,
            Some(1_557_958_830)
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

        /// Any offset, any digits: an answer or None, never an
        /// overflow (a debug build would panic on `9999999999999999:00`).
        #[test]
        fn arbitrary_offsets_never_overflow(oh in proptest::num::i64::ANY, om in proptest::num::i64::ANY, y in 0u32..10_000) {
            let _ = parse_rfc3339(&format!("{y:04}-05-15T15:20:30+{oh}:{om}"));
            let _ = parse_rfc3339(&format!("{y:04}-05-15T15:20:30-{oh}:{om}"));
        }

        #[test]
        fn formatted_times_parse_back(secs in 0u64..8_000_000_000) {
            proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(secs)), Some(secs));
        }
    }
}

#[cfg(test)]
mod completion_tests {
    use super::*;
    use crate::ports::memory::MemoryGitHub;
    use crate::ports::{PortError, PortErrorKind};

    const FORCED: &[u8] = br#"{"ref":"refs/heads/main","before":"b1","after":"a2","forced":true,"repository":{"full_name":"o/r","default_branch":"main"},"commits":[]}"#;
    const NEW_BRANCH: &[u8] = br#"{"ref":"refs/heads/f","before":"0000","after":"a2","created":true,"repository":{"full_name":"o/r","default_branch":"main"},"commits":[]}"#;

    #[tokio::test]
    async fn incomplete_pushes_ask_the_compare_api_and_fall_back_when_it_cannot_help() {
        let gh = MemoryGitHub {
            files: vec!["services/a/x".into()],
            ..Default::default()
        };
        let (push, how) = complete(Some(&gh), Push::parse(FORCED).unwrap()).await;
        assert_eq!(how, Completion::CompareApi(1));
        assert_eq!(push.conservative_reason(), None);
        let (_, how) = complete(Some(&gh), Push::parse(NEW_BRANCH).unwrap()).await;
        assert_eq!(how, Completion::CompareApi(1));
        let calls = gh.calls.lock().unwrap().clone();
        assert_eq!(calls[0], ("o/r".into(), "b1".into(), "a2".into()));
        assert_eq!(
            calls[1],
            ("o/r".into(), "main".into(), "a2".into()),
            "a new branch compares against the default branch"
        );

        let down = MemoryGitHub {
            fail: Some(PortError::of(PortErrorKind::NotFound, "404")),
            ..Default::default()
        };
        let (push, how) = complete(Some(&down), Push::parse(FORCED).unwrap()).await;
        assert!(
            matches!(&how, Completion::Fallback(w) if w.contains("404")),
            "{how}"
        );
        assert!(push.conservative_reason().is_some());
        let (_, how) = complete(None::<&MemoryGitHub>, Push::parse(FORCED).unwrap()).await;
        assert!(matches!(&how, Completion::Fallback(w) if w.contains("no GitHub credentials")));
        let complete_push = br#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"},"commits":[{"added":["a"]}]}"#;
        let (_, how) = complete(Some(&gh), Push::parse(complete_push).unwrap()).await;
        assert_eq!(how, Completion::Payload);
        assert_eq!(
            gh.calls.lock().unwrap().len(),
            2,
            "a complete push asks nothing"
        );
    }
}
