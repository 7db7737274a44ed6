//! The versioned SQS message that carries a hook through the buffer.

use base64::Engine;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::webhook::Hook;

/// The envelope format version this build writes and reads.
pub const VERSION: u32 = 1;

/// The message group used when a payload names no repository.
pub const NO_REPOSITORY_GROUP: &str = "_no-repository";

/// Why a message is not a usable envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or not the envelope's shape.
    #[error("message is not a Spigot envelope: {0}")]
    Malformed(String),
    /// Written by a newer (or unknown) version of Spigot.
    #[error("envelope version {0} is not supported (this build reads version {VERSION})")]
    Version(u32),
    /// The inline base64 body does not decode.
    #[error("envelope body is not valid base64: {0}")]
    BadBase64(String),
    /// The body's SHA-256 does not match the one recorded at receipt.
    #[error(
        "body of delivery {0} does not match its recorded SHA-256; refusing to deliver altered bytes"
    )]
    HashMismatch(String),
}

/// Where the body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A JSON body, embedded verbatim (no escaping: the exact bytes, cheaply).
    Json {
        /// The body's JSON text, exactly as sent.
        json: String,
    },
    /// A UTF-8 body, inline.
    Text {
        /// The body.
        text: String,
    },
    /// Any other body, inline as base64.
    Base64 {
        /// The body, base64 (standard alphabet).
        data: String,
    },
    /// A claim-check: the body is an object in the config bucket.
    Claim {
        /// The object key (`payloads/...`).
        key: String,
        /// The body's size in bytes.
        size: u64,
    },
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A plain struct, not an internally tagged enum: serde buffers those,
        // and a buffered raw JSON value loses its exact text.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            kind: String,
            json: Option<Box<RawValue>>,
            text: Option<String>,
            data: Option<String>,
            key: Option<String>,
            size: Option<u64>,
        }
        use serde::de::Error;
        let w = Wire::deserialize(d)?;
        let missing = |f: &'static str| D::Error::missing_field(f);
        match w.kind.as_str() {
            "json" => Ok(Body::Json {
                json: w.json.ok_or_else(|| missing("json"))?.get().to_string(),
            }),
            "text" => Ok(Body::Text {
                text: w.text.ok_or_else(|| missing("text"))?,
            }),
            "base64" => Ok(Body::Base64 {
                data: w.data.ok_or_else(|| missing("data"))?,
            }),
            "claim" => Ok(Body::Claim {
                key: w.key.ok_or_else(|| missing("key"))?,
                size: w.size.ok_or_else(|| missing("size"))?,
            }),
            other => Err(D::Error::unknown_variant(
                other,
                &["json", "text", "base64", "claim"],
            )),
        }
    }
}

/// A hook on its way through the buffer (or a dead-letter queue).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Envelope {
    /// Format version.
    pub v: u32,
    /// `X-GitHub-Delivery`.
    pub delivery: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// `repository.full_name`, when the payload has one.
    #[serde(default)]
    pub repository: Option<String>,
    /// The headers that travel with the hook.
    pub headers: Vec<(String, String)>,
    /// The body, inline or by reference.
    pub body: Body,
    /// Hex SHA-256 of the body bytes.
    pub sha256: String,
    /// Receipt time, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// How many times it was sent again after its first arrival (dead-letter, redrive).
    #[serde(default)]
    pub attempts: u32,
    /// The last failure, for operators.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The replay that sent it again from the archive (`spigot replay`), if
    /// one did: its own FIFO deduplication id, so a replay is never taken for
    /// the original (or another replay) within SQS's five minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
}

/// True when SQS accepts every character of `text` in a message body (#x9,
/// #xA, #xD, #x20-#xD7FF, #xE000-#xFFFD, #x10000-#x10FFFF). A JSON body may
/// hold U+FFFE or U+FFFF unescaped, and a text body raw control characters:
/// such bodies travel as base64 instead of being refused at the door.
pub fn sqs_carries(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r')
            || ('\u{20}'..='\u{D7FF}').contains(&c)
            || ('\u{E000}'..='\u{FFFD}').contains(&c)
            || c >= '\u{10000}'
    })
}

