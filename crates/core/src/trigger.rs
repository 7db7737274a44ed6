//! Pull deployments: named triggers in the config bucket, raised by CI and
//! followed by agents, with one receipt per agent and request.
//!
//! Layout under `triggers/{name}/`:
//! * `requests/{sequence}.json` — one [`Request`] per raise, created with
//!   `If-None-Match: *`: a sequence number is taken once, whoever races for it.
//! * `head.json` — the newest sequence ([`Head`]), moved forward with
//!   `If-Match`; agents poll it with a conditional GET. It is a hint: the
//!   requests are the truth, and a reader walks forward from what it knows
//!   until a request is missing.
//! * `receipts/{sequence}/{agent}.json` — each agent's [`Receipt`].
//! * `agents/{agent}.json` — when each agent last reported ([`AgentSeen`]).

use std::collections::BTreeMap;

use crate::layout::{TRIGGER_NONCES, TRIGGERS};
use serde::{Deserialize, Serialize};

use crate::ports::{PortError, Read, Triggers, Write};

/// How far back an agent counts as following a trigger (`spigot trigger --wait`).
pub const FOLLOWING_MS: u64 = 24 * 3600 * 1000;
/// Largest request (data and all), bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The most bytes read of any object under `triggers/` (a request, a head, a
/// receipt): a reader stops there, and a larger object is unreadable.
pub const MAX_OBJECT_BYTES: usize = 256 * 1024;
/// Bytes of a push body an agent reads (GitHub caps payloads at 25 MB).
pub const MAX_PUSH_BYTES: usize = 25 * 1024 * 1024;
/// Sequence numbers a raiser tries past the head before giving up.
const MAX_RACE: u64 = 10_000;
/// Attempts to move the head forward under contention.
const HEAD_ATTEMPTS: usize = 50;

/// Why a trigger operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// A name, agent id or data key that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The bucket could not be read or written.
    #[error(transparent)]
    Port(#[from] PortError),
    /// An object under `triggers/` is not what Spigot writes.
    #[error("s3 object {key} is unreadable: {error}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What is wrong.
        error: String,
    },
}

/// A trigger or agent name: 1–64 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn check_name(what: &str, name: &str) -> Result<(), TriggerError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TriggerError::Invalid(format!(
            "{what} {name:?} is not 1-64 letters, digits, '.', '_' or '-' (not starting with '.')"
        )))
    }
}

/// Parses `KEY=VALUE` items into request data; keys are environment variable names.
pub fn parse_data<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, String>, TriggerError> {
    let mut data = BTreeMap::new();
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            return Err(TriggerError::Invalid(format!(
                "--data {item:?} is not KEY=VALUE"
            )));
        };
        check_data_key(key)?;
        data.insert(key.to_string(), value.to_string());
    }
    Ok(data)
}

/// A data key must be usable as an environment variable name, and not one of Spigot's own.
pub fn check_data_key(key: &str) -> Result<(), TriggerError> {
    let mut bytes = key.bytes();
    let ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(TriggerError::Invalid(format!(
            "data key {key:?} is not an environment variable name (letters, digits, '_', not starting with a digit)"
        )));
    }
    if key.starts_with("SPIGOT_") {
        return Err(TriggerError::Invalid(format!(
            "data key {key:?} is reserved (SPIGOT_* variables are set by the agent)"
        )));
    }
    if denied_name(key) {
        return Err(TriggerError::Invalid(format!(
            "data key {key:?} is refused: it is a loader, shell or tool variable that can turn data into code or redirect a step"
        )));
    }
    Ok(())
}

/// The header that signs `POST /trigger/{name}`: `t=UNIX_SECONDS,n=NONCE,v1=HEX`,
/// where v1 is HMAC-SHA256 with the trigger secret of [`canonical`].
pub const SIGNATURE_HEADER: &str = "x-spigot-signature";

/// How far a signed request's time may be from the receiver's clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// What a trigger request's signature covers, one item a line: the method,
/// the path `/trigger/{name}`, the time, the nonce and the body's SHA-256 (hex).
pub fn canonical(name: &str, t: u64, nonce: &str, body: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    format!(
        "POST\n/trigger/{name}\n{t}\n{nonce}\n{}",
        hex::encode(sha2::Sha256::digest(body))
    )
    .into_bytes()
}

