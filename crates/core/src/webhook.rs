//! An incoming GitHub webhook: who sent what, with the exact bytes.

use std::borrow::Cow;

use base64::Engine;
use serde::Deserialize;

/// Why a request is not a readable webhook (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A required GitHub header is absent or empty.
    #[error("missing {0} header; is this request from a GitHub webhook?")]
    MissingHeader(&'static str),
    /// A header value is not acceptable.
    #[error("invalid {0} header {1:?}: {2}")]
    BadHeader(&'static str, String, &'static str),
    /// `isBase64Encoded` was set but the body is not base64.
    #[error("body is marked base64 but does not decode: {0}")]
    BadBase64(String),
    /// A form-encoded body without its `payload=` field.
    #[error("form-encoded body has no payload= field")]
    FormWithoutPayload,
    /// The payload is not a JSON object.
    #[error("payload is not JSON: {0}")]
    NotJson(String),
}

/// Headers that travel with a hook to the target.
pub fn travels(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "content-type"
        || n == "user-agent"
        || n.starts_with("x-github-")
        || n.starts_with("x-hub-signature")
}

/// Case-insensitive lookup in a header list.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The raw body of an API Gateway proxy event: `isBase64Encoded` bodies are decoded.
pub fn decode_body(body: Option<&str>, is_base64: bool) -> Result<Vec<u8>, WebhookError> {
    let body = body.unwrap_or_default();
    if is_base64 {
        base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|e| WebhookError::BadBase64(e.to_string()))
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// A verified-or-not webhook as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `X-GitHub-Delivery`: GitHub's id for this delivery (kept on redelivery).
    pub delivery: String,
    /// `X-GitHub-Event`: `push`, `pull_request`, `ping`, ...
    pub event: String,
    /// `repository.full_name` of the payload, when it has one.
    pub repository: Option<String>,
    /// The headers that travel with it (names in lower case).
    pub headers: Vec<(String, String)>,
    /// The body exactly as GitHub sent it.
    pub body: Vec<u8>,
    /// When it was received, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The body itself is a JSON document (checked when it was read), so an
    /// envelope can carry it verbatim instead of as an escaped string.
    pub json_body: bool,
}

impl Hook {
    /// Reads a hook from request headers (any case) and the raw body.
    pub fn read<'h>(
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
        body: Vec<u8>,
        received_at_ms: u64,
    ) -> Result<Self, WebhookError> {
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(k, _)| travels(k))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        let delivery = required(&headers, "X-GitHub-Delivery")?;
        if delivery.len() > 128 || !delivery.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(WebhookError::BadHeader(
                "X-GitHub-Delivery",
                delivery.chars().take(40).collect(),
                "expected at most 128 visible ASCII characters",
            ));
        }
        let event = required(&headers, "X-GitHub-Event")?;
        if event.len() > 64
            || !event
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(WebhookError::BadHeader(
                "X-GitHub-Event",
                event.chars().take(40).collect(),
                "expected an event name such as push",
            ));
        }
        let mut hook = Self {
            delivery: delivery.to_string(),
            event: event.to_string(),
            repository: None,
            headers,
            body,
            received_at_ms,
            json_body: false,
        };
        let (repository, json_body) = {
            let payload = hook.payload()?;
            // The payload is the body unless it was form-encoded; either way it parses as JSON here.
            (
                repository_of(&payload)?,
                matches!(payload, Cow::Borrowed(_)),
            )
        };
        hook.repository = repository;
        hook.json_body = json_body;
        Ok(hook)
    }

    /// A header of this hook, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The JSON payload: the body itself, or the `payload=` field of a form body.
    pub fn payload(&self) -> Result<Cow<'_, [u8]>, WebhookError> {
        payload_of(self.header("content-type"), &self.body)
    }
}

/// The JSON payload of a body, given its Content-Type.
pub fn payload_of<'b>(
    content_type: Option<&str>,
    body: &'b [u8],
) -> Result<Cow<'b, [u8]>, WebhookError> {
    let is_form = content_type
        .map(|c| {
            c.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
        .unwrap_or(false);
    if !is_form {
        return Ok(Cow::Borrowed(body));
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| Cow::Owned(v.into_owned().into_bytes()))
        .ok_or(WebhookError::FormWithoutPayload)
}

fn required<'a>(
    headers: &'a [(String, String)],
    name: &'static str,
) -> Result<&'a str, WebhookError> {
    header(headers, name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(WebhookError::MissingHeader(name))
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    repository: Option<RepoProbe<'a>>,
}

#[derive(Deserialize)]
struct RepoProbe<'a> {
    #[serde(borrow)]
    full_name: Option<Cow<'a, str>>,
}

