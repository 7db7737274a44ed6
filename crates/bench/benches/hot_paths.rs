//! Criterion: receiver hot path, evaluator, envelope round trip.
// criterion_group! makes a public function it cannot document.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use spigot_bench::{headers, push_of_size, receive};
use spigot_core::filter::{FilterSet, FilterSpec};
use spigot_core::push::Push;
use spigot_core::signature::sign_sha256;
use spigot_core::{Envelope, Hook, Secrets, Verifier};

fn receiver(c: &mut Criterion) {
    let body = push_of_size(10 * 1024);
    let headers = headers(&sign_sha256(b"s3cret", &body));
    let verifier = Verifier::new(Some(Secrets::parse("s3cret").unwrap()), false);
    c.bench_function("receiver_hot_path_10kb_push", |b| {
        b.iter(|| receive(&verifier, &headers, std::hint::black_box(&body)))
    });
    // Its parts, to see where the time goes.
    let sig = headers[5].1.clone();
    c.bench_function("part_verify_10kb", |b| {
        b.iter(|| {
            verifier
                .verify(std::hint::black_box(&body), Some(&sig), None)
                .unwrap()
        })
    });
    c.bench_function("part_read_hook_10kb", |b| {
        b.iter(|| {
            Hook::read(
                headers.iter().map(|(k, v)| (*k, v.as_str())),
                std::hint::black_box(&body).clone(),
                0,
            )
            .unwrap()
        })
    });
    let hook = Hook::read(
        headers.iter().map(|(k, v)| (*k, v.as_str())),
        body.clone(),
        0,
    )
    .unwrap();
    c.bench_function("part_envelope_encode_10kb", |b| {
        b.iter(|| Envelope::from_hook(std::hint::black_box(&hook)).encode())
    });
}

/// The same request as a REST (payload 1.0) and an HTTP API (payload
/// 2.0) event through the receiver's one path: the event read from its JSON,
/// the request taken out, verified, enveloped, answered in the event's shape.
fn event_shapes(c: &mut Criterion) {
    use aws_lambda_events::apigw::ApiGatewayProxyRequest;
    use aws_lambda_events::http::HeaderValue;
    use spigot_receiver::{Answer, ApiEvent, Inbound};
    let body = push_of_size(10 * 1024);
    let verifier = Verifier::new(Some(Secrets::parse("s3cret").unwrap()), false);
    let mut v1 = ApiGatewayProxyRequest::default();
    for (k, v) in headers(&sign_sha256(b"s3cret", &body)) {
        v1.headers.insert(k, HeaderValue::from_str(&v).unwrap());
    }
    v1.body = Some(String::from_utf8(body.clone()).unwrap());
    v1.stage_variables
        .insert("spigot_state".into(), "OFF".into());
    v1.request_context.apiid = Some("abc123defg".into());
    v1.request_context.stage = Some("live".into());
    let v2 = spigot_e2e::as_http_api_event(&v1);
    let v1 = serde_json::to_vec(&v1).unwrap();
    let v2 = serde_json::to_vec(&v2).unwrap();
    for (name, json) in [("event_v1_rest_10kb", v1), ("event_v2_http_10kb", v2)] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let event: ApiEvent = serde_json::from_slice(std::hint::black_box(&json)).unwrap();
                let inbound = Inbound::from_event(&event).unwrap();
                let headers: Vec<(&str, String)> = inbound
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                let envelope = receive(&verifier, &headers, &inbound.body);
                let answer = Answer {
                    status: 202,
                    body: serde_json::json!({"status": "buffered", "bytes": envelope.len()}),
                };
                serde_json::to_vec(&answer.to_event_response(&event)).unwrap()
            })
        });
    }
}

fn evaluator(c: &mut Criterion) {
    // 500 filters of one repository: services, each with include and exclude patterns, glob and regex.
    let filters: Vec<_> = (0..500)
        .map(|i| {
            let spec = if i % 5 == 4 {
                format!(r#"{{"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "svc-{i}", "Syntax": "regex", "Include": ["services/svc{i}/", "libs/lib{i}/"], "Exclude": [".*\\.md$"]}}"#)
            } else {
                format!(r#"{{"Repository": "octo-org/mono", "Branch": "main", "Pipeline": "svc-{i}", "Include": ["services/svc{i}/**", "libs/lib{i}/**"], "Exclude": ["**/*.md", "**/test/**"]}}"#)
            };
            FilterSpec::from_json(spec.as_bytes()).unwrap().compile().unwrap()
        })
        .collect();
    let (set, _) = FilterSet::new(filters);
    // 2,048 changed paths spread over 64 services (so ~13% of the filters match).
    let paths: Vec<String> = (0..2048)
        .map(|i| {
            format!(
                "services/svc{}/src/module_{}/file_{i}.rs",
                (i % 64) * 7,
                i % 13
            )
        })
        .collect();
    let payload = serde_json::json!({
        "ref": "refs/heads/main", "after": "abc", "repository": {"full_name": "octo-org/mono"},
        "commits": [{"added": [], "modified": paths, "removed": []}],
    })
    .to_string();
    let push = Push::parse(payload.as_bytes()).unwrap();
    let started = set.evaluate(&push).iter().filter(|d| d.start).count();
    assert_eq!(started, 64, "the benchmark input starts 64 pipelines");
    c.bench_function("evaluate_500_filters_2048_paths", |b| {
        b.iter(|| set.evaluate(std::hint::black_box(&push)))
    });
    c.bench_function("parse_push_2048_paths", |b| {
        b.iter(|| Push::parse(std::hint::black_box(payload.as_bytes())).unwrap())
    });
}

fn envelope(c: &mut Criterion) {
    let body = push_of_size(1024 * 1024);
    let hook = Hook {
        delivery: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
        event: "push".into(),
        repository: Some("octo-org/mono".into()),
        headers: vec![("x-github-event".into(), "push".into())],
        body,
        received_at_ms: 0,
        json_body: true,
    };
    c.bench_function("envelope_encode_decode_1mb", |b| {
        b.iter(|| {
            let text = Envelope::from_hook(std::hint::black_box(&hook)).encode();
            let env = Envelope::decode(&text).unwrap();
            let bytes = env.inline_body().unwrap().unwrap();
            env.into_hook(bytes).unwrap()
        })
    });
}

criterion_group!(benches, receiver, event_shapes, evaluator, envelope);
criterion_main!(benches);