/// The [`SIGNATURE_HEADER`] value for a request to raise `name` with `body`.
pub fn sign(secret: &[u8], name: &str, t: u64, nonce: &str, body: &[u8]) -> String {
    let v1 = crate::signature::sign_sha256(secret, &canonical(name, t, nonce, body));
    format!("t={t},n={nonce},v1={}", v1.trim_start_matches("sha256="))
}

/// A parsed [`SIGNATURE_HEADER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Unix seconds when it was signed.
    pub t: u64,
    /// Once-only: 16-64 letters, digits, '-' or '_'.
    pub nonce: String,
    /// The HMAC, hex.
    pub v1: String,
}

impl Stamp {
    /// Reads `t=…,n=…,v1=…`; the error says what is wrong.
    pub fn parse(header: &str) -> Result<Self, TriggerError> {
        let bad = |why: &str| {
            TriggerError::Invalid(format!(
                "{SIGNATURE_HEADER} is not t=UNIX_SECONDS,n=NONCE,v1=HEX: {why}"
            ))
        };
        let (mut t, mut n, mut v1) = (None, None, None);
        for part in header.trim().split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = Some(v.parse::<u64>().map_err(|_| bad("t is not a number"))?),
                Some(("n", v)) => n = Some(v.to_string()),
                Some(("v1", v)) => v1 = Some(v.to_string()),
                _ => return Err(bad("an unknown part")),
            }
        }
        let nonce = n.ok_or_else(|| bad("no n"))?;
        let nonce_ok = (16..=64).contains(&nonce.len())
            && nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !nonce_ok {
            return Err(bad("n must be 16-64 letters, digits, '-' or '_'"));
        }
        let v1 = v1.ok_or_else(|| bad("no v1"))?;
        if v1.len() != 64 || !v1.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("v1 is not 64 hex digits"));
        }
        Ok(Self {
            t: t.ok_or_else(|| bad("no t"))?,
            nonce,
            v1,
        })
    }

    /// True when `t` is within [`MAX_SKEW_SECS`] of `now_secs`.
    pub fn fresh(&self, now_secs: u64) -> bool {
        self.t.abs_diff(now_secs) <= MAX_SKEW_SECS
    }
}

/// Where a trigger request's nonce is kept once used (created If-None-Match;
/// a lifecycle rule on `trigger-nonces/` removes them after a day, long past
/// [`MAX_SKEW_SECS`]).
pub fn nonce_key(name: &str, nonce: &str) -> String {
    format!("{TRIGGER_NONCES}{name}/{nonce}")
}

/// `line` with what looks like a secret replaced by `***`: `password=…`,
/// `token: …`, `Authorization: Bearer …`, AWS access key ids, GitHub tokens,
/// private key blocks. A best effort: scripts should not print secrets.
pub fn redact(line: &str) -> String {
    use std::sync::LazyLock;
    static PATTERNS: LazyLock<Vec<(regex::Regex, &'static str)>> = LazyLock::new(|| {
        [
            (
                r"(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|client[_-]?secret)[A-Za-z0-9_-]*\s*[=:]\s*)\S+",
                "${1}***",
            ),
            (r"(?i)(authorization:\s*(?:bearer|basic|token)\s+)\S+", "${1}***"),
            (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "***"),
            (r"\bgh[pousr]_[A-Za-z0-9]{20,}\b", "***"),
            (r"\bgithub_pat_[A-Za-z0-9_]{20,}\b", "***"),
            (r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*", "***"),
            (r"(?i)(://[^/:@\s]+:)[^@\s]+@", "${1}***@"),
        ]
        .into_iter()
        .map(|(p, r)| (regex::Regex::new(p).expect("valid pattern"), r))
        .collect()
    });
    let mut out = line.to_string();
    for (re, with) in PATTERNS.iter() {
        out = re.replace_all(&out, *with).into_owned();
    }
    out
}

/// Variables no request may set, whatever a script declares: each makes a
/// shell, a loader or a tool run code or go elsewhere.
const DENIED: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS1",
    "PS2",
    "PS4",
    "PROMPT_COMMAND",
    "IFS",
    "CDPATH",
    "GLOBIGNORE",
    "BROWSER",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "TMPDIR",
    "CLASSPATH",
    "GCONV_PATH",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "FTP_PROXY",
    "SSH_AUTH_SOCK",
    "KUBECONFIG",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "NETRC",
    "CURL_HOME",
    "WGETRC",
    "INPUTRC",
    "TERMINFO",
    "MAIL",
    "MAILPATH",
    "LANG",
    "LANGUAGE",
    "TZDIR",
    "NLSPATH",
    "MALLOC_CHECK_",
];

