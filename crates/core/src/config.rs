//! Settings read from the environment, with defaults and clear errors.
//!
//! Pure: the caller passes a lookup (`|k| std::env::var(k).ok()`), so tests
//! need no process environment.

use std::collections::BTreeMap;

use crate::resources::{Resource, Resources};

/// A setting that is missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is not set.
    #[error("{0} is not set; set it to {1}")]
    Missing(&'static str, &'static str),
    /// A setting has a value that cannot be used.
    #[error("{name}={value:?} is invalid: expected {expected}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What it held.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
}

/// The default `MAX_PUSH_AGE`: a day.
pub const DEFAULT_MAX_PUSH_AGE: u64 = 86_400;

/// The most `MAX_ATTEMPTS` may be: that many attempts, each after the longest
/// deployed backoff (6 minutes), end inside the buffer's retention (the
/// template's `MaxAttempts` has the same bound, checked by a test).
pub const MAX_ATTEMPTS_LIMIT: u32 = 3000;

/// Where hooks go when the spigot is ON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// The receiver forwards and the drainer pushes to the target.
    Push,
    /// Every hook is buffered; a relay agent pulls them (`spigot relay`).
    Pull,
}

/// A secret setting: its `Debug` output is redacted, so no log of the
/// settings shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// Every setting of every function. Each function reads the ones it needs.
/// Its `Debug` output redacts the secrets ([`Secret`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `WEBHOOK_SECRET`: comma-separated secrets (rotation). Default: none (all refused).
    pub webhook_secret: Option<Secret>,
    /// `WEBHOOK_SECRET_ARN`: Secrets Manager secret holding the secrets, read at init.
    pub webhook_secret_arn: Option<String>,
    /// `ALLOW_SHA1`: accept the legacy `X-Hub-Signature`. Default false.
    pub allow_sha1: bool,
    /// `TRIGGER_SECRET`: comma-separated secrets signing `POST /trigger/{name}`. Default: none (all refused).
    pub trigger_secret: Option<Secret>,
    /// `TRIGGER_SECRET_ARN`: Secrets Manager secret holding them, read at init.
    pub trigger_secret_arn: Option<String>,
    /// `TRIGGER_ENDPOINT`: serve `POST /trigger/{name}` (pull deployments
    /// raised over HTTPS). Default false: the route answers 404.
    pub trigger_endpoint: bool,
    /// `TARGET_URL`: where hooks are delivered.
    pub target_url: Option<String>,
    /// `ALLOW_INSECURE_TARGET`: accept an http:// `TARGET_URL` (a target inside a VPC). Default false.
    pub allow_insecure_target: bool,
    /// `TARGET_HEALTH_URL`: probed before draining. Default: origin of `TARGET_URL`.
    pub target_health_url: Option<String>,
    /// `EVENT_PATHS`: per-event path on the target, `push=/github-webhook/,pull_request=/ghprbhook/`.
    pub event_paths: EventPaths,
    /// `FORWARD_TIMEOUT_MS`: timeout of one delivery. Default 7000 (GitHub waits 10 s).
    pub forward_timeout_ms: u64,
    /// The queues, bucket and API stage (`BUFFER_QUEUE_URL`, `BUFFER_DLQ_URL`, `EVAL_QUEUE_URL`,
    /// `CONFIG_BUCKET`, `API_ID`, `STAGE_NAME`): see [`crate::resources::TABLE`].
    pub resources: Resources,
    /// `CLAIM_CHECK_BYTES`: envelopes above this size keep their body in S3. Default 262144.
    pub claim_check_bytes: usize,
    /// `DRAIN_CONCURRENCY`: message groups delivered at once. Default 8.
    pub drain_concurrency: usize,
    /// `BREAKER_THRESHOLD`: consecutive retryable failures that stop a drain. Default 3.
    pub breaker_threshold: u32,
    /// `DRAIN_RATE`: deliveries a second while draining, all workers together. Default unlimited.
    pub drain_rate: Option<f64>,
    /// `DRAIN_RAMP_SECONDS`: reach `DRAIN_RATE` over this long, from a tenth of it. Default 0.
    pub drain_ramp_seconds: u64,
    /// `MAX_ATTEMPTS`: delivery attempts before a hook is dead-lettered with its last reason. Default 100.
    pub max_attempts: u32,
    /// `DELIVERY_MODE`: `push` (default) or `pull`.
    pub delivery_mode: DeliveryMode,
    /// `GITHUB_API_URL`: GitHub's REST API. Default `https://api.github.com` (GHES: `https://HOST/api/v3`).
    pub github_api_url: String,
    /// `GITHUB_API_ALLOW_HTTP`: accept an `http://` `GITHUB_API_URL`. For tests
    /// against a local stand-in only; default false (the token would travel in clear).
    pub github_api_allow_http: bool,
    /// `GITHUB_TOKEN`: a token for the compare API (prefer `GITHUB_TOKEN_SECRET_ARN`).
    pub github_token: Option<Secret>,
    /// `GITHUB_TOKEN_SECRET_ARN`: Secrets Manager secret holding that token.
    pub github_token_secret_arn: Option<String>,
    /// `GITHUB_APP_ID`: a GitHub App instead of a token.
    pub github_app_id: Option<String>,
    /// `GITHUB_APP_KEY_SECRET_ARN`: Secrets Manager secret holding the app's private key (PEM).
    pub github_app_key_secret_arn: Option<String>,
    /// `GITHUB_APP_INSTALLATION_ID`: the installation the app acts as.
    pub github_app_installation_id: Option<u64>,
    /// `CFN_RESPONSE_URL_ALLOW_LOOPBACK`: the custom resource also answers ResponseURLs on 127.0.0.1 (tests only). Default false.
    pub cfn_response_url_allow_loopback: bool,
    /// `MAX_PUSH_AGE`: seconds after which a push (by its own `pushed_at`) starts nothing. Default 86400.
    pub max_push_age: u64,
    /// `FILTER_CACHE_SECONDS`: how long the evaluator caches a repository's filters. Default 60.
    pub filter_cache_seconds: u64,
    /// `GITHUB_HOOKS`: the hooks to reconcile, `org/ORG/HOOK_ID`, `repo/OWNER/NAME/HOOK_ID` or `app`, comma-separated. Default none.
    pub github_hooks: Vec<crate::reconcile::HookSource>,
    /// `RECONCILE_WINDOW`: seconds of deliveries a scheduled reconcile reads. Default 7200, at most 259200 (3 days).
    pub reconcile_window: u64,
    /// `RECONCILE_MAX`: redeliveries a reconcile run makes at most. Default 100.
    pub reconcile_max: usize,
    /// `DRAIN_GRACE_SECONDS`: how long a stage change may take to reach every
    /// request. The drainer keeps draining this long after it sets ON; a
    /// receiver that set DRAINING keeps buffering this long. Default 30.
    pub drain_grace_seconds: u64,
    /// `DEDUPE_WINDOW`: seconds during which a delivery id the receiver took
    /// is answered 200 and not taken again. Default 0 (off), at most 86400.
    pub dedupe_window: u64,
    /// `SECRETS_CACHE_SECONDS`: how long secrets read from Secrets Manager
    /// (`*_SECRET_ARN`) are used before they are read again. Default 300.
    pub secrets_cache_seconds: u64,
    /// `DRAIN_COALESCE`: `none` (default) or `push`: a drain delivers only the
    /// newest of consecutive pushes to one branch of a repository.
    pub drain_coalesce: crate::coalesce::Coalesce,
    /// `RESUME_HEALTHY_SECONDS`: when the spigot drains after OFF or an
    /// outage (DRAINING), the target's health URL must answer healthy this
    /// long in a row before a run delivers anything. Default 30.
    pub resume_healthy_seconds: u64,
}

