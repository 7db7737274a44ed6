//! GitHub's REST API over reqwest: github.com or GitHub Enterprise Server
//! (`GITHUB_API_URL`), with a token or as a GitHub App (a JWT signed with the
//! app's key buys an installation token). Pagination follows `Link`; rate
//! limits (`X-RateLimit-*`, `Retry-After`) are waited out once, briefly;
//! 401/403/404 are clear errors. Hook deliveries are listed (cursor pages
//! through `Link`), read and redelivered for repository and organization
//! hooks, and for the app's own hook with the app's JWT.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use spigot_core::ports::{Clock, GitHub, PortError, PortErrorKind, SystemClock};
use spigot_core::reconcile::{HookDelivery, HookSource};

use crate::AwsError;

/// The compare API lists at most this many files for a whole comparison.
pub const COMPARE_FILE_CAP: usize = 300;
/// The longest a call waits out a rate limit before giving up (a Lambda has little time).
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(5);
/// Pages a listing follows at most.
pub const MAX_PAGES: usize = 100;
/// The largest answer body read, bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How Spigot authenticates to GitHub.
#[derive(Clone)]
pub enum GitHubAuth {
    /// A token (`Authorization: Bearer`): a PAT, or a fine-grained token.
    Token(String),
    /// A GitHub App: its id, its private key, and the installation to act as.
    App {
        /// The app id (the JWT's issuer).
        app_id: String,
        /// The app's RSA key.
        key: std::sync::Arc<aws_lc_rs::signature::RsaKeyPair>,
        /// The installation whose token is used.
        installation: u64,
    },
}

impl std::fmt::Debug for GitHubAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitHubAuth::Token(_) => f.write_str("Token(<redacted>)"),
            GitHubAuth::App {
                app_id,
                installation,
                ..
            } => write!(
                f,
                "App {{ app_id: {app_id}, installation: {installation} }}"
            ),
        }
    }
}

impl GitHubAuth {
    /// A GitHub App from its id, its private key (PEM, PKCS#1 or PKCS#8) and installation id.
    pub fn app(app_id: &str, pem: &str, installation: u64) -> Result<Self, AwsError> {
        let der: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .map_err(|e| AwsError::GitHub(format!("the GitHub App key is not PEM: {e}")))?;
        let key = aws_lc_rs::signature::RsaKeyPair::from_der(&der)
            .or_else(|_| aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der))
            .map_err(|e| AwsError::GitHub(format!("the GitHub App key is not an RSA key: {e}")))?;
        Ok(GitHubAuth::App {
            app_id: app_id.to_string(),
            key: std::sync::Arc::new(key),
            installation,
        })
    }
}

/// The GitHub REST adapter.
#[derive(Debug)]
pub struct GitHubApi {
    client: crate::tls::LazyClient,
    base: String,
    /// The API's origin (scheme, host, port): pagination goes nowhere else.
    origin: String,
    auth: GitHubAuth,
    max_pages: usize,
    max_body_bytes: usize,
    installation_token: tokio::sync::Mutex<Option<(String, u64)>>,
}

impl GitHubApi {
    /// The API at `base` (`https://api.github.com`, or `https://ghe.example.com/api/v3`).
    pub fn new(base: &str, auth: GitHubAuth) -> Result<Self, AwsError> {
        Self::new_with(base, auth, false)
    }