/// Prefixes of variables no request may set (`LD_PRELOAD`, `GIT_CONFIG_*`, `PYTHONWARNINGS`, …).
const DENIED_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "GIT_",
    "BASH_FUNC_",
    "AWS_",
    "PYTHON",
    "PERL",
    "RUBY",
    "NODE_",
    "NPM_",
    "JAVA_",
    "_JAVA_",
    "JDK_",
    "LC_",
    "GLIBC_",
    "MALLOC_",
    "SUDO_",
    "SSH_",
    "GNUPG",
    "GPG_",
    "SPIGOT_",
];

/// True when `name` (compared in upper case: `http_proxy` is `HTTP_PROXY`) is denied.
pub fn denied_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    DENIED.contains(&upper.as_str()) || DENIED_PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// What a script accepts: each data key it declares, with the pattern the
/// whole value must match.
#[derive(Debug, Clone, Default)]
pub struct Params(BTreeMap<String, regex::Regex>);

impl Params {
    /// Compiles `declared` (NAME -> pattern, matched against the whole value).
    /// A name that is not a variable name, or that is denied, is refused.
    pub fn new(declared: &BTreeMap<String, String>) -> Result<Self, TriggerError> {
        let mut out = BTreeMap::new();
        for (name, pattern) in declared {
            check_data_key(name).map_err(|e| TriggerError::Invalid(format!("params: {e}")))?;
            let anchored = format!("^(?:{pattern})$");
            let re = regex::RegexBuilder::new(&anchored)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    TriggerError::Invalid(format!("params: {name}'s pattern does not compile: {e}"))
                })?;
            out.insert(name.clone(), re);
        }
        Ok(Self(out))
    }

    /// The declared names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Checks a request's data: every key declared and not denied, every value
    /// matching its pattern whole. The error names the key.
    pub fn check(&self, data: &BTreeMap<String, String>) -> Result<(), TriggerError> {
        for (key, value) in data {
            check_data_key(key)?;
            let Some(re) = self.0.get(key) else {
                return Err(TriggerError::Invalid(format!(
                    "data key {key:?} is not declared under the script's params:"
                )));
            };
            if value.contains('\0') || !re.is_match(value) {
                return Err(TriggerError::Invalid(format!(
                    "data key {key:?}: the value does not match its declared pattern {:?}",
                    re.as_str()
                        .trim_start_matches("^(?:")
                        .trim_end_matches(")$")
                )));
            }
        }
        Ok(())
    }
}

/// Where the objects of trigger `name` live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys<'a>(pub &'a str);

impl Keys<'_> {
    /// The head pointer.
    pub fn head(&self) -> String {
        format!("{TRIGGERS}{}/head.json", self.0)
    }
    /// Request `sequence`.
    pub fn request(&self, sequence: u64) -> String {
        format!("{TRIGGERS}{}/requests/{sequence:012}.json", self.0)
    }
    /// The receipts of request `sequence`.
    pub fn receipts(&self, sequence: u64) -> String {
        format!("{TRIGGERS}{}/receipts/{sequence:012}/", self.0)
    }
    /// The receipt of `agent` for request `sequence`.
    pub fn receipt(&self, sequence: u64, agent: &str) -> String {
        format!("{}{agent}.json", self.receipts(sequence))
    }
    /// The exact bytes of a push that raised the trigger (a filter's
    /// `Trigger`), by their SHA-256: a redelivered push writes the same key.
    pub fn body(&self, sha256: &str) -> String {
        format!("{TRIGGERS}{}/bodies/{sha256}.json", self.0)
    }
    /// The agents' last reports.
    pub fn agents(&self) -> String {
        format!("{TRIGGERS}{}/agents/", self.0)
    }
    /// The last report of `agent`.
    pub fn agent(&self, agent: &str) -> String {
        format!("{}{agent}.json", self.agents())
    }
}

/// One raise of a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The trigger.
    pub trigger: String,
    /// Its place in the trigger's sequence, from 1.
    pub sequence: u64,
    /// Who asked.
    pub by: String,
    /// Free-form data, given to the steps as environment variables.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// When, RFC 3339.
    pub raised_at: String,
    /// When, milliseconds since the epoch.
    pub raised_at_ms: u64,
    /// The raiser's own id for this raise: a create whose answer was lost and
    /// that S3 then refuses (412) is recognised as the raiser's own write.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// The GitHub push this request deploys, when a pipeline filter raised it.
    /// The agent believes none of it but the body it names, and that only
    /// once GitHub's signature over the body checks out with its secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushRef>,
}

