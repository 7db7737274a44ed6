//! GitHub webhook signatures (`X-Hub-Signature-256`, optionally SHA-1 `X-Hub-Signature`).
//!
//! Verification always runs over the raw bytes GitHub sent, with every
//! configured secret (rotation), in constant time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No secret is configured, so nothing can be verified.
    #[error("no webhook secret is configured; set WEBHOOK_SECRET (or WEBHOOK_SECRET_ARN)")]
    NoSecret,
    /// The request carries no signature header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// Only the SHA-1 header is present and SHA-1 is not allowed.
    #[error("only the SHA-1 X-Hub-Signature header was sent; set ALLOW_SHA1=true to accept it")]
    Sha1NotAllowed,
    /// The header is not `sha256=<64 hex digits>` (or `sha1=<40 hex digits>`).
    #[error("malformed signature header {0:?}: expected {1}=<hex digest>")]
    Malformed(String, &'static str),
    /// The header is well formed but no secret produces it.
    #[error("signature does not match the body with any configured secret")]
    Mismatch,
}

/// The hash algorithm a signature was verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `X-Hub-Signature-256`.
    Sha256,
    /// `X-Hub-Signature` (legacy, opt-in).
    Sha1,
}

/// A secret too short to keep a captured hook from being guessed offline
/// (its length only: never the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a secret of {chars} characters; each must have at least {MIN_SECRET_LEN}")]
pub struct WeakSecret {
    /// Its length in characters.
    pub chars: usize,
}

/// The webhook secrets currently accepted (more than one during a rotation).
#[derive(Clone)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, only how many there are.
        write!(f, "Secrets({} configured)", self.0.len())
    }
}

impl Secrets {
    /// Parses a comma-separated list (`WEBHOOK_SECRET=new,old`); blanks are ignored.
    pub fn parse(list: &str) -> Result<Self, SignatureError> {
        let keys: Vec<Vec<u8>> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        if keys.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        Ok(Self(keys))
    }

    /// How many secrets are accepted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a `Secrets` holds at least one secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Err` (saying why, never the secret) when a secret is shorter than
    /// [`MIN_SECRET_LEN`] characters: a short secret can be guessed offline
    /// from one captured hook.
    pub fn check_strength(&self) -> Result<(), WeakSecret> {
        match self
            .0
            .iter()
            .map(|k| String::from_utf8_lossy(k).chars().count())
            .find(|n| *n < MIN_SECRET_LEN)
        {
            Some(chars) => Err(WeakSecret { chars }),
            None => Ok(()),
        }
    }

    /// True when `other` accepts one of these secrets.
    pub fn shares_any(&self, other: &Secrets) -> bool {
        self.0.iter().any(|k| other.0.contains(k))
    }
}

/// Characters a secret must have at least.
pub const MIN_SECRET_LEN: usize = 20;

/// Where secrets are read again from (Secrets Manager), for a [`Keyring`].
pub trait SecretFetch: Send + Sync {
    /// The secrets the source holds now, or why they cannot be read.
    fn fetch(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<Secrets, crate::ports::PortError>> + Send + '_>>;
}

/// The verifier in use. With a source, its secrets are read again once they
/// are `ttl_ms` old, so a secret revoked at the source stops verifying within
/// that time. A read that fails, or brings a secret too short, keeps the
/// secrets in use (and says why); nothing is ever left without a verifier.
pub struct Keyring {
    current: RwLock<Arc<Verifier>>,
    allow_sha1: bool,
    source: Option<Box<dyn SecretFetch>>,
    ttl_ms: u64,
    read_ms: AtomicU64,
    reading: AtomicBool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("refreshing", &self.source.is_some())
            .field("ttl_ms", &self.ttl_ms)
            .finish()
    }
}

impl Keyring {
    /// A verifier whose secrets never change (inline settings, tests).
    pub fn fixed(verifier: Verifier) -> Self {
        Self {
            allow_sha1: verifier.allow_sha1,
            current: RwLock::new(Arc::new(verifier)),
            source: None,
            ttl_ms: u64::MAX,
            read_ms: AtomicU64::new(0),
            reading: AtomicBool::new(false),
        }
    }

