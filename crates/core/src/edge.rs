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

/// The stage variables as the edge hands them to requests when an update takes
/// `lag_ms` to reach every request (AWS documents no bound; `spigot dev
/// --stage-lag-ms` and the tests choose one): readings of the stage are
/// observed as they happen, and a request sees the newest reading at least
/// `lag_ms` old (the oldest reading while none is that old yet).
#[derive(Debug, Clone, Default)]
pub struct LaggedStage {
    lag_ms: u64,
    readings: std::collections::VecDeque<(u64, std::collections::HashMap<String, String>)>,
}

impl LaggedStage {
    /// No readings yet, lagging by `lag_ms`.
    pub fn new(lag_ms: u64) -> Self {
        Self {
            lag_ms,
            readings: Default::default(),
        }
    }

    /// Records that the stage held `variables` at `now_ms`; forgets readings no request can see any more.
    pub fn observe(&mut self, now_ms: u64, variables: std::collections::HashMap<String, String>) {
        if self.readings.back().is_some_and(|(_, v)| *v == variables) {
            return;
        }
        self.readings.push_back((now_ms, variables));
        let horizon = now_ms.saturating_sub(self.lag_ms);
        while self.readings.len() > 1 && self.readings[1].0 <= horizon {
            self.readings.pop_front();
        }
    }

    /// What a request at `now_ms` sees.
    pub fn at(&self, now_ms: u64) -> Option<&std::collections::HashMap<String, String>> {
        let horizon = now_ms.saturating_sub(self.lag_ms);
        self.readings
            .iter()
            .rev()
            .find(|(t, _)| *t <= horizon)
            .or(self.readings.front())
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod lag_tests {
    use super::LaggedStage;

    fn state(s: &str) -> std::collections::HashMap<String, String> {
        [("spigot_state".to_string(), s.to_string())].into()
    }

    #[test]
    fn a_request_sees_the_stage_as_it_was_lag_ago() {
        let mut lag = LaggedStage::new(1000);
        assert_eq!(lag.at(0), None);
        lag.observe(0, state("ON"));
        lag.observe(500, state("ON"));
        lag.observe(2000, state("OFF"));
        // 2.5 s: the OFF of 2.0 s is not 1 s old yet.
        assert_eq!(lag.at(2500), Some(&state("ON")));
        assert_eq!(lag.at(3000), Some(&state("OFF")));
        lag.observe(3100, state("DRAINING"));
        assert_eq!(lag.at(3500), Some(&state("OFF")));
        assert_eq!(lag.at(4200), Some(&state("DRAINING")));
        // Without a lag, the newest reading.
        let mut now = LaggedStage::new(0);
        now.observe(10, state("ON"));
        now.observe(20, state("OFF"));
        assert_eq!(now.at(20), Some(&state("OFF")));
    }
}