/// A push, as a request names it: where its exact bytes are and GitHub's
/// signature of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRef {
    /// `X-GitHub-Delivery` (unsigned: for people, never for decisions).
    pub delivery: String,
    /// Hex SHA-256 of the body; the body is at [`Keys::body`].
    pub sha256: String,
    /// `X-Hub-Signature-256` as GitHub sent it.
    pub signature: String,
    /// The body's Content-Type (a form body carries the JSON in `payload=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// A request as read from the bucket: readable, or why not. Its sequence is
/// its key's, whatever the object says.
pub type Fetched = Result<Request, String>;

/// The newest sequence of a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The newest request's sequence.
    pub sequence: u64,
}

/// Where an agent is with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No receipt yet.
    Pending,
    /// The script is running.
    InProgress,
    /// Every step succeeded (or failed with `continue_on_error`).
    Done,
    /// A step failed, or the run was interrupted.
    Failed,
    /// Not run, and rightly so: a push older than one already deployed, or
    /// one older than the agent's push age limit (the note says which).
    Skipped,
}

impl Status {
    /// `done`, `failed` or `skipped`.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Done | Status::Failed | Status::Skipped)
    }
    /// As written in receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InProgress => "in_progress",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// The script an agent ran: its path and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRef {
    /// As given to the agent.
    pub path: String,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// 1-based.
    pub index: usize,
    /// `shell`, `download` or `download_s3`.
    pub kind: String,
    /// Its name, when the script gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Done or failed.
    pub status: Status,
    /// The exit code of a shell step (none when it was killed or is not a shell step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Wall time.
    pub duration_ms: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An agent's account of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The trigger.
    pub trigger: String,
    /// The request.
    pub sequence: u64,
    /// The agent that wrote it.
    pub agent: String,
    /// `in_progress`, `done` or `failed`.
    pub status: Status,
    /// 1 for the first run; more when the agent re-ran the request after being stopped mid-script.
    pub attempt: u32,
    /// When the run started, RFC 3339.
    pub started_at: String,
    /// When it ended, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Wall time of the whole script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The script run.
    pub script: ScriptRef,
    /// The steps run so far.
    #[serde(default)]
    pub steps: Vec<StepReport>,
    /// The step that failed the script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<StepReport>,
    /// The last lines of output of the last step run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_tail: Vec<String>,
    /// Anything else the agent wants said (a re-run, an interruption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// When an agent last reported on a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSeen {
    /// The agent.
    pub agent: String,
    /// Milliseconds since the epoch.
    pub seen_at_ms: u64,
    /// RFC 3339.
    pub seen_at: String,
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, TriggerError> {
    serde_json::from_slice(bytes).map_err(|e| TriggerError::Corrupt {
        key: key.to_string(),
        error: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(value).unwrap_or_default()
}

fn rfc3339(ms: u64) -> String {
    crate::time::format_rfc3339(ms / 1000)
}

/// The head of trigger `name` and its entity tag; `None` before the first raise.
pub async fn head<T: Triggers>(
    store: &T,
    name: &str,
) -> Result<Option<(Head, String)>, TriggerError> {
    let key = Keys(name).head();
    match store.read(&key, None).await? {
        Read::Found { bytes, etag } => Ok(Some((decode(&key, &bytes)?, etag))),
        Read::Missing | Read::Unchanged => Ok(None),
    }
}

/// Raises trigger `name`: takes the next free sequence number (a conditional
/// create, so concurrent raisers each get their own), then moves the head.
pub async fn raise<T: Triggers>(
    store: &T,
    name: &str,
    by: &str,
    data: BTreeMap<String, String>,
    now_ms: u64,
    token: &str,
) -> Result<Request, TriggerError> {
    check_name("trigger", name)?;
    for key in data.keys() {
        check_data_key(key)?;
    }
    place(
        store,
        Request {
            trigger: name.to_string(),
            sequence: 0,
            by: by.to_string(),
            data,
            raised_at: rfc3339(now_ms),
            raised_at_ms: now_ms,
            token: token.to_string(),
            push: None,
        },
    )
    .await
}

/// Raises trigger `name` for a GitHub push a pipeline filter matched: keeps
/// the push's exact bytes beside the trigger, then raises a request that
/// names them with GitHub's signature (`signature`). The token is derived from
/// the body, so a retried evaluation finds its own request.
pub async fn raise_push<T: Triggers>(
    store: &T,
    name: &str,
    hook: &crate::webhook::Hook,
    now_ms: u64,
) -> Result<Request, TriggerError> {
    check_name("trigger", name)?;
    let body = &hook.body;
    let bounded = |v: Option<&str>| {
        v.map(|v| {
            crate::text::printable(v)
                .chars()
                .take(100)
                .collect::<String>()
        })
    };
    let sha256 = crate::envelope::sha256_hex(body);
    // Present already when GitHub redelivered the same bytes: the same object.
    store
        .write(&Keys(name).body(&sha256), body.to_vec(), Write::IfAbsent)
        .await?;
    place(
        store,
        Request {
            trigger: name.to_string(),
            sequence: 0,
            by: "evaluator".into(),
            data: BTreeMap::new(),
            raised_at: rfc3339(now_ms),
            raised_at_ms: now_ms,
            token: sha256.clone(),
            push: Some(PushRef {
                delivery: bounded(Some(&hook.delivery)).unwrap_or_default(),
                sha256,
                signature: bounded(hook.header("x-hub-signature-256")).unwrap_or_default(),
                content_type: bounded(hook.header("content-type")),
            }),
        },
    )
    .await
}

/// Creates `request` under the next free sequence number (a conditional
/// create, so concurrent raisers each get their own), then moves the head.
async fn place<T: Triggers>(store: &T, mut request: Request) -> Result<Request, TriggerError> {
    let name = request.trigger.clone();
    let name = name.as_str();
    let token = request.token.clone();
    let keys = Keys(name);
    // The head is read from the bucket: checked, never wrapped.
    let last_number = || {
        TriggerError::Invalid(format!(
            "trigger {name} has used its last sequence number (its head says {}); start a trigger of another name",
            u64::MAX
        ))
    };
    let start = head(store, name)
        .await?
        .map_or(0, |(h, _)| h.sequence)
        .checked_add(1)
        .ok_or_else(last_number)?;
    request.sequence = start;
    let size = encode(&request).len();
    if size > MAX_REQUEST_BYTES {
        return Err(TriggerError::Invalid(format!(
            "the request is {size} bytes; at most {MAX_REQUEST_BYTES} are kept"
        )));
    }
    loop {
        let key = keys.request(request.sequence);
        if store.write(&key, encode(&request), Write::IfAbsent).await? {
            break;
        }
        // Taken: by this raise itself, when a retried create's first answer was lost?
        if !token.is_empty()
            && let Some(Ok(there)) = request_at(store, &key, request.sequence).await?
            && there.token == token
        {
            break;
        }
        // Taken by another raiser (or the head lags): the next one.
        request.sequence = request.sequence.checked_add(1).ok_or_else(last_number)?;
        if request.sequence - start > MAX_RACE {
            return Err(TriggerError::Invalid(format!(
                "no free sequence number within {MAX_RACE} of the head of trigger {name}"
            )));
        }
    }
    advance(store, name, request.sequence).await?;
    Ok(request)
}

/// Moves the head of `name` to `sequence` unless it is already there or past it.
async fn advance<T: Triggers>(store: &T, name: &str, sequence: u64) -> Result<(), TriggerError> {
    let key = Keys(name).head();
    let bytes = encode(&Head { sequence });
    for _ in 0..HEAD_ATTEMPTS {
        let written = match store.read(&key, None).await? {
            Read::Found { bytes: old, etag } => {
                let old: Head = decode(&key, &old)?;
                if old.sequence >= sequence {
                    return Ok(());
                }
                store
                    .write(&key, bytes.clone(), Write::IfMatches(&etag))
                    .await?
            }
            Read::Missing | Read::Unchanged => {
                store.write(&key, bytes.clone(), Write::IfAbsent).await?
            }
        };
        if written {
            return Ok(());
        }
    }
    // The request exists; agents find it by walking forward from what they know.
    Err(TriggerError::Port(PortError::new(format!(
        "request {sequence} of trigger {name} is raised, but its head could not be moved ({HEAD_ATTEMPTS} attempts under contention)"
    ))))
}

/// Request `sequence` of `name`, if raised (unreadable: why).
pub async fn request<T: Triggers>(
    store: &T,
    name: &str,
    sequence: u64,
) -> Result<Option<Fetched>, TriggerError> {
    request_at(store, &Keys(name).request(sequence), sequence).await
}

/// The request at `key` (sequence `sequence`): `Some(Err(why))` when it is
/// there but unreadable (corrupt, too large), so that a reader can say so and
/// go on rather than stall on it.
async fn request_at<T: Triggers>(
    store: &T,
    key: &str,
    sequence: u64,
) -> Result<Option<Fetched>, TriggerError> {
    let bytes = match store.read(key, None).await? {
        Read::Found { bytes, .. } => bytes,
        Read::Missing | Read::Unchanged => return Ok(None),
    };
    if bytes.len() > MAX_OBJECT_BYTES {
        return Ok(Some(Err(format!(
            "{key} is larger than {MAX_OBJECT_BYTES} bytes"
        ))));
    }
    match serde_json::from_slice::<Request>(&bytes) {
        Ok(mut r) => {
            // The key decides: an object that names another number (or
            // trigger) neither loops nor stalls a reader.
            r.sequence = sequence;
            Ok(Some(Ok(r)))
        }
        Err(e) => Ok(Some(Err(format!("{key} is not a request: {e}")))),
    }
}

/// The requests after `after`, in order: walks forward until one is missing.
pub async fn requests_after<T: Triggers>(
    store: &T,
    name: &str,
    after: u64,
    at_most: usize,
) -> Result<Vec<(u64, Fetched)>, TriggerError> {
    let mut found = Vec::new();
    let mut next = after.checked_add(1);
    while let Some(n) = next
        && found.len() < at_most
    {
        match request(store, name, n).await? {
            Some(r) => found.push((n, r)),
            None => break,
        }
        next = n.checked_add(1);
    }
    Ok(found)
}

/// Writes `receipt` and notes that its agent reported at `now_ms`.
pub async fn put_receipt<T: Triggers>(
    store: &T,
    receipt: &Receipt,
    now_ms: u64,
) -> Result<(), TriggerError> {
    let keys = Keys(&receipt.trigger);
    store
        .write(
            &keys.receipt(receipt.sequence, &receipt.agent),
            encode(receipt),
            Write::Always,
        )
        .await?;
    seen(store, &receipt.trigger, &receipt.agent, now_ms).await
}

/// Notes that `agent` follows trigger `name` (at start, with each receipt, and twice a day).
pub async fn seen<T: Triggers>(
    store: &T,
    name: &str,
    agent: &str,
    now_ms: u64,
) -> Result<(), TriggerError> {
    let record = AgentSeen {
        agent: agent.to_string(),
        seen_at_ms: now_ms,
        seen_at: rfc3339(now_ms),
    };
    store
        .write(&Keys(name).agent(agent), encode(&record), Write::Always)
        .await?;
    Ok(())
}

/// The receipt of `agent` for request `sequence`, if written.
pub async fn receipt<T: Triggers>(
    store: &T,
    name: &str,
    sequence: u64,
    agent: &str,
) -> Result<Option<Receipt>, TriggerError> {
    let key = Keys(name).receipt(sequence, agent);
    match store.read(&key, None).await? {
        Read::Found { bytes, .. } => Ok(Some(decode(&key, &bytes)?)),
        Read::Missing | Read::Unchanged => Ok(None),
    }
}

/// Every receipt of request `sequence`, by agent.
pub async fn receipts<T: Triggers>(
    store: &T,
    name: &str,
    sequence: u64,
) -> Result<BTreeMap<String, Receipt>, TriggerError> {
    let mut out = BTreeMap::new();
    for key in store.list(&Keys(name).receipts(sequence)).await? {
        if let Read::Found { bytes, .. } = store.read(&key, None).await? {
            let r: Receipt = decode(&key, &bytes)?;
            out.insert(r.agent.clone(), r);
        }
    }
    Ok(out)
}

/// The agents that reported on `name` since `since_ms`.
pub async fn agents_since<T: Triggers>(
    store: &T,
    name: &str,
    since_ms: u64,
) -> Result<Vec<String>, TriggerError> {
    let mut out = Vec::new();
    for key in store.list(&Keys(name).agents()).await? {
        if let Read::Found { bytes, .. } = store.read(&key, None).await? {
            let seen: AgentSeen = decode(&key, &bytes)?;
            if seen.seen_at_ms >= since_ms {
                out.push(seen.agent);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