    /// [`GitHubApi::new`]; with `allow_http` (tests against a local stand-in
    /// only: `GITHUB_API_ALLOW_HTTP`), an `http://` base is accepted too.
    pub fn new_with(base: &str, auth: GitHubAuth, allow_http: bool) -> Result<Self, AwsError> {
        let url = reqwest::Url::parse(base)
            .map_err(|e| AwsError::GitHub(format!("GITHUB_API_URL {base:?} is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            _ => {
                return Err(AwsError::GitHub(format!(
                    "GITHUB_API_URL {base} is not https: the token would travel in clear"
                )));
            }
        }
        let client = crate::tls::LazyClient::new(|builder| {
            builder
                .timeout(Duration::from_secs(10))
                .user_agent(concat!("spigot/", env!("CARGO_PKG_VERSION")))
                // The token goes with every request: never after a redirect.
                .redirect(reqwest::redirect::Policy::none())
        });
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
            origin: url.origin().ascii_serialization(),
            auth,
            max_pages: MAX_PAGES,
            max_body_bytes: MAX_BODY_BYTES,
            installation_token: tokio::sync::Mutex::new(None),
        })
    }

    /// Lower limits than [`MAX_PAGES`] and [`MAX_BODY_BYTES`] (tests).
    pub fn with_limits(mut self, max_pages: usize, max_body_bytes: usize) -> Self {
        self.max_pages = max_pages;
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// The next page of a listing at `url`, when `headers` name one: only on
    /// the API's own origin, and only [`MAX_PAGES`] of them.
    fn next_page(
        &self,
        headers: &HeaderMap,
        pages: usize,
        url: &str,
    ) -> Result<Option<String>, PortError> {
        let Some(next) = next_link(headers) else {
            return Ok(None);
        };
        let same_origin = reqwest::Url::parse(&next)
            .is_ok_and(|u| u.origin().ascii_serialization() == self.origin);
        if !same_origin {
            return Err(PortError::of(
                PortErrorKind::Invalid,
                format!(
                    "GitHub {url}: its next page is at {next}, not on {}: not followed (the token would go there)",
                    self.origin
                ),
            ));
        }
        if pages >= self.max_pages {
            return Err(PortError::of(
                PortErrorKind::Invalid,
                format!("GitHub {url}: more than {} pages; stopped", self.max_pages),
            ));
        }
        Ok(Some(next))
    }

    /// The GitHub API of the settings: a GitHub App (`GITHUB_APP_ID`, key and
    /// installation), else a token (`GITHUB_TOKEN_SECRET_ARN`, `GITHUB_TOKEN`);
    /// `None` without credentials.
    pub async fn from_settings(
        sdk: &aws_config::SdkConfig,
        settings: &spigot_core::config::Settings,
    ) -> Result<Option<Self>, AwsError> {
        let auth = match (
            &settings.github_app_id,
            &settings.github_app_key_secret_arn,
            settings.github_app_installation_id,
        ) {
            (Some(id), Some(arn), Some(installation)) => {
                let pem = crate::fetch_secret(sdk, arn).await?;
                GitHubAuth::app(id, &pem, installation)?
            }
            (Some(_), _, _) => {
                return Err(AwsError::GitHub(
                    "GITHUB_APP_ID is set: set GITHUB_APP_KEY_SECRET_ARN and GITHUB_APP_INSTALLATION_ID too".into(),
                ));
            }
            (None, _, _) => match (&settings.github_token_secret_arn, &settings.github_token) {
                (Some(arn), _) => {
                    GitHubAuth::Token(crate::fetch_secret(sdk, arn).await?.trim().to_string())
                }
                (None, Some(token)) => GitHubAuth::Token(token.expose().to_string()),
                (None, None) => return Ok(None),
            },
        };
        Ok(Some(Self::new_with(
            &settings.github_api_url,
            auth,
            settings.github_api_allow_http,
        )?))
    }

    /// The HTTP client, made on first use.
    fn http(&self) -> Result<&reqwest::Client, PortError> {
        self.client.get().map_err(|e| PortError::new(e.to_string()))
    }

    /// A JWT for the app (RS256, issued a minute ago, valid nine minutes).
    fn app_jwt(app_id: &str, key: &aws_lc_rs::signature::RsaKeyPair) -> Result<String, PortError> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = SystemClock.now_ms() / 1000;
        let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = b64(format!(
            r#"{{"iat":{},"exp":{},"iss":"{app_id}"}}"#,
            now - 60,
            now + 540
        )
        .as_bytes());
        let input = format!("{header}.{claims}");
        let mut sig = vec![0; key.public_modulus_len()];
        key.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| PortError::of(PortErrorKind::Invalid, "cannot sign the GitHub App JWT"))?;
        Ok(format!("{input}.{}", b64(&sig)))
    }

    /// The `Authorization` header value.
    async fn authorization(&self) -> Result<String, PortError> {
        let (app_id, key, installation) = match &self.auth {
            GitHubAuth::Token(t) => return Ok(format!("Bearer {t}")),
            GitHubAuth::App {
                app_id,
                key,
                installation,
            } => (app_id, key, installation),
        };
        let now = SystemClock.now_ms() / 1000;
        let mut cached = self.installation_token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && *until > now + 60
        {
            return Ok(format!("Bearer {token}"));
        }
        let jwt = Self::app_jwt(app_id, key)?;
        let url = format!(
            "{}/app/installations/{installation}/access_tokens",
            self.base
        );
        let request = self.http()?.post(&url).bearer_auth(jwt);
        let (body, _) = self.send(request, &url).await?;
        let token = body["token"].as_str().ok_or_else(|| {
            PortError::of(
                PortErrorKind::Invalid,
                "GitHub answered no installation token",
            )
        })?;
        // Installation tokens last an hour.
        *cached = Some((token.to_string(), now + 3600));
        Ok(format!("Bearer {token}"))
    }

    /// Sends `request` (waiting out one rate limit of up to [`MAX_RATE_LIMIT_WAIT`]); the JSON body and headers.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(serde_json::Value, HeaderMap), PortError> {
        let request = request
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        for attempt in 0..2 {
            let Some(req) = request.try_clone() else {
                break;
            };
            let resp = req.send().await.map_err(|e| {
                PortError::new(format!("GitHub {url}: {}", crate::error::context(&e)))
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = self.body(resp, url).await?;
            if status.is_success() {
                if text.trim().is_empty() {
                    return Ok((serde_json::Value::Null, headers));
                }
                let body = serde_json::from_str(&text).map_err(|e| {
                    PortError::of(
                        PortErrorKind::Invalid,
                        format!("GitHub {url}: not JSON: {e}"),
                    )
                })?;
                return Ok((body, headers));
            }
            let error = classify(status, &headers, &text, url);
            if let PortErrorKind::Throttled {
                retry_after: Some(wait),
            } = error.kind
                && attempt == 0
                && Duration::from_secs(wait) <= MAX_RATE_LIMIT_WAIT
            {
                tracing::warn!(%url, wait, "GitHub rate limit; waiting it out");
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            return Err(error);
        }
        Err(PortError::new(format!("GitHub {url}: no answer")))
    }

    /// An answer's body as text, at most `max_body_bytes` of it.
    async fn body(&self, mut resp: reqwest::Response, url: &str) -> Result<String, PortError> {
        let too_large = || {
            PortError::of(
                PortErrorKind::Invalid,
                format!(
                    "GitHub {url}: the answer is larger than {} bytes; not read",
                    self.max_body_bytes
                ),
            )
        };
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body_bytes as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            PortError::new(format!(
                "GitHub {url}: reading the answer: {}",
                crate::error::context(&e)
            ))
        })? {
            if bytes.len() + chunk.len() > self.max_body_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// GETs `url` with authentication.
    async fn get(&self, url: &str) -> Result<(serde_json::Value, HeaderMap), PortError> {
        let auth = self.authorization().await?;
        self.send(self.http()?.get(url).header("Authorization", auth), url)
            .await
    }

    /// The `Authorization` for `hook`'s deliveries: the app's own hook takes the app's JWT.
    async fn hook_authorization(&self, hook: &HookSource) -> Result<String, PortError> {
        match (hook, &self.auth) {
            (HookSource::App, GitHubAuth::App { app_id, key, .. }) => {
                Ok(format!("Bearer {}", Self::app_jwt(app_id, key)?))
            }
            (HookSource::App, GitHubAuth::Token(_)) => Err(PortError::of(
                PortErrorKind::Invalid,
                "the app's own hook (GITHUB_HOOKS=app) needs GitHub App credentials (GITHUB_APP_ID), not a token",
            )),
            _ => self.authorization().await,
        }
    }

    /// `method url` of `hook`'s deliveries, authenticated for that hook.
    async fn hook_call(
        &self,
        hook: &HookSource,
        method: reqwest::Method,
        url: &str,
    ) -> Result<(serde_json::Value, HeaderMap), PortError> {
        let auth = self.hook_authorization(hook).await?;
        self.send(
            self.http()?
                .request(method, url)
                .header("Authorization", auth),
            url,
        )
        .await
    }

    /// `base/path-of-hook-deliveries[/rest]`.
    fn hook_url(&self, hook: &HookSource, rest: &str) -> String {
        format!("{}/{}{rest}", self.base, hook.deliveries_path())
    }
}

/// A GitHub error answer as a port error of the right kind, in one sentence.
fn classify(status: StatusCode, headers: &HeaderMap, body: &str, url: &str) -> PortError {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let message: String = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| body.chars().take(200).collect());
    let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && (exhausted || retry_after.is_some()))
    {
        let wait = retry_after.or_else(|| {
            let reset = header("x-ratelimit-reset")?.parse::<u64>().ok()?;
            Some(reset.saturating_sub(SystemClock.now_ms() / 1000))
        });
        return PortError::of(
            PortErrorKind::Throttled { retry_after: wait },
            format!("GitHub rate limit at {url} ({status}): {message}"),
        );
    }
    let kind = match status {
        StatusCode::UNAUTHORIZED => PortErrorKind::Denied,
        StatusCode::FORBIDDEN => PortErrorKind::Denied,
        StatusCode::NOT_FOUND => PortErrorKind::NotFound,
        s if s.is_server_error() => PortErrorKind::Transient,
        _ => PortErrorKind::Invalid,
    };
    let hooks = url.contains("/hooks/") || url.contains("/app/hook/");
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (the token is missing, expired or revoked)",
        StatusCode::FORBIDDEN if hooks => {
            " (the token lacks admin:repo_hook / admin:org_hook, or the app the webhooks permission)"
        }
        StatusCode::FORBIDDEN => " (the token lacks the permission)",
        StatusCode::NOT_FOUND if hooks => " (no such hook or delivery, or the token cannot see it)",
        StatusCode::NOT_FOUND => " (no such repository or commit, or the token cannot see it)",
        _ => "",
    };
    PortError::of(
        kind,
        format!("GitHub {url} answered {status}{hint}: {message}"),
    )
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, rel) = part.split_once(';')?;
        rel.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