impl Default for Settings {
    /// Every default, nothing named.
    fn default() -> Self {
        Self::from_lookup(|_| None).expect("the defaults are valid")
    }
}

impl Settings {
    /// Reads every setting through `lookup`; blank values count as unset.
    /// Each variable is named once, with its default and its bounds.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(lookup);
        use crate::reconcile::{DEFAULT_MAX, DEFAULT_WINDOW_SECS, MAX_WINDOW_SECS};
        Ok(Self {
            webhook_secret: env.secret("WEBHOOK_SECRET"),
            webhook_secret_arn: env.text("WEBHOOK_SECRET_ARN"),
            allow_sha1: env.flag("ALLOW_SHA1", false)?,
            trigger_secret: env.secret("TRIGGER_SECRET"),
            trigger_secret_arn: env.text("TRIGGER_SECRET_ARN"),
            trigger_endpoint: env.flag("TRIGGER_ENDPOINT", false)?,
            target_url: env.url("TARGET_URL")?,
            target_health_url: env.url("TARGET_HEALTH_URL")?,
            allow_insecure_target: env.flag("ALLOW_INSECURE_TARGET", false)?,
            event_paths: env.event_paths("EVENT_PATHS")?,
            forward_timeout_ms: env.number("FORWARD_TIMEOUT_MS", 7000, 1..=60_000)?,
            resources: Resources::from_lambda_env(|k| env.text(k)),
            claim_check_bytes: env.number("CLAIM_CHECK_BYTES", 262_144, 1024..=1_048_576)? as usize,
            drain_concurrency: env.number("DRAIN_CONCURRENCY", 8, 1..=100)? as usize,
            breaker_threshold: env.number("BREAKER_THRESHOLD", 3, 1..=1000)? as u32,
            drain_rate: parse_rate("DRAIN_RATE", env.text("DRAIN_RATE"))?,
            drain_ramp_seconds: env.number("DRAIN_RAMP_SECONDS", 0, 0..=3600)?,
            max_attempts: env.number("MAX_ATTEMPTS", 100, 1..=u64::from(MAX_ATTEMPTS_LIMIT))?
                as u32,
            github_api_url: env
                .url("GITHUB_API_URL")?
                .unwrap_or_else(|| "https://api.github.com".into()),
            github_api_allow_http: env.flag("GITHUB_API_ALLOW_HTTP", false)?,
            github_token: env.secret("GITHUB_TOKEN"),
            github_token_secret_arn: env.text("GITHUB_TOKEN_SECRET_ARN"),
            github_app_id: env.text("GITHUB_APP_ID"),
            github_app_key_secret_arn: env.text("GITHUB_APP_KEY_SECRET_ARN"),
            github_app_installation_id: env
                .optional_number("GITHUB_APP_INSTALLATION_ID", 1..=u64::MAX)?,
            cfn_response_url_allow_loopback: env.flag("CFN_RESPONSE_URL_ALLOW_LOOPBACK", false)?,
            max_push_age: env.number("MAX_PUSH_AGE", DEFAULT_MAX_PUSH_AGE, 60..=30 * 86_400)?,
            filter_cache_seconds: env.number("FILTER_CACHE_SECONDS", 60, 0..=86_400)?,
            delivery_mode: parse_mode(env.text("DELIVERY_MODE"))?,
            github_hooks: env.hooks("GITHUB_HOOKS")?,
            reconcile_window: env.number(
                "RECONCILE_WINDOW",
                DEFAULT_WINDOW_SECS,
                60..=MAX_WINDOW_SECS,
            )?,
            reconcile_max: env.number("RECONCILE_MAX", DEFAULT_MAX as u64, 1..=10_000)? as usize,
            drain_grace_seconds: env.number("DRAIN_GRACE_SECONDS", 30, 0..=600)?,
            dedupe_window: env.number("DEDUPE_WINDOW", 0, 0..=86_400)?,
            secrets_cache_seconds: env.number("SECRETS_CACHE_SECONDS", 300, 10..=3_600)?,
            drain_coalesce: env.coalesce("DRAIN_COALESCE")?,
            resume_healthy_seconds: env.number("RESUME_HEALTHY_SECONDS", 30, 0..=300)?,
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The resource `r`, or an error naming its environment variable.
    pub fn require(&self, r: Resource) -> Result<&str, ConfigError> {
        let row = r.row();
        self.resources.get(r).ok_or(ConfigError::Missing(
            row.lambda_env.unwrap_or(row.cli_env),
            row.what,
        ))
    }

    /// `TARGET_URL`, or an error saying so; an http:// target only with `ALLOW_INSECURE_TARGET`.
    pub fn require_target(&self) -> Result<&str, ConfigError> {
        let url = self.target_url.as_deref().ok_or(ConfigError::Missing(
            "TARGET_URL",
            "the CI server's webhook URL, e.g. https://jenkins.example.com",
        ))?;
        for (name, u) in [
            ("TARGET_URL", Some(url)),
            ("TARGET_HEALTH_URL", self.target_health_url.as_deref()),
        ] {
            if let Some(u) = u
                && !u.starts_with("https://")
                && !self.allow_insecure_target
            {
                return Err(ConfigError::Invalid {
                    name,
                    value: u.to_string(),
                    expected: "an https:// URL (set ALLOW_INSECURE_TARGET=true for a target inside a VPC)",
                });
            }
        }
        Ok(url)
    }

    /// The stage holding `spigot_state`: `API_ID`, `STAGE_NAME`, `API_TYPE` (REST or HTTP).
    pub fn stage(&self) -> Result<crate::ports::StageRef, ConfigError> {
        let kind = self.resources.get(Resource::ApiType).unwrap_or("REST");
        Ok(crate::ports::StageRef {
            api_id: self.require(Resource::ApiId)?.to_string(),
            stage: self.require(Resource::Stage)?.to_string(),
            kind: crate::ports::ApiKind::parse(kind).ok_or_else(|| ConfigError::Invalid {
                name: "API_TYPE",
                value: kind.to_string(),
                expected: "REST or HTTP",
            })?,
        })
    }

    /// The URL probed before a drain: `TARGET_HEALTH_URL`, else the origin of `TARGET_URL`.
    pub fn health_url(&self) -> Result<String, ConfigError> {
        if let Some(u) = &self.target_health_url {
            return Ok(u.clone());
        }
        Ok(origin(self.require_target()?))
    }
}

/// `scheme://host[:port]/` of a URL.
pub fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{host}/")
}

fn check_url(name: &'static str, value: String) -> Result<String, ConfigError> {
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && value
            .split("://")
            .nth(1)
            .is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
    if ok {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            name,
            value,
            expected: "an http:// or https:// URL with a host",
        })
    }
}

