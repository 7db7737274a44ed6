//! One set of trust anchors a process, loaded the first time a TLS connection
//! needs them — never at init — and shared by the AWS SDK's HTTPS client and
//! every reqwest client (target, GitHub, custom-resource responses).
//!
//! Before this, the SDK's client and reqwest each read the platform's
//! certificate store (~150 files here) before a function's first `/next`.
//! The roots are the platform's (`SSL_CERT_FILE` / `SSL_CERT_DIR` add a
//! private CA for an internal Jenkins); no roots are compiled in.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_sqs::config::{SharedAsyncSleep, SharedHttpClient};
use aws_smithy_http_client::Connector;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use base64::Engine as _;
use rustls::pki_types::CertificateDer;

/// The platform's trust anchors, read once.
static ROOTS: LazyLock<Vec<CertificateDer<'static>>> = LazyLock::new(|| {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::warn!(error = %e, "a platform certificate could not be read");
    }
    if loaded.certs.is_empty() {
        tracing::error!(
            "no trust anchors found: every TLS connection will fail (set SSL_CERT_FILE)"
        );
    }
    loaded.certs
});

/// The one rustls configuration of reqwest clients.
static CLIENT_CONFIG: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let mut store = rustls::RootCertStore::empty();
    let (_added, _ignored) = store.add_parsable_certificates(ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("aws-lc-rs supports the default TLS versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    Arc::new(config)
});

/// The same anchors for the SDK's client, which takes PEM.
static SDK_TLS: LazyLock<TlsContext> = LazyLock::new(|| {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut pem = String::with_capacity(ROOTS.len() * 2_000);
    for cert in ROOTS.iter() {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let text = b64.encode(cert.as_ref());
        for line in text.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    TlsContext::builder()
        .with_trust_store(
            TrustStore::empty()
                .with_native_roots(false)
                .with_pem_certificate(pem.into_bytes()),
        )
        .build()
        .unwrap_or_default()
});

/// How many trust anchors there are (loading them if not yet loaded).
pub fn anchors() -> usize {
    ROOTS.len()
}

/// A reqwest client builder on the shared TLS configuration.
pub fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(CLIENT_CONFIG.as_ref().clone())
}

/// The SDK's HTTPS client on the shared trust anchors. The SDK asks a client
/// for a connector while it builds its own clients (to validate them), so each
/// connector here makes its TLS configuration — and so loads the anchors —
/// only when it carries its first request.
pub fn sdk_http_client() -> SharedHttpClient {
    SharedHttpClient::new(SdkClient::default())
}

/// A connector's timeouts: connect, read.
type Timeouts = (Option<Duration>, Option<Duration>);

/// Connectors by their timeouts, as the SDK's own client keeps them.
#[derive(Debug, Default)]
struct SdkClient {
    connectors: Mutex<HashMap<Timeouts, SharedHttpConnector>>,
}

impl HttpClient for SdkClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        connectors
            .entry(key)
            .or_insert_with(|| {
                SharedHttpConnector::new(LazyConnector {
                    settings: settings.clone(),
                    sleep: components.sleep_impl(),
                    connector: OnceLock::new(),
                })
            })
            .clone()
    }
}

/// A connector made on its first request.
#[derive(Debug)]
struct LazyConnector {
    settings: HttpConnectorSettings,
    sleep: Option<SharedAsyncSleep>,
    connector: OnceLock<Connector>,
}

impl HttpConnector for LazyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let connector = self.connector.get_or_init(|| {
            let mut builder = Connector::builder();
            builder.set_connector_settings(Some(self.settings.clone()));
            builder.set_sleep_impl(self.sleep.clone());
            builder
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(SDK_TLS.clone())
                .build()
        });
        connector.call(request)
    }
}

type Setup = dyn Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync;

/// A reqwest client on the shared TLS configuration, made when first used (a
/// function that never calls out over HTTP never loads the trust anchors).
#[derive(Clone)]
pub struct LazyClient {
    client: Arc<OnceLock<Result<reqwest::Client, String>>>,
    setup: Arc<Setup>,
}

impl std::fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyClient")
            .field("made", &self.client.get().is_some())
            .finish()
    }
}

impl LazyClient {
    /// A client that `setup` configures (timeouts, redirects, user agent) when first used.
    pub fn new(
        setup: impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync + 'static,
    ) -> Self {
        Self {
            client: Arc::new(OnceLock::new()),
            setup: Arc::new(setup),
        }
    }

    /// The client, made now if it was not yet.
    pub fn get(&self) -> Result<&reqwest::Client, crate::AwsError> {
        self.client
            .get_or_init(|| {
                (self.setup)(http_client())
                    .build()
                    .map_err(|e| crate::error_text(&e))
            })
            .as_ref()
            .map_err(|why| crate::AwsError::Http(why.clone()))
    }
}
