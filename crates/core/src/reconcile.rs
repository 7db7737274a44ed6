//! Reconcile: find the hooks GitHub failed to deliver to Spigot (API Gateway
//! 413/5xx, a throttled receiver, a 503 "redeliver it from GitHub", no
//! connection at all) and ask GitHub to redeliver them. GitHub keeps each
//! delivery for 3 days (GHES: 7) and never redelivers by itself.
//!
//! Deliveries are grouped by `guid` (every attempt at one event shares it); a
//! guid none of whose attempts got a 2xx is failed. Each failed guid is
//! redelivered at most once a run, oldest first, up to a cap; a guid a
//! previous run redelivered within [`COOLDOWN_SECS`] is skipped (GitHub lists
//! the new attempt only after it was made). What was redelivered is kept in a
//! small state object ([`STATE_KEY`]) in the config bucket.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::ports::{Bucket, GitHub, PortError, PortErrorKind};

/// The longest window: GitHub keeps deliveries 3 days.
pub const MAX_WINDOW_SECS: u64 = 3 * 86_400;
/// The default window of a scheduled run: the last 2 hours.
pub const DEFAULT_WINDOW_SECS: u64 = 2 * 3_600;
/// Redeliveries a run makes at most, by default (`RECONCILE_MAX`).
pub const DEFAULT_MAX: usize = 100;
/// A guid redelivered less than this long ago is not redelivered again.
pub const COOLDOWN_SECS: u64 = 3_600;
/// Where the redelivered guids are kept, in the config bucket.
pub const STATE_KEY: &str = "reconcile/state.json";

/// Why a run could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// A `GITHUB_HOOKS` entry cannot be read.
    #[error("GITHUB_HOOKS entry {0:?} is not org/ORG/HOOK_ID, repo/OWNER/NAME/HOOK_ID or app")]
    BadHook(String),
    /// No hook to reconcile.
    #[error(
        "no hooks to reconcile: set GITHUB_HOOKS (org/ORG/HOOK_ID, repo/OWNER/NAME/HOOK_ID or app)"
    )]
    NoHooks,
    /// GitHub refused the credentials: nothing else can succeed.
    #[error("GitHub refused the credentials ({hook}): {source}")]
    Denied {
        /// The hook being read.
        hook: String,
        /// GitHub's answer.
        source: PortError,
    },
    /// The state object cannot be read or written.
    #[error("the reconcile state ({STATE_KEY} in the config bucket) is unusable: {0}")]
    State(String),
}

/// A webhook whose deliveries are reconciled (one entry of `GITHUB_HOOKS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookSource {
    /// An organization's hook.
    Org {
        /// The organization.
        org: String,
        /// The hook id.
        id: u64,
    },
    /// A repository's hook.
    Repo {
        /// `owner/name`.
        repository: String,
        /// The hook id.
        id: u64,
    },
    /// The GitHub App's own webhook (read with the app's JWT).
    App,
}

impl HookSource {
    /// Reads `org/ORG/HOOK_ID`, `repo/OWNER/NAME/HOOK_ID` or `app`.
    pub fn parse(text: &str) -> Result<Self, ReconcileError> {
        let bad = || ReconcileError::BadHook(text.to_string());
        let parts: Vec<&str> = text.trim().split('/').collect();
        let id = |s: &str| s.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(bad);
        let name = |s: &str| {
            (!s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .then(|| s.to_string())
            .ok_or_else(bad)
        };
        match parts.as_slice() {
            ["app"] => Ok(HookSource::App),
            ["org", org, hook] => Ok(HookSource::Org {
                org: name(org)?,
                id: id(hook)?,
            }),
            ["repo", owner, repo, hook] => Ok(HookSource::Repo {
                repository: format!("{}/{}", name(owner)?, name(repo)?),
                id: id(hook)?,
            }),
            _ => Err(bad()),
        }
    }

    /// Reads a comma-separated list (blank entries ignored); at least one.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, ReconcileError> {
        let hooks = text
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if hooks.is_empty() {
            return Err(ReconcileError::NoHooks);
        }
        Ok(hooks)
    }