    /// `verifier`, read from `source` at `read_ms`, read again every `ttl_ms`.
    pub fn refreshing(
        verifier: Verifier,
        source: Box<dyn SecretFetch>,
        ttl_ms: u64,
        read_ms: u64,
    ) -> Self {
        Self {
            source: Some(source),
            ttl_ms,
            read_ms: AtomicU64::new(read_ms),
            ..Self::fixed(verifier)
        }
    }

    /// The verifier for a request at `now_ms`, reading the source again first
    /// when the secrets in use are `ttl_ms` old (one reader at a time; the
    /// others go on with the secrets in use). The second value says why a
    /// read was not taken, for the caller to log.
    pub async fn current(&self, now_ms: u64) -> (Arc<Verifier>, Option<String>) {
        let mut problem = None;
        if let Some(source) = &self.source
            && now_ms.saturating_sub(self.read_ms.load(Ordering::SeqCst)) >= self.ttl_ms
            && !self.reading.swap(true, Ordering::SeqCst)
        {
            match source.fetch().await {
                Ok(secrets) => match secrets.check_strength() {
                    Ok(()) => {
                        let fresh = Arc::new(Verifier::new(Some(secrets), self.allow_sha1));
                        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    }
                    Err(why) => problem = Some(format!("refused the secret read again: {why}")),
                },
                Err(why) => problem = Some(format!("cannot read the secret again: {why}")),
            }
            self.read_ms.store(now_ms, Ordering::SeqCst);
            self.reading.store(false, Ordering::SeqCst);
        }
        let verifier = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (verifier, problem)
    }
}

/// Verifies signatures against a set of secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Option<Secrets>,
    allow_sha1: bool,
}

impl Verifier {
    /// A verifier; `secrets = None` refuses every request (fail closed).
    pub fn new(secrets: Option<Secrets>, allow_sha1: bool) -> Self {
        Self {
            secrets,
            allow_sha1,
        }
    }

    /// Checks `body` against the signature headers (values as sent, if any).
    pub fn verify(
        &self,
        body: &[u8],
        sha256_header: Option<&str>,
        sha1_header: Option<&str>,
    ) -> Result<Algorithm, SignatureError> {
        let secrets = self.secrets.as_ref().ok_or(SignatureError::NoSecret)?;
        if let Some(header) = sha256_header {
            let digest = parse_header(header, "sha256", 32)?;
            return match secrets.0.iter().any(|k| {
                let mut mac = Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes any key length");
                mac.update(body);
                mac.verify_slice(&digest).is_ok()
            }) {
                true => Ok(Algorithm::Sha256),
                false => Err(SignatureError::Mismatch),
            };
        }
        match sha1_header {
            None => Err(SignatureError::Missing),
            Some(_) if !self.allow_sha1 => Err(SignatureError::Sha1NotAllowed),
            Some(header) => {
                let digest = parse_header(header, "sha1", 20)?;
                match secrets.0.iter().any(|k| {
                    let mut mac =
                        Hmac::<Sha1>::new_from_slice(k).expect("HMAC takes any key length");
                    mac.update(body);
                    mac.verify_slice(&digest).is_ok()
                }) {
                    true => Ok(Algorithm::Sha1),
                    false => Err(SignatureError::Mismatch),
                }
            }
        }
    }
}

