//! Pipeline filters: which pushes start which pipeline.
//!
//! A filter names a repository, a branch (exact or glob) and, optionally,
//! path patterns (glob, CodePipeline V2 trigger style, or regex anchored at
//! the start like Python's `re.match`). Excludes win over includes.

use std::fmt;

use globset::{Candidate, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use regex::RegexSet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::push::Push;

/// The prefix of every filter object in the config bucket.
pub use crate::layout::FILTERS as PREFIX;

/// Property names of the older filter format.
const LEGACY_KEYS: [&str; 4] = [
    "GitHubRepo",
    "GitHubBranch",
    "ChangeMatchExpressions",
    "CodePipelineName",
];

/// Everything percent-encoded but the unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One problem with a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not JSON, not an object, a wrong type or an unknown field.
    #[error("{0}")]
    Shape(String),
    /// `Repository` is not `owner/name`.
    #[error("Repository {0:?} must be owner/name, e.g. octo-org/mono")]
    Repository(String),
    /// `Branch` is empty.
    #[error("Branch must not be empty (use * for every branch)")]
    EmptyBranch,
    /// `Branch` is not a valid glob.
    #[error("Branch {0:?} is not a valid glob: {1}")]
    Branch(String, String),
    /// `Pipeline` is empty or not a pipeline name.
    #[error("Pipeline {0:?} must be a CodePipeline name (1-100 of A-Z a-z 0-9 . @ - _)")]
    Pipeline(String),
    /// `Trigger` is not a trigger name.
    #[error(
        "Trigger {0:?} must be a trigger name (1-64 of A-Z a-z 0-9 . _ -, not starting with .)"
    )]
    Trigger(String),
    /// Both or neither of `Pipeline` and `Trigger`.
    #[error("a filter names one Pipeline to start or one Trigger to raise, not both")]
    PipelineAndTrigger,
    /// `SourceAction` on a filter that raises a trigger.
    #[error("SourceAction pins a pipeline's source; a filter with a Trigger has none")]
    SourceActionOnTrigger,
    /// `Syntax` is neither glob nor regex.
    #[error("Syntax {0:?} must be glob or regex")]
    Syntax(String),
    /// A regex pattern does not compile.
    #[error("{field}[{index}] {pattern:?} is not a valid regex: {message} at position {position}")]
    Regex {
        /// `Include` or `Exclude`.
        field: &'static str,
        /// Index in the list.
        index: usize,
        /// The pattern.
        pattern: String,
        /// Byte offset of the problem in the pattern.
        position: usize,
        /// What is wrong.
        message: String,
    },
    /// A glob pattern does not compile.
    #[error("{field}[{index}] {pattern:?} is not a valid glob: {message}")]
    Glob {
        /// `Include` or `Exclude`.
        field: &'static str,
        /// Index in the list.
        index: usize,
        /// The pattern.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// `SourceAction` is empty.
    #[error("SourceAction must name the pipeline's source action when given")]
    SourceAction,
    /// More patterns than a filter may have.
    #[error(
        "a filter may have at most {MAX_PATTERNS} Include and Exclude patterns together, this one has {0}"
    )]
    TooManyPatterns(usize),
    /// A pattern longer than allowed.
    #[error(
        "{field}[{index}] is {len} characters long; a pattern may have at most {MAX_PATTERN_LEN}"
    )]
    PatternTooLong {
        /// `Include` or `Exclude`.
        field: &'static str,
        /// Position in the list.
        index: usize,
        /// Its length.
        len: usize,
    },
}

/// Include + Exclude patterns a filter may have (CodePipeline V2 triggers allow 8 + 8).
pub const MAX_PATTERNS: usize = 50;
/// Characters a pattern may have.
pub const MAX_PATTERN_LEN: usize = 256;

/// Every problem of a filter (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub Vec<Problem>);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid filter: ")?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FilterError {}

impl From<Problem> for FilterError {
    fn from(p: Problem) -> Self {
        FilterError(vec![p])
    }
}

/// How path patterns are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Syntax {
    /// `*`, `**`, `?`, `{a,b}` (CodePipeline V2 triggers).
    #[default]
    Glob,
    /// Regular expressions anchored at the start of the path.
    Regex,
}

