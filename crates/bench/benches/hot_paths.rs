//! Criterion: receiver hot path, evaluator, envelope round trip.

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

criterion_group!(benches, receiver, evaluator, envelope);
criterion_main!(benches);