    /// The REST path of the hook's deliveries (without a leading slash).
    pub fn deliveries_path(&self) -> String {
        match self {
            HookSource::Org { org, id } => format!("orgs/{org}/hooks/{id}/deliveries"),
            HookSource::Repo { repository, id } => {
                format!("repos/{repository}/hooks/{id}/deliveries")
            }
            HookSource::App => "app/hook/deliveries".to_string(),
        }
    }

    /// The repository every delivery of this hook is about, when the hook says.
    pub fn repository(&self) -> Option<&str> {
        match self {
            HookSource::Repo { repository, .. } => Some(repository),
            _ => None,
        }
    }
}

impl std::fmt::Display for HookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookSource::Org { org, id } => write!(f, "org/{org}/{id}"),
            HookSource::Repo { repository, id } => write!(f, "repo/{repository}/{id}"),
            HookSource::App => f.write_str("app"),
        }
    }
}

/// One attempt GitHub made to deliver an event to a hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookDelivery {
    /// The attempt's id (what a redelivery names).
    pub id: u64,
    /// The event's id, shared by every attempt (`X-GitHub-Delivery`).
    pub guid: String,
    /// When it was made, seconds since the epoch.
    pub delivered_at: u64,
    /// Whether it was itself a redelivery.
    pub redelivery: bool,
    /// GitHub's words for the outcome (`OK`, `failed to connect`, ...).
    pub status: String,
    /// The HTTP status the hook's URL answered; 0 when there was no answer.
    pub status_code: u16,
    /// The event (`push`, ...).
    pub event: String,
    /// The event's action, when it has one.
    pub action: Option<String>,
    /// `owner/name`, when known (a repository hook, or read from the delivery).
    pub repository: Option<String>,
}

/// A delivery GitHub's API listed that cannot be read (what is wrong with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnreadableDelivery(String);

impl HookDelivery {
    /// A delivery as GitHub's REST API lists it (`hook-delivery-item`).
    pub fn from_api(v: &serde_json::Value) -> Result<Self, UnreadableDelivery> {
        let bad = |why: String| UnreadableDelivery(why);
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| bad(format!("a delivery without {k}")))
        };
        let text = |k: &str| -> Result<String, UnreadableDelivery> {
            field(k)?
                .as_str()
                .map(String::from)
                .ok_or_else(|| bad(format!("a delivery whose {k} is not text")))
        };
        let at = text("delivered_at")?;
        Ok(Self {
            id: field("id")?
                .as_u64()
                .ok_or_else(|| bad("a delivery whose id is not a number".into()))?,
            guid: text("guid")?,
            delivered_at: crate::time::parse_rfc3339(&at).ok_or_else(|| {
                bad(format!(
                    "a delivery whose delivered_at {at:?} is not RFC 3339"
                ))
            })?,
            redelivery: v["redelivery"].as_bool().unwrap_or(false),
            status: v["status"].as_str().unwrap_or_default().to_string(),
            status_code: v["status_code"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .unwrap_or(0),
            event: text("event")?,
            action: v["action"].as_str().map(String::from),
            repository: v["request"]["payload"]["repository"]["full_name"]
                .as_str()
                .map(String::from),
        })
    }

    /// A 2xx (Spigot's 202 "buffered" included).
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// The guids earlier runs redelivered, and when (the state object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redelivered {
    /// guid → seconds since the epoch.
    pub guids: BTreeMap<String, u64>,
    /// When the last run that read every hook began (a scheduled run resumes from there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<u64>,
}

impl Redelivered {
    /// Reads the state object.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReconcileError> {
        serde_json::from_slice(bytes).map_err(|e| ReconcileError::State(e.to_string()))
    }

    /// The state object, without the guids GitHub has forgotten by `now`.
    pub fn to_bytes(&self, now: u64) -> Vec<u8> {
        let kept = Redelivered {
            last_run: self.last_run,
            guids: self
                .guids
                .iter()
                .filter(|(_, at)| now.saturating_sub(**at) <= MAX_WINDOW_SECS)
                .map(|(g, at)| (g.clone(), *at))
                .collect(),
        };
        serde_json::to_vec(&kept).unwrap_or_default()
    }

    /// When `guid` was redelivered, if within [`COOLDOWN_SECS`] of `now`.
    pub fn recent(&self, guid: &str, now: u64) -> Option<u64> {
        self.guids
            .get(guid)
            .copied()
            .filter(|at| now.saturating_sub(*at) < COOLDOWN_SECS)
    }
}