/// A filter as written (stored as JSON, or given as custom resource properties).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// `owner/name`.
    #[serde(rename = "Repository")]
    pub repository: String,
    /// Exact branch name or glob.
    #[serde(rename = "Branch")]
    pub branch: String,
    /// The CodePipeline pipeline to start (empty when the filter raises a trigger).
    #[serde(rename = "Pipeline", default, skip_serializing_if = "String::is_empty")]
    pub pipeline: String,
    /// The trigger to raise instead, for the pull-deployment agents that follow it.
    #[serde(rename = "Trigger", default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Path patterns; none means every change matches.
    #[serde(rename = "Include", default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Path patterns that never trigger (they win over includes).
    #[serde(rename = "Exclude", default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `glob` (default) or `regex`.
    #[serde(rename = "Syntax", default, skip_serializing_if = "Option::is_none")]
    pub syntax: Option<String>,
    /// Source action to pin to the pushed commit (V2 pipelines).
    #[serde(
        rename = "SourceAction",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_action: Option<String>,
    /// The CloudFormation stack that declared it (its `StackId`): only that stack
    /// may change or delete it. Set by the custom resource, never by properties.
    #[serde(
        rename = "OwnerStack",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub owner_stack: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacySpec {
    #[serde(rename = "GitHubRepo")]
    repo: String,
    #[serde(rename = "GitHubBranch")]
    branch: String,
    #[serde(rename = "ChangeMatchExpressions", default)]
    expressions: String,
    #[serde(rename = "CodePipelineName")]
    pipeline: String,
}

impl FilterSpec {
    /// Reads a filter object, in the current or the older format.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FilterError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Problem::Shape(format!("filter is not JSON: {e}")))?;
        match value {
            Value::Object(map) => Self::from_map(map),
            _ => Err(Problem::Shape("filter must be a JSON object".into()).into()),
        }
    }

    /// Reads a filter from custom resource properties: `ServiceToken` is ignored,
    /// and so is an `OwnerStack` (ownership comes from the request's StackId,
    /// never from what a template says).
    pub fn from_properties(mut map: Map<String, Value>) -> Result<Self, FilterError> {
        map.remove("OwnerStack");
        Self::from_map(map)
    }

    /// Reads a filter from an object (`ServiceToken` is ignored).
    pub fn from_map(mut map: Map<String, Value>) -> Result<Self, FilterError> {
        map.remove("ServiceToken");
        let shape = |e: serde_json::Error| FilterError::from(Problem::Shape(e.to_string()));
        if LEGACY_KEYS.iter().any(|k| map.contains_key(*k)) {
            let legacy: LegacySpec = serde_json::from_value(Value::Object(map)).map_err(shape)?;
            return Ok(Self {
                repository: legacy.repo,
                branch: legacy.branch,
                pipeline: legacy.pipeline,
                include: legacy
                    .expressions
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                exclude: Vec::new(),
                syntax: Some("regex".into()),
                source_action: None,
                owner_stack: None,
                trigger: None,
            });
        }
        // Every unknown field at once, each with the field it was probably meant to be.
        let unknown: Vec<Problem> = map
            .keys()
            .filter(|k| !FIELDS.contains(&k.as_str()))
            .map(|k| {
                let hint = closest(k)
                    .map(|f| format!(" (did you mean {f}?)"))
                    .unwrap_or_default();
                Problem::Shape(format!(
                    "unknown field `{k}`{hint}; a filter has {}",
                    FIELDS.join(", ")
                ))
            })
            .collect();
        if !unknown.is_empty() {
            return Err(FilterError(unknown));
        }
        serde_json::from_value(Value::Object(map)).map_err(shape)
    }

    /// The JSON stored in the bucket.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a filter always serialises")
    }

    /// What a matching push does.
    pub fn action(&self) -> Action<'_> {
        match &self.trigger {
            Some(name) => Action::Trigger(name),
            None => Action::Pipeline(&self.pipeline),
        }
    }

    /// The storage key: `filters/{owner}/{repo}/{branch}/{pipeline}.json`
    /// (`trigger:{name}.json` for a trigger), segments percent-encoded.
    pub fn key(&self) -> String {
        let (owner, repo) = self
            .repository
            .split_once('/')
            .unwrap_or((&self.repository, ""));
        format!(
            "{}{}{}.json",
            repository_prefix_parts(owner, repo),
            utf8_percent_encode(&self.branch, SEGMENT),
            format_args!("/{}", utf8_percent_encode(&self.action().label(), SEGMENT))
        )
    }

    /// Validates and compiles.
    pub fn compile(self) -> Result<Filter, FilterError> {
        Filter::new(self)
    }
}