fn parse_header(header: &str, prefix: &'static str, len: usize) -> Result<Vec<u8>, SignatureError> {
    let malformed = || SignatureError::Malformed(truncate(header, 80), prefix);
    let hex_part = header
        .trim()
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or_else(malformed)?;
    if hex_part.len() != len * 2 {
        return Err(malformed());
    }
    hex::decode(hex_part).map_err(|_| malformed())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The `X-Hub-Signature-256` value GitHub would send for `body` with `secret`.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The legacy `X-Hub-Signature` (SHA-1) value for `body` with `secret`.
pub fn sign_sha1(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "It's a Secret to Everybody";
    const VECTOR: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn verifier(list: &str) -> Verifier {
        Verifier::new(Some(Secrets::parse(list).unwrap()), false)
    }

    #[test]
    fn github_published_vector() {
        assert_eq!(sign_sha256(SECRET.as_bytes(), b"Hello, World!"), VECTOR);
        assert_eq!(
            verifier(SECRET).verify(b"Hello, World!", Some(VECTOR), None),
            Ok(Algorithm::Sha256)
        );
    }

    #[test]
    fn wrong_secret_is_a_mismatch() {
        assert_eq!(
            verifier("not it").verify(b"Hello, World!", Some(VECTOR), None),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotated_secrets_both_verify() {
        let v = verifier(&format!("new-secret, {SECRET}"));
        assert!(v.verify(b"Hello, World!", Some(VECTOR), None).is_ok());
        let new = sign_sha256(b"new-secret", b"Hello, World!");
        assert!(v.verify(b"Hello, World!", Some(&new), None).is_ok());
    }

    #[test]
    fn other_bytes_do_not_verify() {
        assert_eq!(
            verifier(SECRET).verify(b"Hello, World?", Some(VECTOR), None),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_header() {
        assert_eq!(
            verifier(SECRET).verify(b"x", None, None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn malformed_headers() {
        let v = verifier(SECRET);
        let cases = [
            "",
            "sha256=",
            "sha256",
            &VECTOR[..VECTOR.len() - 2],                   // truncated
            &format!("{}zz", &VECTOR[..VECTOR.len() - 2]), // non-hex
            &VECTOR.replace("sha256=", "sha1="),           // wrong prefix
            &VECTOR.replace("sha256=", "sha512="),
            &VECTOR.replace("sha256=", "SHA256="),
            &format!("{VECTOR}00"),
        ];
        for header in cases {
            assert!(
                matches!(
                    v.verify(b"Hello, World!", Some(header), None),
                    Err(SignatureError::Malformed(..))
                ),
                "{header:?} should be malformed"
            );
        }
    }

    #[test]
    fn upper_case_hex_digits_are_the_same_digest() {
        let upper = format!("sha256={}", VECTOR["sha256=".len()..].to_uppercase());
        assert!(
            verifier(SECRET)
                .verify(b"Hello, World!", Some(&upper), None)
                .is_ok()
        );
    }

    #[test]
    fn empty_body_signs_and_verifies() {
        let sig = sign_sha256(SECRET.as_bytes(), b"");
        assert!(verifier(SECRET).verify(b"", Some(&sig), None).is_ok());
        assert_eq!(
            verifier(SECRET).verify(b"", Some(VECTOR), None),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn sha1_only_when_allowed() {
        let sig = sign_sha1(SECRET.as_bytes(), b"Hello, World!");
        assert_eq!(
            verifier(SECRET).verify(b"Hello, World!", None, Some(&sig)),
            Err(SignatureError::Sha1NotAllowed)
        );
        let allowed = Verifier::new(Some(Secrets::parse(SECRET).unwrap()), true);
        assert_eq!(
            allowed.verify(b"Hello, World!", None, Some(&sig)),
            Ok(Algorithm::Sha1)
        );
        assert_eq!(
            allowed.verify(b"Hello, World?", None, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn sha256_wins_over_sha1_when_both_are_sent() {
        let allowed = Verifier::new(Some(Secrets::parse(SECRET).unwrap()), true);
        let sha1 = sign_sha1(SECRET.as_bytes(), b"Hello, World!");
        let bad256 = sign_sha256(b"other", b"Hello, World!");
        assert_eq!(
            allowed.verify(b"Hello, World!", Some(&bad256), Some(&sha1)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn no_secret_refuses_everything() {
        let v = Verifier::new(None, false);
        assert_eq!(
            v.verify(b"Hello, World!", Some(VECTOR), None),
            Err(SignatureError::NoSecret)
        );
        assert!(Secrets::parse(" , ").is_err());
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let s = Secrets::parse(SECRET).unwrap();
        assert!(!format!("{s:?}").contains("Secret to"));
    }

    proptest::proptest! {
        #[test]
        fn verification_is_exact(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                                 secret in "[a-zA-Z0-9_.!-]{1,40}", flip in 0usize..512) {
            let sig = sign_sha256(secret.as_bytes(), &body);
            let v = Verifier::new(Some(Secrets::parse(&secret).unwrap()), false);
            proptest::prop_assert!(v.verify(&body, Some(&sig), None).is_ok());
            if !body.is_empty() {
                let mut other = body.clone();
                let i = flip % other.len();
                other[i] ^= 1;
                proptest::prop_assert_eq!(v.verify(&other, Some(&sig), None), Err(SignatureError::Mismatch));
            }
            let wrong = Verifier::new(Some(Secrets::parse(&format!("{secret}x")).unwrap()), false);
            proptest::prop_assert_eq!(wrong.verify(&body, Some(&sig), None), Err(SignatureError::Mismatch));
        }

        #[test]
        fn arbitrary_headers_never_panic(h in ".{0,100}", body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let v = Verifier::new(Some(Secrets::parse("s").unwrap()), true);
            let _ = v.verify(&body, Some(&h), None);
            let _ = v.verify(&body, None, Some(&h));
        }
    }
}

#[cfg(test)]
mod keyring_tests {
    use super::*;
    use std::sync::Mutex;

    /// A source answering from a list, then the last again.
    struct Script(Mutex<Vec<Result<&'static str, &'static str>>>);

    impl SecretFetch for Script {
        fn fetch(
            &self,
        ) -> Pin<Box<dyn Future<Output = Result<Secrets, crate::ports::PortError>> + Send + '_>>
        {
            let mut next = self.0.lock().unwrap();
            let answer = if next.len() > 1 {
                next.remove(0)
            } else {
                next[0]
            };
            Box::pin(async move {
                answer.map_err(crate::ports::PortError::new).and_then(|s| {
                    Secrets::parse(s).map_err(|e| crate::ports::PortError::new(e.to_string()))
                })
            })
        }
    }

    const OLD: &str = "the-old-secret-of-24-chars";
    const NEW: &str = "the-new-secret-of-24-chars";

    fn accepts(v: &Verifier, secret: &str) -> bool {
        v.verify(b"{}", Some(&sign_sha256(secret.as_bytes(), b"{}")), None)
            .is_ok()
    }

    #[tokio::test]
    async fn a_rotated_secret_takes_over_within_the_ttl_and_a_bad_read_keeps_the_old() {
        let ring = Keyring::refreshing(
            Verifier::new(Some(Secrets::parse(OLD).unwrap()), false),
            Box::new(Script(Mutex::new(vec![
                Err("Secrets Manager is unreachable"),
                Ok("short"),
                Ok(NEW),
            ]))),
            60_000,
            0,
        );
        // Within the TTL: the secrets read at start, nothing read again.
        let (v, problem) = ring.current(59_999).await;
        assert!(accepts(&v, OLD) && problem.is_none());
        // A failed read keeps the old secret and says why.
        let (v, problem) = ring.current(60_000).await;
        assert!(accepts(&v, OLD));
        assert!(problem.unwrap().contains("unreachable"));
        // A secret too short is refused, the old kept.
        let (v, problem) = ring.current(120_000).await;
        assert!(accepts(&v, OLD));
        assert!(problem.unwrap().contains("at least 20"));
        // The rotated secret replaces the old one: the old stops verifying.
        let (v, problem) = ring.current(180_000).await;
        assert!(problem.is_none());
        assert!(accepts(&v, NEW) && !accepts(&v, OLD));
    }

    #[test]
    fn short_secrets_and_shared_secrets_are_told() {
        assert!(
            Secrets::parse("x".repeat(19).as_str())
                .unwrap()
                .check_strength()
                .is_err()
        );
        assert!(Secrets::parse(OLD).unwrap().check_strength().is_ok());
        let both = Secrets::parse(&format!("{NEW},{OLD}")).unwrap();
        assert!(both.shares_any(&Secrets::parse(OLD).unwrap()));
        assert!(!both.shares_any(&Secrets::parse("a-third-secret-of-24-chars").unwrap()));
    }
}
