//! Deployment scripts: YAML with a list of `steps`, the format of prostagma's
//! build scripts (so theirs run unchanged) plus a few optional keys.
//!
//! ```yaml
//! params:                      # the data a request may carry: NAME -> pattern of the whole value
//!   VERSION: '^[0-9]+(\.[0-9]+)*$'
//! env_passthrough: [HTTPS_PROXY]  # the agent's own variables the steps also get
//! record_output: true          # keep output tails in receipts (secrets redacted); default false
//! steps:
//!   - shell: echo one line
//!   - shell: |
//!       a block, run by the configured shell, stopping at the first failure
//!     timeout: 10m
//!   - download: {url: https://example.com/app.tgz, dest: /tmp/app.tgz, sha256: 9f86d0…}
//!   - download: {url: http://mirror.internal/a.tgz, dest: /tmp/a.tgz, insecure: true, sha256: 9f86d0…}
//!   - download_s3: {url: s3://bucket/key, dest: /tmp/app.zip, cache: false}
//!     continue_on_error: true
//! ```
//!
//! prostagma also accepts a download's keys beside `download:` rather than
//! under it; so does this. `cache` is accepted and has nothing to do (the
//! agent downloads straight from the source). Anything else is refused when
//! the agent starts, with its line and column.

use std::time::Duration;

use serde::Deserialize;
use sha2::Digest;

/// A script, read and checked.
#[derive(Debug, Clone)]
pub struct Script {
    /// The path as given.
    pub path: String,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The data keys a request may carry, each with the pattern its whole
    /// value must match (`params:`); none declared, a request carries none.
    pub params: spigot_core::trigger::Params,
    /// Variables of the agent's own environment the steps also get
    /// (`env_passthrough:`); nothing else of it reaches them.
    pub env_passthrough: Vec<String>,
    /// Keep the steps' last output lines in receipts (`record_output: true`;
    /// obvious secrets redacted). Off, receipts carry none.
    pub record_output: bool,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub action: Action,
    /// A name for receipts and logs.
    pub name: Option<String>,
    /// A failure is recorded and the script goes on.
    pub continue_on_error: bool,
    /// Its own time limit (else the agent's `--step-timeout`).
    pub timeout: Option<Duration>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run this text in the configured shell.
    Shell(String),
    /// GET `url` into `dest`, checking its SHA-256 when given.
    Download {
        /// https URL (http only with `insecure: true` and a `sha256`).
        url: String,
        /// Local path.
        dest: String,
        /// Expected hex SHA-256.
        sha256: Option<String>,
    },
    /// Get `s3://bucket/key` into `dest` with the SDK.
    DownloadS3 {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Local path.
        dest: String,
    },
}

impl Action {
    /// `shell`, `download` or `download_s3`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Shell(_) => "shell",
            Action::Download { .. } => "download",
            Action::DownloadS3 { .. } => "download_s3",
        }
    }
}

/// A step that cannot be run: what is wrong with it (the script's reader
/// adds the path, line and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepError(String);

/// A script that cannot be run, said with its path, line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScriptError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    #[serde(default)]
    params: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    env_passthrough: Vec<String>,
    #[serde(default)]
    record_output: bool,
    steps: Vec<RawStep>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDownload {
    url: String,
    dest: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    #[allow(dead_code)]
    cache: Option<bool>,
}

/// Tells `key:` (present, maybe null) from an absent key.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, try_from = "StepKeys")]
struct RawStep(Step);

/// Every key a step may have; which combination is valid is checked in `TryFrom`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepKeys {
    #[serde(default)]
    shell: Option<String>,
    #[serde(default, deserialize_with = "present")]
    download: Option<Option<RawDownload>>,
    #[serde(default, deserialize_with = "present")]
    download_s3: Option<Option<RawDownload>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    continue_on_error: bool,
    #[serde(default)]
    timeout: Option<String>,
    // prostagma's flat form: the download's keys beside `download:`.
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    dest: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    #[allow(dead_code)]
    cache: Option<bool>,
}

impl TryFrom<StepKeys> for RawStep {
    type Error = StepError;