/// The failed events among `deliveries` made at or after `since`: for each guid
/// none of whose attempts succeeded, its latest attempt and the number of
/// attempts; oldest first.
pub fn failures(deliveries: &[HookDelivery], since: u64) -> Vec<(HookDelivery, usize)> {
    let mut by_guid: BTreeMap<&str, Vec<&HookDelivery>> = BTreeMap::new();
    for d in deliveries.iter().filter(|d| d.delivered_at >= since) {
        by_guid.entry(d.guid.as_str()).or_default().push(d);
    }
    let mut failed: Vec<(HookDelivery, usize)> = by_guid
        .into_values()
        .filter(|attempts| !attempts.iter().any(|d| d.succeeded()))
        .filter_map(|attempts| {
            let n = attempts.len();
            let first = attempts.iter().map(|d| d.delivered_at).min()?;
            let latest = attempts
                .into_iter()
                .max_by_key(|d| (d.delivered_at, d.id))?
                .clone();
            Some((
                HookDelivery {
                    delivered_at: first,
                    ..latest
                },
                n,
            ))
        })
        .collect();
    failed.sort_by_key(|(d, _)| (d.delivered_at, d.id));
    failed
}

/// What a run did about one failed event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// GitHub accepted the redelivery.
    Redelivered,
    /// A dry run: it would have been redelivered.
    WouldRedeliver,
    /// An earlier run redelivered it at `at`; not again so soon.
    Skipped {
        /// When, seconds since the epoch.
        at: u64,
    },
    /// Over the cap of redeliveries a run: left for the next run.
    Left,
    /// GitHub refused the redelivery.
    Error {
        /// Its answer.
        error: String,
    },
}

/// A failed event and what the run did about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failed {
    /// The hook (`repo/OWNER/NAME/ID`, `org/ORG/ID`, `app`).
    pub hook: String,
    /// Its latest attempt (`delivered_at`: the first attempt's time).
    pub delivery: HookDelivery,
    /// How many attempts GitHub made.
    pub attempts: usize,
    /// What was done.
    #[serde(flatten)]
    pub action: Action,
}

/// What a run found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Attempts listed in the window, over all hooks.
    pub listed: usize,
    /// Each failed event, oldest first.
    pub failed: Vec<Failed>,
    /// Hooks that could not be read (one sentence each).
    pub hook_errors: Vec<String>,
}

impl Report {
    /// Failed events whose action is `matches`.
    pub fn count(&self, matches: impl Fn(&Action) -> bool) -> usize {
        self.failed.iter().filter(|f| matches(&f.action)).count()
    }

    /// Redelivered (or, in a dry run, would be).
    pub fn redelivered(&self) -> usize {
        self.count(|a| matches!(a, Action::Redelivered | Action::WouldRedeliver))
    }

    /// Skipped because an earlier run redelivered them.
    pub fn skipped(&self) -> usize {
        self.count(|a| matches!(a, Action::Skipped { .. }))
    }

    /// Failures this run could not redeliver (left over the cap, or refused), and unreadable hooks.
    pub fn unrecovered(&self) -> usize {
        self.count(|a| matches!(a, Action::Left | Action::Error { .. })) + self.hook_errors.len()
    }
}

/// What a run looks at and may do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The hooks.
    pub hooks: Vec<HookSource>,
    /// Deliveries made at or after this (seconds since the epoch).
    pub since: u64,
    /// Now, seconds since the epoch.
    pub now: u64,
    /// Redeliveries at most.
    pub max: usize,
    /// List only; redeliver nothing, write no state.
    pub dry_run: bool,
    /// Start at the last complete run instead, when that is earlier than
    /// `since` (a scheduled run after an outage of the reconciler itself),
    /// bounded by what GitHub keeps.
    pub resume: bool,
}

/// How far before the last complete run a resumed run starts again (clocks differ).
pub const RESUME_OVERLAP_SECS: u64 = 300;

