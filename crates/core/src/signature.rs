//! GitHub webhook signatures (`X-Hub-Signature-256`, optionally SHA-1 `X-Hub-Signature`).
//!
//! Verification always runs over the raw bytes GitHub sent, with every
//! configured secret (rotation), in constant time.

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
