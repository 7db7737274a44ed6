//! What the front door refuses before the receiver runs: API Gateway REST takes
//! bodies up to 10 MiB; Lambda takes a synchronous event up to 6 MiB, and with
//! `BinaryMediaTypes: */*` the body sits in the event base64-encoded (4/3 of
//! its size), beside the headers (twice: `headers` and `multiValueHeaders`)
//! and the request context. So the largest body that reaches the receiver is
//! about 4.7 MB. `spigot dev` refuses the same requests with the same answers,
//! so a local test cannot pass a hook production drops.

/// The largest request body API Gateway REST accepts.
pub const API_GATEWAY_MAX_BODY: usize = 10 * 1024 * 1024;
/// The largest synchronous Lambda invocation payload (the whole event).
pub const LAMBDA_MAX_EVENT: usize = 6 * 1024 * 1024;
/// What a REST proxy event holds besides the body and the headers
/// (`requestContext`, path, stage variables), generously.
pub const EVENT_OVERHEAD: usize = 2_048;

/// A request the front door refuses, and how it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeRefusal {
    /// Over API Gateway's body limit.
    BodyTooLong,
    /// The Lambda event would be over Lambda's limit.
    EventTooLarge,
}

impl EdgeRefusal {
    /// The status, content type and body API Gateway answers.
    pub fn answer(self) -> (u16, &'static str, &'static str) {
        match self {
            EdgeRefusal::BodyTooLong => (
                413,
                "text; charset=utf-8",
                "HTTP content length exceeded 10485760 bytes.",
            ),
            EdgeRefusal::EventTooLarge => (
                413,
                "application/json",
                "{\"message\": \"Request Too Long\"}",
            ),
        }
    }
}

/// The size of the Lambda event of a request with a body of `body_len`
/// bytes and these headers (an estimate that errs on the large side).
pub fn lambda_event_bytes<'a>(
    body_len: usize,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> usize {
    let base64 = body_len.div_ceil(3) * 4;
    // Each header twice: `"k":"v",` and `"k":["v"],`.
    let headers: usize = headers
        .into_iter()
        .map(|(k, v)| 2 * (k.len() + v.len()) + 12)
        .sum();
    base64 + headers + EVENT_OVERHEAD
}

/// Whether API Gateway and Lambda let the request through to the receiver.
pub fn admit<'a>(
    body_len: usize,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), EdgeRefusal> {
    if body_len > API_GATEWAY_MAX_BODY {
        return Err(EdgeRefusal::BodyTooLong);
    }
    if lambda_event_bytes(body_len, headers) > LAMBDA_MAX_EVENT {
        return Err(EdgeRefusal::EventTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GITHUB: [(&str, &str); 4] = [
        ("content-type", "application/json"),
        ("x-github-event", "push"),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        (
            "x-hub-signature-256",
            "sha256=0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ];

    #[test]
    fn the_largest_body_that_reaches_the_receiver_is_about_4_7_mb() {
        assert_eq!(admit(4_600_000, GITHUB), Ok(()));
        assert_eq!(admit(4_720_000, GITHUB), Err(EdgeRefusal::EventTooLarge));
        assert_eq!(
            admit(API_GATEWAY_MAX_BODY + 1, GITHUB),
            Err(EdgeRefusal::BodyTooLong)
        );
        let largest = (0..LAMBDA_MAX_EVENT)
            .rev()
            .step_by(1_000)
            .find(|n| admit(*n, GITHUB).is_ok())
            .unwrap();
        assert!((4_700_000..4_720_000).contains(&largest), "{largest}");
    }

    #[test]
    fn refusals_answer_as_api_gateway_does() {
        assert_eq!(EdgeRefusal::EventTooLarge.answer().0, 413);
        assert!(EdgeRefusal::BodyTooLong.answer().2.contains("10485760"));
    }
}