impl Options {
    /// Where the run starts: `since`, or earlier when it resumes from `last_run`.
    pub fn start(&self, last_run: Option<u64>) -> u64 {
        match (self.resume, last_run) {
            (true, Some(last)) => self
                .since
                .min(last.saturating_sub(RESUME_OVERLAP_SECS))
                .max(self.now.saturating_sub(MAX_WINDOW_SECS)),
            _ => self.since,
        }
    }
}

/// Runs once: lists the hooks' deliveries, redelivers each failed event once
/// (oldest first, up to `max`), records what it redelivered in `state` (when
/// given), and reports. `progress` sees each failed event as it is settled,
/// with the number of failed events in all.
/// GitHub refusing the credentials ends the run.
pub async fn reconcile<G: GitHub, S: Bucket>(
    github: &G,
    state: Option<&S>,
    options: &Options,
    mut progress: impl FnMut(&Failed, usize),
) -> Result<Report, ReconcileError> {
    let mut done = match state {
        Some(store) => match store.get(STATE_KEY).await {
            Ok(bytes) => Redelivered::from_bytes(&bytes)?,
            Err(e) if e.kind == PortErrorKind::NotFound => Redelivered::default(),
            Err(e) => return Err(ReconcileError::State(e.to_string())),
        },
        None => Redelivered::default(),
    };
    let since = options.start(done.last_run);
    let mut report = Report::default();
    let todo = to_redeliver(github, options, since, &mut report).await?;
    let total = todo.len();
    let mut made = 0;
    let mut changed = false;
    for (hook, delivery, attempts) in todo {
        let action = if let Some(at) = done.recent(&delivery.guid, options.now) {
            Action::Skipped { at }
        } else if made >= options.max {
            Action::Left
        } else if options.dry_run {
            made += 1;
            Action::WouldRedeliver
        } else {
            made += 1;
            redeliver(
                github,
                state,
                &mut done,
                options.now,
                hook,
                &delivery,
                &mut changed,
            )
            .await?
        };
        let failed = Failed {
            hook: hook.to_string(),
            delivery,
            attempts,
            action,
        };
        progress(&failed, total);
        report.failed.push(failed);
    }
    if options.resume && !options.dry_run && report.hook_errors.is_empty() {
        done.last_run = Some(options.now);
        changed = true;
    }
    save(state, &done, options.now, changed).await?;
    Ok(report)
}

/// Asks GitHub to redeliver `delivery`, and keeps that it did (saved as it
/// goes: a run cut short, by a timeout, redelivers none twice). A 403 ends
/// the run, with what was done saved.
async fn redeliver<G: GitHub, S: Bucket>(
    github: &G,
    state: Option<&S>,
    done: &mut Redelivered,
    now: u64,
    hook: &HookSource,
    delivery: &HookDelivery,
    changed: &mut bool,
) -> Result<Action, ReconcileError> {
    match github.redeliver(hook, delivery.id).await {
        Ok(()) => {
            done.guids.insert(delivery.guid.clone(), now);
            save(state, done, now, true).await?;
            *changed = false;
            Ok(Action::Redelivered)
        }
        Err(e) if e.kind == PortErrorKind::Denied => {
            save(state, done, now, *changed).await?;
            Err(ReconcileError::Denied {
                hook: hook.to_string(),
                source: e,
            })
        }
        Err(e) => Ok(Action::Error {
            error: e.to_string(),
        }),
    }
}