    fn try_from(k: StepKeys) -> Result<Self, StepError> {
        let kinds = [
            k.shell.is_some(),
            k.download.is_some(),
            k.download_s3.is_some(),
        ];
        match kinds.iter().filter(|p| **p).count() {
            0 => {
                return Err(StepError(
                    "a step needs one of shell, download or download_s3 (none given)".into(),
                ));
            }
            1 => {}
            _ => {
                return Err(StepError(
                    "a step has exactly one of shell, download or download_s3 (several given)"
                        .into(),
                ));
            }
        }
        let action = if let Some(cmd) = &k.shell {
            if k.url.is_some() || k.dest.is_some() || k.sha256.is_some() || k.insecure {
                return Err(StepError("a shell step has no url, dest or sha256".into()));
            }
            Action::Shell(cmd.clone())
        } else if let Some(d) = &k.download {
            download(k.where_from("download", d.clone())?)?
        } else {
            download_s3(k.where_from("download_s3", k.download_s3.clone().flatten())?)?
        };
        let timeout = k
            .timeout
            .as_deref()
            .map(spigot_core::duration::parse)
            .transpose()
            .map_err(|e| StepError(e.to_string()))?;
        Ok(RawStep(Step {
            action,
            name: k.name,
            continue_on_error: k.continue_on_error,
            timeout,
        }))
    }
}

/// What a download step says, nested under its kind or beside it.
struct Fetch {
    url: String,
    dest: String,
    sha256: Option<String>,
    insecure: bool,
}

impl StepKeys {
    /// The url and dest of a `which` step: under `which:` or beside it, not both.
    fn where_from(&self, which: &str, nested: Option<RawDownload>) -> Result<Fetch, StepError> {
        match nested {
            Some(d) if self.url.is_none() && self.dest.is_none() => Ok(Fetch {
                url: d.url,
                dest: d.dest,
                sha256: d.sha256.or(self.sha256.clone()),
                insecure: d.insecure || self.insecure,
            }),
            Some(_) => Err(StepError(format!(
                "{which}: give url and dest under {which}: or beside it, not both"
            ))),
            None => match (&self.url, &self.dest) {
                (Some(u), Some(d)) => Ok(Fetch {
                    url: u.clone(),
                    dest: d.clone(),
                    sha256: self.sha256.clone(),
                    insecure: self.insecure,
                }),
                _ => Err(StepError(format!("{which} needs url and dest"))),
            },
        }
    }
}

/// A `download` step: https, or http with `insecure: true` and a sha256.
fn download(from: Fetch) -> Result<Action, StepError> {
    let Fetch {
        url,
        dest,
        sha256,
        insecure,
    } = from;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(StepError(format!("download url {url:?} is not http(s)://")));
    }
    if url.starts_with("http://") && !insecure {
        return Err(StepError(format!(
            "download url {url:?} is not https: give insecure: true and a sha256 to allow it"
        )));
    }
    if insecure && sha256.is_none() {
        return Err(StepError(
            "insecure: true needs a sha256 (what arrives over http is checked)".into(),
        ));
    }
    if let Some(h) = &sha256
        && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(StepError(format!("sha256 {h:?} is not 64 hex digits")));
    }
    Ok(Action::Download {
        url,
        dest,
        sha256: sha256.map(|h| h.to_ascii_lowercase()),
    })
}

/// A `download_s3` step: `s3://bucket/key`, over TLS, checked by S3.
fn download_s3(from: Fetch) -> Result<Action, StepError> {
    if from.insecure {
        return Err(StepError(
            "download_s3 has no insecure (it always goes over TLS)".into(),
        ));
    }
    if from.sha256.is_some() {
        return Err(StepError(
            "download_s3 has no sha256 (S3 checks the object's integrity)".into(),
        ));
    }
    let url = from.url;
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| StepError(format!("download_s3 url {url:?} is not s3://bucket/key")))?;
    Ok(Action::DownloadS3 {
        bucket: bucket.to_string(),
        key: key.to_string(),
        dest: from.dest,
    })
}