impl Envelope {
    /// Wraps a hook, body inline.
    pub fn from_hook(hook: &Hook) -> Self {
        let verbatim = hook.json_body
            && hook.body.first().is_some_and(|b| !b.is_ascii_whitespace())
            && hook.body.last().is_some_and(|b| !b.is_ascii_whitespace());
        let body = match std::str::from_utf8(&hook.body) {
            // Surrounding whitespace would not survive a raw JSON value: such bodies go as text.
            Ok(text) if verbatim && sqs_carries(text) => Body::Json {
                json: text.to_string(),
            },
            Ok(text) if sqs_carries(text) => Body::Text {
                text: text.to_string(),
            },
            // Not UTF-8, or characters SQS refuses (U+FFFE, U+FFFF, raw control characters).
            _ => Body::Base64 {
                data: base64::engine::general_purpose::STANDARD.encode(&hook.body),
            },
        };
        Self {
            v: VERSION,
            delivery: hook.delivery.clone(),
            event: hook.event.clone(),
            repository: hook.repository.clone(),
            headers: hook.headers.clone(),
            body,
            sha256: sha256_hex(&hook.body),
            received_at_ms: hook.received_at_ms,
            attempts: 0,
            last_error: None,
            replay: None,
        }
    }

    /// The JSON text sent to SQS. Written by hand so that a JSON body is
    /// embedded verbatim (serde would escape it as a string).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.body_len() + 512);
        self.write_to(&mut out);
        out
    }

    /// `encode().len()`, without building the text (a JSON body is not copied).
    pub fn encoded_len(&self) -> usize {
        struct Count(usize);
        impl std::fmt::Write for Count {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0 += s.len();
                Ok(())
            }
        }
        let mut count = Count(0);
        self.write_to(&mut count);
        count.0
    }

    fn write_to(&self, out: &mut impl std::fmt::Write) {
        let json = |v: &dyn erased::Json| v.to_json();
        let _ = write!(
            out,
            "{{\"v\":{},\"delivery\":{},\"event\":{},\"repository\":{},\"headers\":{},\"body\":",
            self.v,
            json(&self.delivery),
            json(&self.event),
            json(&self.repository),
            json(&self.headers),
        );
        let _ = match &self.body {
            Body::Json { json: text } => write!(out, "{{\"kind\":\"json\",\"json\":{text}}}"),
            Body::Text { text } => write!(out, "{{\"kind\":\"text\",\"text\":{}}}", json(text)),
            Body::Base64 { data } => write!(out, "{{\"kind\":\"base64\",\"data\":{}}}", json(data)),
            Body::Claim { key, size } => write!(
                out,
                "{{\"kind\":\"claim\",\"key\":{},\"size\":{size}}}",
                json(key)
            ),
        };
        let _ = write!(
            out,
            ",\"sha256\":{},\"received_at_ms\":{},\"attempts\":{},\"last_error\":{}",
            json(&self.sha256),
            self.received_at_ms,
            self.attempts,
            json(&self.last_error),
        );
        if let Some(replay) = &self.replay {
            let _ = write!(out, ",\"replay\":{}", json(replay));
        }
        let _ = out.write_char('}');
    }

    fn body_len(&self) -> usize {
        match &self.body {
            Body::Json { json } => json.len(),
            Body::Text { text } => text.len() + text.len() / 8,
            Body::Base64 { data } => data.len(),
            Body::Claim { .. } => 0,
        }
    }

    /// The size of the hook's body in bytes (inline or claim-checked), about.
    pub fn body_size(&self) -> u64 {
        match &self.body {
            Body::Claim { size, .. } => *size,
            Body::Base64 { data } => data.len() as u64 * 3 / 4,
            Body::Json { json } => json.len() as u64,
            Body::Text { text } => text.len() as u64,
        }
    }

    /// Reads an SQS message body.
    pub fn decode(text: &str) -> Result<Self, EnvelopeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version =
            serde_json::from_str(text).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if version.v != VERSION {
            return Err(EnvelopeError::Version(version.v));
        }
        serde_json::from_str(text).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }

    /// The delivery id and repository of an encoded envelope, for log lines
    /// (the body is skipped, not decoded); empty when the text is no envelope.
    pub fn ids(text: &str) -> (String, String) {
        #[derive(Deserialize)]
        struct Ids {
            delivery: String,
            #[serde(default)]
            repository: Option<String>,
        }
        match serde_json::from_str::<Ids>(text) {
            Ok(ids) => (
                crate::text::printable(&ids.delivery),
                crate::text::printable(&ids.repository.unwrap_or_default()),
            ),
            Err(_) => (String::new(), String::new()),
        }
    }

    /// The inline body bytes, or `None` for a claim-check.
    pub fn inline_body(&self) -> Result<Option<Vec<u8>>, EnvelopeError> {
        match &self.body {
            Body::Json { json } => Ok(Some(json.as_bytes().to_vec())),
            Body::Text { text } => Ok(Some(text.as_bytes().to_vec())),
            Body::Base64 { data } => base64::engine::general_purpose::STANDARD
                .decode(data)
                .map(Some)
                .map_err(|e| EnvelopeError::BadBase64(e.to_string())),
            Body::Claim { .. } => Ok(None),
        }
    }

    /// The claim-check key, if the body is stored aside.
    pub fn claim_key(&self) -> Option<&str> {
        match &self.body {
            Body::Claim { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Replaces the inline body by a claim-check reference under `prefix`
    /// (`payloads/` for the buffer); returns the key to store the body under.
    /// `copy` tells this stored copy from every other copy of the same delivery
    /// (a GitHub redelivery, a dead letter, a redrive): each has its own object,
    /// so delivering one never deletes another's body.
    pub fn check_body(&mut self, prefix: &str, size: u64, copy: &str) -> String {
        let key = format!(
            "{prefix}{}/{}",
            key_part(&self.delivery, 200),
            key_part(copy, 100)
        );
        self.body = Body::Claim {
            key: key.clone(),
            size,
        };
        key
    }

    /// Points a claim-checked envelope at a new copy of its body (`{key}~{copy}`);
    /// returns (old key, new key), or `None` for an inline body.
    pub fn recheck_body(&mut self, copy: &str) -> Option<(String, String)> {
        let Body::Claim { key, size } = &self.body else {
            return None;
        };
        let base = key.split('~').next().unwrap_or(key);
        let new = format!("{base}~{}", safe_id(copy, 100));
        let old = key.clone();
        self.body = Body::Claim {
            key: new.clone(),
            size: *size,
        };
        Some((old, new))
    }

    /// Rebuilds the hook from this envelope and its body bytes, checking the hash.
    pub fn into_hook(self, body: Vec<u8>) -> Result<Hook, EnvelopeError> {
        if sha256_hex(&body) != self.sha256 {
            return Err(EnvelopeError::HashMismatch(self.delivery));
        }
        let json_body = matches!(self.body, Body::Json { .. });
        Ok(Hook {
            json_body,
            delivery: self.delivery,
            event: self.event,
            repository: self.repository,
            headers: self.headers,
            body,
            received_at_ms: self.received_at_ms,
        })
    }

    /// The FIFO message group: one repository, delivered in order.
    pub fn group_id(&self) -> String {
        self.repository
            .as_deref()
            .map(|r| safe_id(r, 128))
            .unwrap_or_else(|| NO_REPOSITORY_GROUP.to_string())
    }

    /// The FIFO deduplication id: the delivery id on first arrival (GitHub
    /// redeliveries collapse), delivery id + attempt on every later send.
    pub fn dedup_id(&self) -> String {
        if let Some(replay) = &self.replay {
            return safe_id(
                &format!("{}#r{replay}#{}", self.delivery, self.attempts),
                128,
            );
        }
        if self.attempts == 0 {
            safe_id(&self.delivery, 128)
        } else {
            safe_id(&format!("{}#{}", self.delivery, self.attempts), 128)
        }
    }

    /// Records a failure and counts a new send (dead-letter or redrive).
    pub fn resend(&mut self, last_error: Option<String>) {
        self.attempts = self.attempts.saturating_add(1);
        if last_error.is_some() {
            self.last_error = last_error;
        }
    }
}

mod erased {
    /// A small field written as JSON by serde (strings escaped, options as null).
    pub(super) trait Json {
        fn to_json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).expect("plain fields always serialise")
        }
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An id SQS accepts (at most `max` of `[A-Za-z0-9!-~]`), or a hash of it.
pub fn safe_id(id: &str, max: usize) -> String {
    if !id.is_empty() && id.len() <= max && id.bytes().all(|b| b.is_ascii_graphic()) {
        id.to_string()
    } else {
        sha256_hex(id.as_bytes())
    }
}

/// `id` as one segment of an object key: itself when it is 1-`max` letters,
/// digits, '-', '_' or '.' and holds no "..", else its SHA-256. The delivery
/// header is not signed: it never puts a '/' or a ".." into a key.
pub fn key_part(id: &str, max: usize) -> String {
    let plain = !id.is_empty()
        && id.len() <= max
        && !id.contains("..")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        id.to_string()
    } else {
        sha256_hex(id.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_claim_check_key_takes_no_path_from_the_delivery_header() {
        let mut e = Envelope::decode(
            &Envelope::from_hook(&crate::webhook::Hook {
                delivery: "../../filters/evil".into(),
                event: "push".into(),
                repository: None,
                headers: vec![],
                body: b"{}".to_vec(),
                received_at_ms: 0,
                json_body: true,
            })
            .encode(),
        )
        .unwrap();
        let key = e.check_body("payloads/", 2, "t/../1");
        let rest = key.strip_prefix("payloads/").unwrap();
        assert_eq!(rest.matches('/').count(), 1, "{key}");
        assert!(!key.contains(".."), "{key}");
        // Control: a GitHub delivery id (a UUID) is kept as it is.
        assert_eq!(
            key_part("72d3162e-cc78-11e3-81ab-4c9367dc0958", 200),
            "72d3162e-cc78-11e3-81ab-4c9367dc0958"
        );
    }

    fn hook(body: &[u8]) -> Hook {
        Hook {
            delivery: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
            event: "push".into(),
            repository: Some("octo-org/mono".into()),
            headers: vec![("x-github-event".into(), "push".into())],
            body: body.to_vec(),
            received_at_ms: 1_700_000_000_000,
            json_body: false,
        }
    }

    #[test]
    fn json_bodies_travel_verbatim_and_come_back_identical() {
        let raw = br#"{"a": "x\"y",  "b":[1, 2.50, {"c":null}], "u":"\u00e9"}"#;
        let mut h = hook(raw);
        h.json_body = true;
        let e = Envelope::from_hook(&h);
        assert!(matches!(e.body, Body::Json { .. }));
        let text = e.encode();
        assert!(
            text.contains(r#""json":{"a": "x\"y",  "b":[1, 2.50"#),
            "{text}"
        );
        let back = Envelope::decode(&text).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.inline_body().unwrap().unwrap(), raw);
        // Surrounding whitespace would be lost by a raw value: carried as text instead.
        let mut spaced = hook(b" {} ");
        spaced.json_body = true;
        assert!(matches!(
            Envelope::from_hook(&spaced).body,
            Body::Text { .. }
        ));
    }

    #[test]
    fn utf8_bodies_are_inline_text_and_binary_is_base64() {
        assert!(matches!(
            Envelope::from_hook(&hook(b"{}")).body,
            Body::Text { .. }
        ));
        assert!(matches!(
            Envelope::from_hook(&hook(&[0xff, 0x00])).body,
            Body::Base64 { .. }
        ));
    }

    #[test]
    fn unknown_version_and_junk_are_refused() {
        let mut e = Envelope::from_hook(&hook(b"{}"));
        e.v = 2;
        assert_eq!(
            Envelope::decode(&e.encode()),
            Err(EnvelopeError::Version(2))
        );
        assert!(matches!(
            Envelope::decode("poison"),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode("{\"v\":1}"),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn altered_bytes_are_refused() {
        let e = Envelope::from_hook(&hook(b"original"));
        assert!(matches!(
            e.into_hook(b"altered".to_vec()),
            Err(EnvelopeError::HashMismatch(_))
        ));
    }

    #[test]
    fn claim_check_keeps_hash_and_names_a_payload_key() {
        let mut e = Envelope::from_hook(&hook(b"big"));
        let key = e.check_body("payloads/", 3, "1700000000000-1");
        assert_eq!(
            key,
            "payloads/72d3162e-cc78-11e3-81ab-4c9367dc0958/1700000000000-1"
        );
        assert_eq!(e.claim_key(), Some(key.as_str()));
        assert_eq!(e.inline_body(), Ok(None));
        let back = Envelope::decode(&e.encode()).unwrap();
        assert_eq!(back.into_hook(b"big".to_vec()).unwrap().body, b"big");
    }

    #[test]
    fn a_copy_gets_its_own_key_and_inline_bodies_need_none() {
        let mut e = Envelope::from_hook(&hook(b"big"));
        assert_eq!(e.recheck_body("dlq-1"), None);
        let key = e.check_body("payloads/", 3, "t-1");
        let (old, new) = e.recheck_body("dlq-1").unwrap();
        assert_eq!(old, key);
        assert_eq!(new, format!("{key}~dlq-1"));
        let (_, again) = e.recheck_body("redrive-2").unwrap();
        assert_eq!(
            again,
            format!("{key}~redrive-2"),
            "copies of copies stay flat"
        );
        assert_eq!(e.claim_key(), Some(again.as_str()));
    }

    #[test]
    fn dedup_id_changes_with_every_resend() {
        let mut e = Envelope::from_hook(&hook(b"{}"));
        let first = e.dedup_id();
        assert_eq!(first, e.delivery);
        e.resend(Some("target answered 404".into()));
        let second = e.dedup_id();
        e.resend(None);
        let third = e.dedup_id();
        assert_ne!(first, second);
        assert_ne!(second, third);
        assert_eq!(e.last_error.as_deref(), Some("target answered 404"));
    }

    #[test]
    fn ids_sqs_refuses_are_hashed() {
        assert_eq!(safe_id("octo-org/mono", 128), "octo-org/mono");
        assert_eq!(safe_id("has space", 128).len(), 64);
        assert_eq!(safe_id(&"x".repeat(200), 128).len(), 64);
        let mut e = Envelope::from_hook(&hook(b"{}"));
        e.repository = None;
        assert_eq!(e.group_id(), NO_REPOSITORY_GROUP);
    }

    proptest! {
        #[test]
        fn decode_encode_is_identity(body in proptest::collection::vec(any::<u8>(), 0..2048),
                                     text in ".{0,200}", attempts in 0u32..5, n in any::<i64>(), s in ".{0,40}") {
            let json = serde_json::json!({"n": n, "s": s, "list": [s.clone(), n.to_string()]}).to_string().into_bytes();
            for (bytes, is_json) in [(body.clone(), false), (text.clone().into_bytes(), false), (json, true)] {
                let mut h = hook(&bytes);
                h.json_body = is_json;
                let mut e = Envelope::from_hook(&h);
                e.attempts = attempts;
                prop_assert_eq!(e.encoded_len(), e.encode().len());
                let back = Envelope::decode(&e.encode()).unwrap();
                prop_assert_eq!(&back, &e);
                let inline = back.inline_body().unwrap().unwrap();
                prop_assert_eq!(&inline, &bytes);
                prop_assert_eq!(back.into_hook(inline).unwrap().body, bytes);
            }
        }

        #[test]
        fn decode_of_arbitrary_text_never_panics(s in ".{0,300}") {
            let _ = Envelope::decode(&s);
        }
    }
}