/// The failed deliveries of every hook since `since`, each with its
/// repository, oldest first and each event once (it may have failed at two
/// hooks). A hook that cannot be listed is reported and skipped; one GitHub
/// refuses (403) ends the run.
async fn to_redeliver<'o, G: GitHub>(
    github: &G,
    options: &'o Options,
    since: u64,
    report: &mut Report,
) -> Result<Vec<(&'o HookSource, HookDelivery, usize)>, ReconcileError> {
    let mut todo: Vec<(&HookSource, HookDelivery, usize)> = Vec::new();
    for hook in &options.hooks {
        let denied = |source: PortError| ReconcileError::Denied {
            hook: hook.to_string(),
            source,
        };
        let listed = match github.deliveries(hook, since).await {
            Ok(listed) => listed,
            Err(e) if e.kind == PortErrorKind::Denied => return Err(denied(e)),
            Err(e) => {
                report.hook_errors.push(format!("{hook}: {e}"));
                continue;
            }
        };
        report.listed += listed.len();
        for (mut d, n) in failures(&listed, since) {
            d.repository = match (d.repository.take(), hook.repository()) {
                (Some(r), _) => Some(r),
                (None, Some(r)) => Some(r.to_string()),
                (None, None) => match github.delivery_repository(hook, d.id).await {
                    Ok(r) => r,
                    Err(e) if e.kind == PortErrorKind::Denied => return Err(denied(e)),
                    Err(_) => None,
                },
            };
            todo.push((hook, d, n));
        }
    }
    todo.sort_by_key(|(_, d, _)| (d.delivered_at, d.id));
    let mut seen = HashSet::new();
    todo.retain(|(_, d, _)| seen.insert(d.guid.clone()));
    Ok(todo)
}