/// The fields of a filter object.
const FIELDS: [&str; 9] = [
    "Repository",
    "Branch",
    "Pipeline",
    "Trigger",
    "Include",
    "Exclude",
    "Syntax",
    "SourceAction",
    "OwnerStack",
];

/// The field `name` was probably meant to be: the same but for case, or at
/// most two edits away.
fn closest(name: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cost = usize::from(ca != *cb);
                let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
                prev = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    }
    let lower = name.to_ascii_lowercase();
    FIELDS
        .iter()
        .map(|f| (distance(&lower, &f.to_ascii_lowercase()), *f))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, f)| f)
}

fn repository_prefix_parts(owner: &str, repo: &str) -> String {
    format!(
        "{PREFIX}{}/{}/",
        utf8_percent_encode(&owner.to_ascii_lowercase(), SEGMENT),
        utf8_percent_encode(&repo.to_ascii_lowercase(), SEGMENT)
    )
}

/// The key prefix under which every filter of `repository` (`owner/name`) lives.
pub fn repository_prefix(repository: &str) -> String {
    let (owner, repo) = repository.split_once('/').unwrap_or((repository, ""));
    repository_prefix_parts(owner, repo)
}

/// Checks `candidate` against the other filters of its repository in `store`:
/// refused, naming it, when it would not compile together with them.
pub async fn admit(
    store: &impl crate::ports::FilterStore,
    candidate: &Filter,
) -> Result<(), AdmitError> {
    let stored = store
        .list(&repository_prefix(&candidate.spec.repository))
        .await
        .map_err(AdmitError::List)?;
    let existing = stored
        .iter()
        .filter_map(|s| {
            FilterSpec::from_json(&s.bytes)
                .and_then(FilterSpec::compile)
                .ok()
        })
        .collect();
    FilterSet::admits(existing, candidate.clone()).map_err(AdmitError::Unfit)
}

/// Why a filter is not admitted beside the others of its repository.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The repository's filters could not be listed.
    #[error("cannot list the repository's filters: {0}")]
    List(crate::ports::PortError),
    /// It does not compile together with them.
    #[error("{}", .0.reason)]
    Unfit(Unfit),
}

/// Path patterns that cannot be compiled together (the library's first line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct PatternError(String);

/// True for keys this system writes: `filters/a/b/c/d.json`, four non-empty segments, no `..`.
pub fn is_filter_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    segments.len() == 4
        && segments
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != "..")
        && rest.ends_with(".json")
}

/// The `clientRequestToken` for starting `pipeline` for a push whose body has
/// SHA-256 `body_sha256`: derived from what the signature covers, so the same
/// signed body never starts a pipeline twice, whatever `X-GitHub-Delivery`
/// (unsigned) it is resent under; GitHub's own redeliveries carry the same body.
pub fn execution_token(body_sha256: &str, pipeline: &str) -> String {
    crate::envelope::sha256_hex(format!("{body_sha256}\n{pipeline}").as_bytes())
}

/// What a filter does with a push it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Starts this CodePipeline pipeline.
    Pipeline(&'a str),
    /// Raises this trigger, for the agents that follow it.
    Trigger(&'a str),
}

impl Action<'_> {
    /// The pipeline's name, or `trigger:{name}`: unique among a repository's
    /// filters (a pipeline name has no `:`), so it names keys and records.
    pub fn label(&self) -> String {
        match self {
            Action::Pipeline(p) => (*p).to_string(),
            Action::Trigger(t) => format!("trigger:{t}"),
        }
    }
}

impl fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Pipeline(p) => write!(f, "pipeline {p}"),
            Action::Trigger(t) => write!(f, "trigger {t}"),
        }
    }
}

#[derive(Debug, Clone)]
enum BranchMatcher {
    Exact(String),
    Glob(GlobMatcher),
}

/// A validated, compiled filter.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The filter as written.
    pub spec: FilterSpec,
    /// Its path syntax.
    pub syntax: Syntax,
    branch: BranchMatcher,
}

fn is_pipeline_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

fn is_repository(s: &str) -> bool {
    let ok = |part: &str, extra: &[u8]| {
        !part.is_empty()
            && part.len() <= 100
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || extra.contains(&b))
    };
    matches!(s.split_once('/'), Some((o, r)) if ok(o, b"") && ok(r, b"._") && r != "." && r != "..")
}

fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// A regex anchored at the start of the path, as Python's `re.match` would apply it.
fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})")
}