/// A rate a second: `0` or unset is unlimited (`None`).
fn parse_rate(name: &'static str, v: Option<String>) -> Result<Option<f64>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    match v.parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000.0 => Ok(Some(r)),
        _ => Err(ConfigError::Invalid {
            name,
            value: v,
            expected: "deliveries per second, above 0 and at most 10000 (0: unlimited)",
        }),
    }
}

fn parse_mode(v: Option<String>) -> Result<DeliveryMode, ConfigError> {
    match v.map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("push") => Ok(DeliveryMode::Push),
        Some("pull") => Ok(DeliveryMode::Pull),
        Some(other) => Err(ConfigError::Invalid {
            name: "DELIVERY_MODE",
            value: other.to_string(),
            expected: "push or pull",
        }),
    }
}

fn parse_bool(name: &'static str, v: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match v.map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::Invalid {
            name,
            value: other.to_string(),
            expected: "true or false",
        }),
    }
}

fn parse_num(
    name: &'static str,
    v: Option<String>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError::Invalid {
                name,
                value: s,
                expected: "a whole number in its allowed range (see README)",
            }),
        },
    }
}

/// The variables a function is given, read one way: trimmed, blank as unset.
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn text(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A secret, as given (not trimmed: a space may be part of it).
    fn secret(&self, name: &str) -> Option<Secret> {
        (self.0)(name).filter(|v| !v.trim().is_empty()).map(Secret)
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        parse_bool(name, self.text(name), default)
    }

    fn number(
        &self,
        name: &'static str,
        default: u64,
        bounds: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        parse_num(
            name,
            self.text(name),
            default,
            *bounds.start(),
            *bounds.end(),
        )
    }

    fn optional_number(
        &self,
        name: &'static str,
        bounds: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, ConfigError> {
        self.text(name)
            .map(|v| parse_num(name, Some(v), 0, *bounds.start(), *bounds.end()))
            .transpose()
    }

    fn url(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        self.text(name).map(|u| check_url(name, u)).transpose()
    }

    fn event_paths(&self, name: &'static str) -> Result<EventPaths, ConfigError> {
        self.text(name)
            .map_or_else(|| Ok(EventPaths::default()), |v| EventPaths::parse(&v))
    }

    fn hooks(&self, name: &'static str) -> Result<Vec<crate::reconcile::HookSource>, ConfigError> {
        let Some(v) = self.text(name) else {
            return Ok(Vec::new());
        };
        crate::reconcile::HookSource::parse_list(&v).map_err(|_| ConfigError::Invalid {
            name,
            value: v,
            expected: "comma-separated org/ORG/HOOK_ID, repo/OWNER/NAME/HOOK_ID or app",
        })
    }

    fn coalesce(&self, name: &'static str) -> Result<crate::coalesce::Coalesce, ConfigError> {
        let text = self.text(name).unwrap_or_default();
        crate::coalesce::Coalesce::parse(&text).ok_or(ConfigError::Invalid {
            name,
            value: text,
            expected: "none or push",
        })
    }
}

/// Per-event paths on the target (`EVENT_PATHS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPaths(BTreeMap<String, String>);

impl EventPaths {
    /// Parses `event=/path,event=/path`.
    pub fn parse(list: &str) -> Result<Self, ConfigError> {
        let mut map = BTreeMap::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some((event, path)) if !event.trim().is_empty() && path.trim().starts_with('/') => {
                    map.insert(event.trim().to_string(), path.trim().to_string());
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "EVENT_PATHS",
                        value: item.to_string(),
                        expected: "event=/path pairs separated by commas, e.g. push=/github-webhook/",
                    });
                }
            }
        }
        Ok(Self(map))
    }

    /// The URL a hook of `event` goes to: `base` with the event's path, or `base` itself.
    pub fn url_for(&self, base: &str, event: &str) -> String {
        match self.0.get(event) {
            Some(path) => format!("{}{}", origin(base).trim_end_matches('/'), path),
            None => base.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.forward_timeout_ms, 7000);
        assert_eq!(s.claim_check_bytes, 262_144);
        assert_eq!(s.drain_concurrency, 8);
        assert_eq!(s.breaker_threshold, 3);
        assert_eq!(s.max_attempts, 100);
        assert_eq!((s.drain_rate, s.drain_ramp_seconds), (None, 0));
        assert_eq!(s.resources.get(Resource::Stage), Some("live"));
        assert_eq!(s.filter_cache_seconds, 60);
        assert!(!s.allow_sha1);
        assert_eq!(s.delivery_mode, DeliveryMode::Push);
        assert!(s.require(Resource::BufferUrl).is_err());
        assert!(
            s.require(Resource::BufferUrl)
                .unwrap_err()
                .to_string()
                .contains("BUFFER_QUEUE_URL")
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = settings(&[("FORWARD_TIMEOUT_MS", "soon")]).unwrap_err();
        assert!(e.to_string().contains("FORWARD_TIMEOUT_MS"));
        assert!(settings(&[("ALLOW_SHA1", "perhaps")]).is_err());
        assert!(settings(&[("TARGET_URL", "jenkins")]).is_err());
        assert!(settings(&[("EVENT_PATHS", "push")]).is_err());
        assert!(settings(&[("DELIVERY_MODE", "carrier-pigeon")]).is_err());
        assert!(settings(&[("DRAIN_RATE", "-1")]).is_err());
        assert!(settings(&[("DRAIN_RATE", "fast")]).is_err());
        assert_eq!(
            settings(&[("DRAIN_RATE", "2.5")]).unwrap().drain_rate,
            Some(2.5)
        );
        assert_eq!(settings(&[("DRAIN_RATE", "0")]).unwrap().drain_rate, None);
        let e = settings(&[("GITHUB_HOOKS", "repo/octo/1")]).unwrap_err();
        assert!(e.to_string().contains("GITHUB_HOOKS"), "{e}");
        assert!(settings(&[("RECONCILE_WINDOW", "300000")]).is_err());
        let s = settings(&[("GITHUB_HOOKS", "repo/octo/mono/1,app")]).unwrap();
        assert_eq!(s.github_hooks.len(), 2);
        assert_eq!((s.reconcile_window, s.reconcile_max), (7_200, 100));
    }

    #[test]
    fn event_paths_route_per_event() {
        let p = EventPaths::parse("push=/github-webhook/, pull_request=/ghprbhook/").unwrap();
        assert_eq!(
            p.url_for("https://ci.example.com:8443/base", "push"),
            "https://ci.example.com:8443/github-webhook/"
        );
        assert_eq!(
            p.url_for("https://ci.example.com/x", "issues"),
            "https://ci.example.com/x"
        );
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let s = settings(&[
            ("WEBHOOK_SECRET", "hunter2,hunter3"),
            ("GITHUB_TOKEN", "ghp_s3cret"),
        ])
        .unwrap();
        let text = format!("{s:?}");
        assert!(
            !text.contains("hunter") && !text.contains("ghp_s3cret"),
            "{text}"
        );
        assert!(text.contains("<redacted>") && text.contains("forward_timeout_ms: 7000"));
    }

    #[test]
    fn targets_are_https_unless_allowed() {
        let plain = settings(&[("TARGET_URL", "http://jenkins.internal/")]).unwrap();
        let e = plain.require_target().unwrap_err().to_string();
        assert!(e.contains("ALLOW_INSECURE_TARGET"), "{e}");
        let allowed = settings(&[
            ("TARGET_URL", "http://jenkins.internal/"),
            ("ALLOW_INSECURE_TARGET", "true"),
        ])
        .unwrap();
        assert_eq!(allowed.require_target(), Ok("http://jenkins.internal/"));
        let tls = settings(&[("TARGET_URL", "https://jenkins.example.com/")]).unwrap();
        assert!(tls.require_target().is_ok());
        let mixed = settings(&[
            ("TARGET_URL", "https://jenkins.example.com/"),
            ("TARGET_HEALTH_URL", "http://jenkins.example.com/login"),
        ])
        .unwrap();
        assert!(mixed.require_target().is_err());
    }

    #[test]
    fn health_url_defaults_to_the_target_origin() {
        let s = settings(&[("TARGET_URL", "https://127.0.0.1:8080/github-webhook/")]).unwrap();
        assert_eq!(s.health_url().unwrap(), "https://127.0.0.1:8080/");
    }
}