impl Script {
    /// Reads and checks the script at `path`.
    pub fn load(path: &str) -> Result<Self, ScriptError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ScriptError(format!("cannot read the script {path}: {e}")))?;
        Self::parse(path, &bytes)
    }

    /// Checks `bytes`, the script at `path`.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<Self, ScriptError> {
        let raw: RawScript = serde_yaml_ng::from_slice(bytes).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
                .unwrap_or_default();
            // The library's text repeats the position at its end; say it once, up front.
            let text = e.to_string();
            let text = text.split(" at line ").next().unwrap_or(&text).to_string();
            let text = text.replace("unknown field", "unknown step kind or key");
            ScriptError(format!("{path}{at}: {text}"))
        })?;
        if raw.steps.is_empty() {
            return Err(ScriptError(format!("{path}: the script has no steps")));
        }
        let params = spigot_core::trigger::Params::new(&raw.params)
            .map_err(|e| ScriptError(format!("{path}: {e}")))?;
        for name in &raw.env_passthrough {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(ScriptError(format!(
                    "{path}: env_passthrough: {name:?} is not a variable name"
                )));
            }
        }
        Ok(Self {
            path: path.to_string(),
            sha256: hex::encode(sha2::Sha256::digest(bytes)),
            steps: raw.steps.into_iter().map(|s| s.0).collect(),
            params,
            env_passthrough: raw.env_passthrough,
            record_output: raw.record_output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Script, String> {
        Script::parse("deploy.yaml", text.as_bytes()).map_err(|e| e.0)
    }

    #[test]
    fn prostagmas_own_scripts_parse_unchanged() {
        // The forms of prostagma's README and test script: nested and flat downloads, cache.
        let s = parse(
            "steps:\n  - shell: echo 1\n  - shell: |\n      echo 2\n      echo 3\n  - download:\n      cache: false\n      url: https://example.com/meson.build\n      dest: test_download.yaml\n  - download_s3:\n    cache: false\n    url: s3://bradley-chatha/artifacts/prostagma.zip\n    dest: /prostagma.zip\n",
        )
        .unwrap();
        let kinds: Vec<_> = s.steps.iter().map(|s| s.action.kind()).collect();
        assert_eq!(kinds, ["shell", "shell", "download", "download_s3"]);
        assert_eq!(s.steps[1].action, Action::Shell("echo 2\necho 3\n".into()));
        assert_eq!(
            s.steps[3].action,
            Action::DownloadS3 {
                bucket: "bradley-chatha".into(),
                key: "artifacts/prostagma.zip".into(),
                dest: "/prostagma.zip".into()
            }
        );
        assert_eq!(s.sha256.len(), 64);
    }

    #[test]
    fn the_example_script_parses() {
        let text = include_str!("../../../examples/agent/deploy.yaml");
        let s = parse(text).unwrap();
        let kinds: Vec<_> = s.steps.iter().map(|s| s.action.kind()).collect();
        assert_eq!(kinds, ["download_s3", "download", "shell", "shell"]);
        assert!(s.steps[3].continue_on_error);
    }

    #[test]
    fn optional_keys_are_read() {
        let s = parse("steps:\n  - shell: make\n    name: build\n    timeout: 90s\n    continue_on_error: true\n  - download: {url: https://x.example/a, dest: a, sha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08}\n").unwrap();
        assert_eq!(s.steps[0].timeout, Some(Duration::from_secs(90)));
        assert!(s.steps[0].continue_on_error);
        assert_eq!(s.steps[0].name.as_deref(), Some("build"));
        let Action::Download { sha256, .. } = &s.steps[1].action else {
            panic!()
        };
        assert!(sha256.as_ref().unwrap().starts_with("9f86"));
    }

    #[test]
    fn plain_http_needs_insecure_and_a_digest() {
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let e = parse("steps:\n  - download: {url: http://m/a, dest: a}\n").unwrap_err();
        assert!(e.contains("not https"), "{e}");
        let e = parse("steps:\n  - download: {url: http://m/a, dest: a, insecure: true}\n")
            .unwrap_err();
        assert!(e.contains("needs a sha256"), "{e}");
        let ok = format!(
            "steps:\n  - download: {{url: http://m/a, dest: a, insecure: true, sha256: {sha}}}\n"
        );
        assert!(parse(&ok).is_ok());
        assert!(!parse(&ok).unwrap().record_output, "off unless asked");
        assert!(
            parse(&format!("record_output: true\n{ok}"))
                .unwrap()
                .record_output
        );
    }

    #[test]
    fn bad_scripts_are_refused_with_line_and_column() {
        let e = parse("steps:\n  - shell: ok\n  - upload: {src: a}\n").unwrap_err();
        assert!(e.starts_with("deploy.yaml at line 3, column"), "{e}");
        assert!(e.contains("unknown step kind or key `upload`"), "{e}");
        let e = parse("steps:\n  - shell: ok\n   - shell: bad indent\n").unwrap_err();
        assert!(e.starts_with("deploy.yaml at line 3, column"), "{e}");
        let e = parse("steps:\n  - name: nothing to do\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("none given"), "{e}");
        let e =
            parse("steps:\n  - shell: a\n    download: {url: https://a, dest: b}\n").unwrap_err();
        assert!(e.contains("several given"), "{e}");
        let e = parse("steps:\n  - download_s3: {url: https://a/b, dest: c}\n").unwrap_err();
        assert!(e.contains("not s3://bucket/key"), "{e}");
        let e = parse("steps:\n  - shell: a\n    timeout: soon\n").unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
        let e = parse("stepz:\n  - shell: a\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        assert!(parse("steps: []\n").unwrap_err().contains("no steps"));
    }
}