fn check_regex(field: &'static str, index: usize, pattern: &str) -> Option<Problem> {
    let problem = |position: usize, message: String| Problem::Regex {
        field,
        index,
        pattern: pattern.to_string(),
        position,
        message,
    };
    if let Err(e) = regex_syntax::ast::parse::Parser::new().parse(pattern) {
        return Some(problem(e.span().start.offset, e.kind().to_string()));
    }
    match regex::Regex::new(&anchored(pattern)) {
        Ok(_) => None,
        Err(e) => Some(problem(
            0,
            e.to_string()
                .lines()
                .last()
                .unwrap_or("invalid")
                .trim()
                .to_string(),
        )),
    }
}

impl Filter {
    /// Validates a spec, reporting every problem at once.
    pub fn new(spec: FilterSpec) -> Result<Self, FilterError> {
        let mut problems = Vec::new();
        if !is_repository(&spec.repository) {
            problems.push(Problem::Repository(spec.repository.clone()));
        }
        check_action(&spec, &mut problems);
        let syntax = match spec
            .syntax
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("glob") => Syntax::Glob,
            Some("regex") => Syntax::Regex,
            Some(other) => {
                problems.push(Problem::Syntax(other.to_string()));
                Syntax::Glob
            }
        };
        let branch = branch_matcher(&spec.branch, &mut problems);
        check_patterns(&spec, syntax, &mut problems);
        if spec
            .source_action
            .as_deref()
            .is_some_and(|a| a.trim().is_empty())
        {
            problems.push(Problem::SourceAction);
        }
        if problems.is_empty() {
            Ok(Self {
                spec,
                syntax,
                branch,
            })
        } else {
            Err(FilterError(problems))
        }
    }

    /// True when `branch` is this filter's branch.
    pub fn matches_branch(&self, branch: &str) -> bool {
        match &self.branch {
            BranchMatcher::Exact(b) => b == branch,
            BranchMatcher::Glob(g) => g.is_match(branch),
        }
    }
}

/// Why a filter did or did not start its pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// A changed path matched an include pattern and no exclude.
    Path {
        /// The path.
        path: String,
        /// The include pattern (`None`: the filter has no includes).
        pattern: Option<String>,
    },
    /// Path matching cannot be trusted; repository and branch matched.
    Conservative(&'static str),
    /// Another repository.
    OtherRepository,
    /// Another branch.
    OtherBranch,
    /// A tag push.
    Tag,
    /// A deleted branch.
    Deleted,
    /// No changed path was included (or every included one was excluded).
    NoPath,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Path {
                path,
                pattern: Some(p),
            } => write!(f, "{path} matches {p}"),
            Why::Path {
                path,
                pattern: None,
            } => write!(f, "{path} changed (no Include: any change)"),
            Why::Conservative(why) => write!(f, "repository and branch match; {why}"),
            Why::OtherRepository => f.write_str("other repository"),
            Why::OtherBranch => f.write_str("other branch"),
            Why::Tag => f.write_str("tag push (tags never trigger)"),
            Why::Deleted => f.write_str("branch deleted (never triggers)"),
            Why::NoPath => f.write_str("no changed path included, or all excluded"),
        }
    }
}

/// The decision for one filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index of the filter in its set.
    pub filter: usize,
    /// Start the pipeline?
    pub start: bool,
    /// Why.
    pub why: Why,
}

/// Path patterns of many filters compiled together: one set match per path.
#[derive(Debug, Clone)]
struct Patterns {
    globs: GlobSet,
    glob_owner: Vec<(usize, usize)>,
    regexes: RegexSet,
    regex_owner: Vec<(usize, usize)>,
}

impl Patterns {
    fn build(
        filters: &[Filter],
        pick: impl Fn(&FilterSpec) -> &Vec<String>,
    ) -> Result<Self, PatternError> {
        let mut globs = GlobSetBuilder::new();
        let mut glob_owner = Vec::new();
        let mut regexes = Vec::new();
        let mut regex_owner = Vec::new();
        for (fi, f) in filters.iter().enumerate() {
            for (pi, p) in pick(&f.spec).iter().enumerate() {
                match f.syntax {
                    Syntax::Glob => {
                        globs.add(glob(p).map_err(|e| PatternError(e.to_string()))?);
                        glob_owner.push((fi, pi));
                    }
                    Syntax::Regex => {
                        regexes.push(anchored(p));
                        regex_owner.push((fi, pi));
                    }
                }
            }
        }
        Ok(Self {
            globs: globs.build().map_err(|e| PatternError(e.to_string()))?,
            glob_owner,
            regexes: RegexSet::new(&regexes).map_err(|e| {
                // regex's message is several lines; its first says it.
                PatternError(
                    e.to_string()
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_string(),
                )
            })?,
            regex_owner,
        })
    }