impl GitHub for GitHubApi {
    async fn deliveries(
        &self,
        hook: &HookSource,
        since: u64,
    ) -> Result<Vec<HookDelivery>, PortError> {
        let mut url = Some(self.hook_url(hook, "?per_page=100"));
        let mut found = Vec::new();
        let mut pages = 0;
        while let Some(u) = url.take() {
            pages += 1;
            let (body, headers) = self.hook_call(hook, reqwest::Method::GET, &u).await?;
            let page = body.as_array().ok_or_else(|| {
                PortError::of(
                    PortErrorKind::Invalid,
                    format!("GitHub {u}: not a list of deliveries"),
                )
            })?;
            let mut older = false;
            for item in page {
                let d = HookDelivery::from_api(item).map_err(|e| {
                    PortError::of(PortErrorKind::Invalid, format!("GitHub {u}: {e}"))
                })?;
                if d.delivered_at >= since {
                    found.push(d);
                } else {
                    older = true;
                }
            }
            // Newest first: a page reaching past the window is the last one needed.
            if !older {
                url = self.next_page(&headers, pages, &u)?;
            }
        }
        Ok(found)
    }

    async fn delivery_repository(
        &self,
        hook: &HookSource,
        delivery: u64,
    ) -> Result<Option<String>, PortError> {
        let url = self.hook_url(hook, &format!("/{delivery}"));
        let (body, _) = self.hook_call(hook, reqwest::Method::GET, &url).await?;
        Ok(body["request"]["payload"]["repository"]["full_name"]
            .as_str()
            .map(String::from))
    }