/// `repository.full_name` of a JSON payload; other fields are skipped, not built.
pub fn repository_of(payload: &[u8]) -> Result<Option<String>, WebhookError> {
    let probe: Probe<'_> =
        serde_json::from_slice(payload).map_err(|e| WebhookError::NotJson(e.to_string()))?;
    Ok(probe
        .repository
        .and_then(|r| r.full_name)
        .map(Cow::into_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(headers: &[(&str, &str)], body: &[u8]) -> Result<Hook, WebhookError> {
        Hook::read(headers.iter().copied(), body.to_vec(), 1)
    }

    const PUSH: &[u8] =
        br#"{"ref":"refs/heads/main","repository":{"name":"mono","full_name":"octo-org/mono"}}"#;

    #[test]
    fn reads_headers_in_any_case() {
        let hook = read(
            &[
                ("x-github-delivery", "d-1"),
                ("X-GITHUB-EVENT", "push"),
                ("Content-Type", "application/json"),
                ("Authorization", "not forwarded"),
            ],
            PUSH,
        )
        .unwrap();
        assert_eq!(hook.delivery, "d-1");
        assert_eq!(hook.event, "push");
        assert_eq!(hook.repository.as_deref(), Some("octo-org/mono"));
        assert_eq!(hook.header("CONTENT-TYPE"), Some("application/json"));
        assert!(hook.header("authorization").is_none());
    }

    #[test]
    fn missing_headers_are_named() {
        assert_eq!(
            read(&[("X-GitHub-Event", "push")], PUSH),
            Err(WebhookError::MissingHeader("X-GitHub-Delivery"))
        );
        assert_eq!(
            read(&[("X-GitHub-Delivery", "d")], PUSH),
            Err(WebhookError::MissingHeader("X-GitHub-Event"))
        );
        assert_eq!(
            read(
                &[("X-GitHub-Delivery", " "), ("X-GitHub-Event", "push")],
                PUSH
            ),
            Err(WebhookError::MissingHeader("X-GitHub-Delivery"))
        );
    }

    #[test]
    fn odd_header_values_are_refused() {
        assert!(matches!(
            read(
                &[("X-GitHub-Delivery", "a b"), ("X-GitHub-Event", "push")],
                PUSH
            ),
            Err(WebhookError::BadHeader("X-GitHub-Delivery", ..))
        ));
        assert!(matches!(
            read(
                &[("X-GitHub-Delivery", "d"), ("X-GitHub-Event", "pu sh")],
                PUSH
            ),
            Err(WebhookError::BadHeader("X-GitHub-Event", ..))
        ));
    }

    #[test]
    fn form_bodies_keep_their_bytes_and_yield_the_payload() {
        let body = b"payload=%7B%22repository%22%3A%7B%22full_name%22%3A%22a%2Fb%22%7D%7D";
        let hook = read(
            &[
                ("X-GitHub-Delivery", "d"),
                ("X-GitHub-Event", "push"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            body,
        )
        .unwrap();
        assert_eq!(hook.body, body);
        assert_eq!(hook.repository.as_deref(), Some("a/b"));
        assert_eq!(
            read(
                &[
                    ("X-GitHub-Delivery", "d"),
                    ("X-GitHub-Event", "push"),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                b"other=1",
            ),
            Err(WebhookError::FormWithoutPayload)
        );
    }

    #[test]
    fn base64_bodies_decode_and_bad_base64_is_an_error() {
        assert_eq!(decode_body(Some("aGk="), true).unwrap(), b"hi");
        assert_eq!(decode_body(Some("hi"), false).unwrap(), b"hi");
        assert_eq!(decode_body(None, false).unwrap(), b"");
        assert!(matches!(
            decode_body(Some("!!"), true),
            Err(WebhookError::BadBase64(_))
        ));
    }

    #[test]
    fn non_json_is_refused_and_payload_without_repository_is_fine() {
        let h = [("X-GitHub-Delivery", "d"), ("X-GitHub-Event", "push")];
        assert!(matches!(
            read(&h, b"not json"),
            Err(WebhookError::NotJson(_))
        ));
        assert_eq!(read(&h, b"{\"zen\":\"x\"}").unwrap().repository, None);
        assert_eq!(
            read(&h, br#"{"repository":{"full_name":"a\/b"}}"#)
                .unwrap()
                .repository
                .as_deref(),
            Some("a/b")
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
                                        name in ".{0,20}", value in ".{0,40}", b64 in ".{0,40}") {
            let _ = read(&[(name.as_str(), value.as_str()), ("X-GitHub-Delivery", value.as_str()), ("X-GitHub-Event", "push")], &body);
            let _ = decode_body(Some(&b64), true);
            let _ = payload_of(Some("application/x-www-form-urlencoded"), &body);
        }
    }
}