    /// Calls `hit(filter, pattern)` for every pattern matching `path`.
    fn each_match(
        &self,
        path: &str,
        cand: &Candidate<'_>,
        buf: &mut Vec<usize>,
        mut hit: impl FnMut(usize, usize),
    ) {
        if !self.glob_owner.is_empty() {
            self.globs.matches_candidate_into(cand, buf);
            for &i in buf.iter() {
                let (f, p) = self.glob_owner[i];
                hit(f, p);
            }
        }
        if !self.regex_owner.is_empty() {
            for i in self.regexes.matches(path).iter() {
                let (f, p) = self.regex_owner[i];
                hit(f, p);
            }
        }
    }
}

/// Filters compiled together (one repository's, cached by the evaluator).
#[derive(Debug, Clone)]
pub struct FilterSet {
    /// The filters, in the order given.
    pub filters: Vec<Filter>,
    include: Patterns,
    exclude: Patterns,
}

/// A filter that is valid alone but does not fit in its repository's compiled
/// set (together its patterns exceed the regex engine's compiled-size limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit {
    /// The filter's key.
    pub key: String,
    /// Why, in one sentence.
    pub reason: String,
}

impl FilterSet {
    /// Compiles the path patterns of `filters` into shared sets. Filters that
    /// do not fit together are left out (first come, first in) and returned.
    pub fn new(filters: Vec<Filter>) -> (Self, Vec<Unfit>) {
        if let Ok(set) = Self::compile(filters.clone()) {
            return (set, Vec::new());
        }
        let mut fitting: Vec<Filter> = Vec::new();
        let mut unfit = Vec::new();
        for f in filters {
            let mut trial = fitting.clone();
            trial.push(f.clone());
            match Self::compile(trial) {
                Ok(_) => fitting.push(f),
                Err(reason) => unfit.push(Unfit {
                    key: f.spec.key(),
                    reason: format!(
                        "filter {} ({}) does not fit with the other filters of {}: {reason}",
                        f.spec.key(),
                        f.spec.action(),
                        f.spec.repository
                    ),
                }),
            }
        }
        let set = Self::compile(fitting).unwrap_or_else(|_| Self::empty());
        (set, unfit)
    }

    /// `Ok` when `candidate` fits with `existing` (the repository's other filters).
    pub fn admits(existing: Vec<Filter>, candidate: Filter) -> Result<(), Unfit> {
        let key = candidate.spec.key();
        let mut all: Vec<Filter> = existing
            .into_iter()
            .filter(|f| f.spec.key() != key)
            .collect();
        all.push(candidate);
        let (_, unfit) = Self::new(all);
        match unfit.into_iter().find(|u| u.key == key) {
            Some(u) => Err(u),
            None => Ok(()),
        }
    }

    fn compile(filters: Vec<Filter>) -> Result<Self, PatternError> {
        let include = Patterns::build(&filters, |s| &s.include)?;
        let exclude = Patterns::build(&filters, |s| &s.exclude)?;
        Ok(Self {
            filters,
            include,
            exclude,
        })
    }

    fn empty() -> Self {
        Self::compile(Vec::new()).expect("an empty set always compiles")
    }