    async fn redeliver(&self, hook: &HookSource, delivery: u64) -> Result<(), PortError> {
        let url = self.hook_url(hook, &format!("/{delivery}/attempts"));
        self.hook_call(hook, reqwest::Method::POST, &url)
            .await
            .map(|_| ())
    }

    async fn compare_files(
        &self,
        repository: &str,
        base: &str,
        head: &str,
    ) -> Result<Vec<String>, PortError> {
        let mut url = Some(format!(
            "{}/repos/{repository}/compare/{base}...{head}?per_page=100",
            self.base
        ));
        let mut files = Vec::new();
        let mut pages = 0;
        while let Some(u) = url.take() {
            pages += 1;
            let (body, headers) = self.get(&u).await?;
            for f in body["files"].as_array().into_iter().flatten() {
                files.extend(f["filename"].as_str().map(String::from));
                files.extend(f["previous_filename"].as_str().map(String::from));
            }
            url = self.next_page(&headers, pages, &u)?;
        }
        if files.len() >= COMPARE_FILE_CAP {
            return Err(PortError::of(
                PortErrorKind::Invalid,
                format!(
                    "the comparison lists {} files, at GitHub's cap of {COMPARE_FILE_CAP}: it may be incomplete",
                    files.len()
                ),
            ));
        }
        Ok(files)
    }
}
