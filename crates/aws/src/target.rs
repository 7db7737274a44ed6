//! The HTTP target (Jenkins or any webhook consumer), over reqwest + rustls.

use std::time::Duration;

use spigot_core::config::EventPaths;
use spigot_core::delivery::Delivery;
use spigot_core::ports::Target;
use spigot_core::webhook::Hook;

use crate::AwsError;

/// Delivers hooks to `TARGET_URL` (or the event's path from `EVENT_PATHS`).
#[derive(Debug, Clone)]
pub struct HttpTarget {
    client: crate::tls::LazyClient,
    url: String,
    paths: EventPaths,
    health_url: String,
    timeout: Duration,
}

impl HttpTarget {
    /// A target at `url`, probed at `health_url`, each delivery bounded by `timeout`.
    pub fn new(
        url: impl Into<String>,
        paths: EventPaths,
        health_url: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, AwsError> {
        let client = crate::tls::LazyClient::new(move |builder| {
            builder
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(3)))
                // A redirect is reported, not followed: the hook's POST must not turn into a GET.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("spigot/", env!("CARGO_PKG_VERSION")))
        });
        Ok(Self {
            client,
            url: url.into(),
            paths,
            health_url: health_url.into(),
            timeout,
        })
    }

    /// The target of the functions: `TARGET_URL`, `EVENT_PATHS`, the health URL and `FORWARD_TIMEOUT_MS`.
    pub fn from_settings(settings: &spigot_core::config::Settings) -> Result<Self, AwsError> {
        Self::new(
            settings.require_target()?,
            settings.event_paths.clone(),
            settings.health_url()?,
            Duration::from_millis(settings.forward_timeout_ms),
        )
    }

    /// The URL a hook of `event` is posted to.
    pub fn url_for(&self, event: &str) -> String {
        self.paths.url_for(&self.url, event)
    }
}

impl Target for HttpTarget {
    async fn deliver(&self, hook: &Hook) -> Delivery {
        let client = match self.client.get() {
            Ok(client) => client,
            Err(e) => return Delivery::unreachable(e.to_string()),
        };
        let mut req = client
            .post(self.url_for(&hook.event))
            .body(hook.body.clone());
        for (name, value) in &hook.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        match req.send().await {
            Ok(resp) => Delivery::from_status(resp.status().as_u16())
                .with_retry_after(retry_after(resp.headers())),
            Err(e) if e.is_timeout() => Delivery::unreachable(format!(
                "target did not answer within {} ms",
                self.timeout.as_millis()
            )),
            Err(e) if e.is_connect() => Delivery::unreachable(format!(
                "cannot connect to the target: {}",
                crate::root_cause(&e)
            )),
            Err(e) if e.is_builder() => Delivery::permanent(format!(
                "cannot build the request: {}",
                crate::root_cause(&e)
            )),
            Err(e) => Delivery::unreachable(format!("delivery failed: {}", crate::root_cause(&e))),
        }
    }

    async fn probe(&self) -> bool {
        let Ok(client) = self.client.get() else {
            return false;
        };
        match client.get(&self.health_url).send().await {
            Ok(resp) => resp.status().as_u16() < 500,
            Err(_) => false,
        }
    }
}

/// `Retry-After` in seconds (the delta-seconds form; an HTTP date is ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