    /// Decides every filter for `push`.
    pub fn evaluate(&self, push: &Push<'_>) -> Vec<Decision> {
        let n = self.filters.len();
        let mut decisions: Vec<Option<Decision>> = vec![None; n];
        let mut candidates = Vec::new();
        for (i, f) in self.filters.iter().enumerate() {
            let why = if !f.spec.repository.eq_ignore_ascii_case(&push.repository) {
                Some(Why::OtherRepository)
            } else if push.is_tag() || push.branch().is_none() {
                Some(Why::Tag)
            } else if push.deleted {
                Some(Why::Deleted)
            } else if !f.matches_branch(push.branch().unwrap_or_default()) {
                Some(Why::OtherBranch)
            } else {
                None
            };
            match why {
                Some(why) => {
                    decisions[i] = Some(Decision {
                        filter: i,
                        start: false,
                        why,
                    })
                }
                None => candidates.push(i),
            }
        }
        if !candidates.is_empty() {
            if let Some(reason) = push.conservative_reason() {
                for &i in &candidates {
                    decisions[i] = Some(Decision {
                        filter: i,
                        start: true,
                        why: Why::Conservative(reason),
                    });
                }
            } else {
                self.match_paths(push, &candidates, &mut decisions);
            }
        }
        decisions
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                d.unwrap_or(Decision {
                    filter: i,
                    start: false,
                    why: Why::NoPath,
                })
            })
            .collect()
    }

    fn match_paths(
        &self,
        push: &Push<'_>,
        candidates: &[usize],
        decisions: &mut [Option<Decision>],
    ) {
        let n = self.filters.len();
        let mut is_candidate = vec![false; n];
        for &i in candidates {
            is_candidate[i] = true;
        }
        let open_ended: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| self.filters[i].spec.include.is_empty())
            .collect();
        let mut excluded_at = vec![usize::MAX; n];
        let mut left = candidates.len();
        let mut buf = Vec::new();
        for (pi, path) in push.paths.iter().enumerate() {
            let cand = Candidate::new(path.as_ref());
            self.exclude
                .each_match(path, &cand, &mut buf, |f, _| excluded_at[f] = pi);
            let mut hits: Vec<(usize, Option<usize>)> = Vec::new();
            self.include
                .each_match(path, &cand, &mut buf, |f, p| hits.push((f, Some(p))));
            hits.extend(open_ended.iter().map(|&f| (f, None)));
            for (f, p) in hits {
                if is_candidate[f] && decisions[f].is_none() && excluded_at[f] != pi {
                    decisions[f] = Some(Decision {
                        filter: f,
                        start: true,
                        why: Why::Path {
                            path: path.to_string(),
                            pattern: p.map(|p| self.filters[f].spec.include[p].clone()),
                        },
                    });
                    left -= 1;
                }
            }
            if left == 0 {
                break;
            }
        }
    }
}

/// A filter names a pipeline or a trigger (exactly one), each by a valid
/// name; a trigger takes no `SourceAction`.
fn check_action(spec: &FilterSpec, problems: &mut Vec<Problem>) {
    match (&spec.trigger, spec.pipeline.is_empty()) {
        (Some(_), false) => problems.push(Problem::PipelineAndTrigger),
        (Some(t), true) => {
            if crate::trigger::check_name("trigger", t).is_err() {
                problems.push(Problem::Trigger(t.clone()));
            }
            if spec.source_action.is_some() {
                problems.push(Problem::SourceActionOnTrigger);
            }
        }
        (None, _) if !is_pipeline_name(&spec.pipeline) => {
            problems.push(Problem::Pipeline(spec.pipeline.clone()));
        }
        (None, _) => {}
    }
}

/// The matcher of a filter's `Branch`: exact, or a glob.
fn branch_matcher(branch: &str, problems: &mut Vec<Problem>) -> BranchMatcher {
    if branch.is_empty() {
        problems.push(Problem::EmptyBranch);
        return BranchMatcher::Exact(String::new());
    }
    if !branch.contains(['*', '?', '[', '{']) {
        return BranchMatcher::Exact(branch.to_string());
    }
    match glob(branch) {
        Ok(g) => BranchMatcher::Glob(g.compile_matcher()),
        Err(e) => {
            problems.push(Problem::Branch(branch.to_string(), e.kind().to_string()));
            BranchMatcher::Exact(String::new())
        }
    }
}

/// `Include` and `Exclude`: bounded in number and length, each a valid
/// pattern of the filter's syntax.
fn check_patterns(spec: &FilterSpec, syntax: Syntax, problems: &mut Vec<Problem>) {
    let count = spec.include.len() + spec.exclude.len();
    if count > MAX_PATTERNS {
        problems.push(Problem::TooManyPatterns(count));
    }
    for (field, list) in [("Include", &spec.include), ("Exclude", &spec.exclude)] {
        for (index, pattern) in list.iter().enumerate() {
            if pattern.chars().count() > MAX_PATTERN_LEN {
                problems.push(Problem::PatternTooLong {
                    field,
                    index,
                    len: pattern.chars().count(),
                });
                continue;
            }
            let problem = match syntax {
                Syntax::Regex => check_regex(field, index, pattern),
                Syntax::Glob => glob(pattern).err().map(|e| Problem::Glob {
                    field,
                    index,
                    pattern: pattern.clone(),
                    message: e.kind().to_string(),
                }),
            };
            problems.extend(problem);
        }
    }
}

#[cfg(test)]
mod tests;