async fn save<S: Bucket>(
    state: Option<&S>,
    done: &Redelivered,
    now: u64,
    changed: bool,
) -> Result<(), ReconcileError> {
    match state {
        Some(store) if changed => store
            .put(STATE_KEY, done.to_bytes(now))
            .await
            .map_err(|e| ReconcileError::State(e.to_string())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::memory::{MemoryGitHub, MemoryPayloads};

    fn d(id: u64, guid: &str, at: u64, code: u16) -> HookDelivery {
        HookDelivery {
            id,
            guid: guid.into(),
            delivered_at: at,
            redelivery: false,
            status: String::new(),
            status_code: code,
            event: "push".into(),
            action: None,
            repository: None,
        }
    }

    #[test]
    fn hooks_parse_and_bad_ones_are_named() {
        assert_eq!(
            HookSource::parse_list("org/octo-org/7, repo/octo-org/mono/42,app").unwrap(),
            vec![
                HookSource::Org {
                    org: "octo-org".into(),
                    id: 7
                },
                HookSource::Repo {
                    repository: "octo-org/mono".into(),
                    id: 42
                },
                HookSource::App
            ]
        );
        for bad in [
            "org/x",
            "repo/a/b/c",
            "repo/a/b/0",
            "user/x/1",
            "org/../1",
            "apps",
        ] {
            let e = HookSource::parse_list(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert_eq!(HookSource::parse_list(" , "), Err(ReconcileError::NoHooks));
        assert_eq!(
            HookSource::parse("repo/o/n/5").unwrap().deliveries_path(),
            "repos/o/n/hooks/5/deliveries"
        );
    }

    #[test]
    fn githubs_published_delivery_examples_read() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/hook-deliveries.json"))
                .unwrap();
        let items: Vec<HookDelivery> = v["hook-delivery-items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| HookDelivery::from_api(i).unwrap())
            .collect();
        assert_eq!(items.len(), 2);
        assert_eq!(
            (items[0].id, items[0].status_code, items[1].redelivery),
            (12345678, 200, true)
        );
        assert_eq!(items[0].delivered_at, 1_559_523_436);
        assert!(items[0].succeeded());
        // A failed attempt with no answer reads as status 0.
        let mut failed = v["hook-delivery"].clone();
        failed["status_code"] = 0.into();
        failed["status"] = "failed to connect".into();
        let d = HookDelivery::from_api(&failed).unwrap();
        assert_eq!((d.status_code, d.succeeded()), (0, false));
        assert!(HookDelivery::from_api(&serde_json::json!({"id": 1})).is_err());
    }

    #[test]
    fn a_guid_with_any_success_is_not_failed_and_the_window_is_respected() {
        let all = [
            d(1, "a", 100, 502),
            d(2, "a", 150, 202), // redelivered successfully
            d(3, "b", 110, 0),
            d(4, "b", 160, 503),
            d(5, "c", 120, 200),
            d(6, "old", 50, 500), // before the window
            d(7, "e", 105, 413),
        ];
        let f = failures(&all, 100);
        let got: Vec<(&str, u64, u64, usize)> = f
            .iter()
            .map(|(d, n)| (d.guid.as_str(), d.id, d.delivered_at, *n))
            .collect();
        // Oldest first by first attempt; the latest attempt's id.
        assert_eq!(got, vec![("e", 7, 105, 1), ("b", 4, 110, 2)]);
    }

    #[test]
    fn the_state_forgets_what_github_forgot() {
        let mut s = Redelivered::default();
        s.guids.insert("old".into(), 0);
        s.guids.insert("new".into(), MAX_WINDOW_SECS);
        let back = Redelivered::from_bytes(&s.to_bytes(MAX_WINDOW_SECS + 10)).unwrap();
        assert_eq!(back.guids.keys().collect::<Vec<_>>(), vec!["new"]);
        assert_eq!(
            back.recent("new", MAX_WINDOW_SECS + 10),
            Some(MAX_WINDOW_SECS)
        );
        assert_eq!(back.recent("new", MAX_WINDOW_SECS + COOLDOWN_SECS), None);
        assert!(Redelivered::from_bytes(b"not json").is_err());
    }

    fn hook() -> HookSource {
        HookSource::Repo {
            repository: "o/n".into(),
            id: 1,
        }
    }

    fn options(max: usize, dry_run: bool) -> Options {
        Options {
            hooks: vec![hook()],
            since: 0,
            now: 1_000,
            max,
            dry_run,
            resume: false,
        }
    }

    #[tokio::test]
    async fn redelivers_each_failure_once_then_skips_it_and_caps_a_run() {
        // Every redelivery fails again (Spigot is still down).
        let github = MemoryGitHub {
            redelivery_status: Some(503),
            ..Default::default()
        };
        *github.deliveries.lock().unwrap() = vec![
            d(1, "a", 10, 502),
            d(2, "b", 20, 503),
            d(3, "c", 30, 200),
            d(4, "d", 40, 0),
        ];
        let store = MemoryPayloads::default();
        let r = reconcile(&github, Some(&store), &options(2, false), |_, _| {})
            .await
            .unwrap();
        assert_eq!(r.listed, 4);
        let actions: Vec<_> = r
            .failed
            .iter()
            .map(|f| (f.delivery.guid.as_str(), f.action.clone()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("a", Action::Redelivered),
                ("b", Action::Redelivered),
                ("d", Action::Left)
            ]
        );
        assert_eq!(*github.redelivered.lock().unwrap(), vec![1, 2]);
        assert_eq!(r.unrecovered(), 1);
        assert_eq!(r.failed[0].delivery.repository.as_deref(), Some("o/n"));
        // The next run skips what this one redelivered (within the cooldown)
        // and takes the one left.
        let r = reconcile(&github, Some(&store), &options(2, false), |_, _| {})
            .await
            .unwrap();
        assert_eq!((r.skipped(), r.redelivered(), r.unrecovered()), (2, 1, 0));
        assert_eq!(*github.redelivered.lock().unwrap(), vec![1, 2, 4]);
        // After the cooldown, still failing: redelivered again (the newest attempt).
        let later = Options {
            now: 1_000 + COOLDOWN_SECS,
            ..options(10, false)
        };
        let r = reconcile(&github, Some(&store), &later, |_, _| {})
            .await
            .unwrap();
        assert_eq!((r.skipped(), r.redelivered()), (0, 3));
        assert_eq!(*github.redelivered.lock().unwrap(), vec![1, 2, 4, 5, 6, 7]);
        // Redeliveries that reached Spigot leave nothing failed.
        let ok = MemoryGitHub::default();
        *ok.deliveries.lock().unwrap() = vec![d(1, "a", 10, 502)];
        reconcile(&ok, None::<&MemoryPayloads>, &options(10, false), |_, _| {})
            .await
            .unwrap();
        let r = reconcile(&ok, None::<&MemoryPayloads>, &options(10, false), |_, _| {})
            .await
            .unwrap();
        assert!(r.failed.is_empty(), "{r:?}");
    }

    #[tokio::test]
    async fn a_dry_run_redelivers_nothing_and_writes_no_state() {
        let github = MemoryGitHub::default();
        *github.deliveries.lock().unwrap() = vec![d(1, "a", 10, 502)];
        let store = MemoryPayloads::default();
        let r = reconcile(&github, Some(&store), &options(10, true), |_, _| {})
            .await
            .unwrap();
        assert_eq!(r.failed[0].action, Action::WouldRedeliver);
        assert!(github.redelivered.lock().unwrap().is_empty());
        assert!(store.get(STATE_KEY).await.is_err());
        // Positive control: the same run for real writes both.
        reconcile(&github, Some(&store), &options(10, false), |_, _| {})
            .await
            .unwrap();
        assert_eq!(*github.redelivered.lock().unwrap(), vec![1]);
        assert!(store.get(STATE_KEY).await.is_ok());
    }

    #[tokio::test]
    async fn denied_credentials_end_the_run_other_errors_are_reported() {
        let github = MemoryGitHub {
            fail: Some(PortError::of(PortErrorKind::Denied, "401 Bad credentials")),
            ..Default::default()
        };
        let e = reconcile(
            &github,
            None::<&MemoryPayloads>,
            &options(10, false),
            |_, _| {},
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("401 Bad credentials"), "{e}");
        let github = MemoryGitHub {
            fail: Some(PortError::of(PortErrorKind::NotFound, "404 Not Found")),
            ..Default::default()
        };
        let r = reconcile(
            &github,
            None::<&MemoryPayloads>,
            &options(10, false),
            |_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(r.hook_errors.len(), 1);
        assert_eq!(r.unrecovered(), 1);
    }

    /// A scheduled run resumes from the last complete run (an outage of
    /// the reconciler loses no window), bounded by what GitHub keeps; the
    /// state is saved after each redelivery, not only at the end.
    #[tokio::test]
    async fn a_scheduled_run_resumes_from_the_last_complete_run_and_saves_as_it_goes() {
        let github = MemoryGitHub::default();
        let store = MemoryPayloads::default();
        let hour = 3_600;
        let t = 10 * 24 * hour;
        let scheduled = |now: u64| Options {
            hooks: vec![hook()],
            since: now - 2 * hour,
            now,
            max: 10,
            dry_run: false,
            resume: true,
        };
        reconcile(&github, Some(&store), &scheduled(t), |_, _| {})
            .await
            .unwrap();
        // Failed an hour after that run; the reconciler was down for five hours.
        *github.deliveries.lock().unwrap() = vec![d(1, "a", t + hour, 502)];
        let plain = Options {
            resume: false,
            ..scheduled(t + 5 * hour)
        };
        let r = reconcile(&github, None::<&MemoryPayloads>, &plain, |_, _| {})
            .await
            .unwrap();
        assert_eq!(r.failed.len(), 0, "a plain 2 h window misses it (control)");
        let r = reconcile(&github, Some(&store), &scheduled(t + 5 * hour), |_, _| {})
            .await
            .unwrap();
        assert_eq!(r.redelivered(), 1, "resumed from the last run");
        let state = Redelivered::from_bytes(&store.get(STATE_KEY).await.unwrap()).unwrap();
        assert_eq!(state.last_run, Some(t + 5 * hour));
        assert!(state.guids.contains_key("a"));
        // Bounded: a last run older than GitHub's 3 days starts at 3 days.
        let o = scheduled(t + 10 * 24 * hour);
        assert_eq!(o.start(Some(t)), o.now - MAX_WINDOW_SECS);
        // Saved as it goes: a run cut short at its second redelivery (the
        // Lambda's timeout) keeps the first.
        let hanging = MemoryGitHub::default();
        *hanging.deliveries.lock().unwrap() = vec![d(7, "x", t, 502), d(8, "y", t + 1, 502)];
        *hanging.hang_after.lock().unwrap() = Some(1);
        let fresh = MemoryPayloads::default();
        let options = scheduled(t + hour);
        let run = reconcile(&hanging, Some(&fresh), &options, |_, _| {});
        let cut = tokio::time::timeout(std::time::Duration::from_millis(200), run).await;
        assert!(cut.is_err(), "cut short");
        let state = Redelivered::from_bytes(&fresh.get(STATE_KEY).await.unwrap()).unwrap();
        assert!(
            state.guids.contains_key("x") && !state.guids.contains_key("y"),
            "{state:?}"
        );
    }
}
