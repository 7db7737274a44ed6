//! Drain throughput: 1,000 buffered hooks in moto to a local target, the
//! engine (batches, concurrency across groups, batch deletes) side by side
//! with the naive loop of the original Python spigot (receive one, post,
//! delete one). Zero loss is checked for both.

use spigot_core::resources::Resource;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures::StreamExt;
use spigot_aws::{HttpTarget, S3Payloads, SqsBuffer};
use spigot_core::ports::{Buffer, Target};
use spigot_core::{Envelope, Hook};
use spigot_e2e::{FakeTarget, depth, stack};
use spigot_engine::policy::Policy;
use spigot_engine::{Counters, Engine, EngineConfig};

const HOOKS: usize = 1000;
const REPOS: usize = 20;

async fn fill(buffer: &SqsBuffer) {
    futures::stream::iter(0..HOOKS)
        .for_each_concurrent(16, |i| async move {
            let hook = Hook {
                delivery: format!("bench-{i}"),
                event: "push".into(),
                repository: Some(format!("octo-org/repo-{}", i % REPOS)),
                headers: vec![
                    ("x-github-event".into(), "push".into()),
                    ("x-github-delivery".into(), format!("bench-{i}")),
                ],
                body: spigot_bench::push_of_size(2048),
                received_at_ms: 0,
                json_body: false,
            };
            buffer.send(&Envelope::from_hook(&hook)).await.unwrap();
        })
        .await;
}

fn distinct(target: &FakeTarget) -> usize {
    let mut ids: Vec<String> = target
        .accepted()
        .iter()
        .filter_map(|r| r.header("x-github-delivery").map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    ids.len()
}

async fn run(latency_ms: u64) {
    let target = FakeTarget::start().await;
    target.set_delay_ms(latency_ms);
    let http = http_target(&target.url);

    // Engine.
    let (sdk, st) = stack().await;
    let sqs = spigot_aws::aws_sdk_sqs::Client::new(&sdk);
    let buffer = SqsBuffer::new(
        sqs.clone(),
        st.get(Resource::BufferUrl),
        st.get(Resource::DlqUrl),
    );
    fill(&buffer).await;
    let engine = Engine::new(
        buffer,
        Some(S3Payloads::new(
            spigot_aws::s3_client(&sdk),
            st.get(Resource::Bucket),
        )),
        http.clone(),
        bench_config(),
    );
    let start = Instant::now();
    let mut runs = 0;
    while depth(&sdk, st.get(Resource::BufferUrl)).await != (0, 0) {
        engine
            .run(None, &AtomicBool::new(false), &Counters::default())
            .await;
        runs += 1;
    }
    let engine_secs = start.elapsed().as_secs_f64();
    let engine_delivered = distinct(&target);

    // Naive loop on a fresh stack.
    let naive_target = FakeTarget::start().await;
    naive_target.set_delay_ms(latency_ms);
    let naive_http = http_target(&naive_target.url);
    let (_, st2) = stack().await;
    let buffer2 = SqsBuffer::new(
        sqs.clone(),
        st2.get(Resource::BufferUrl),
        st2.get(Resource::DlqUrl),
    );
    fill(&buffer2).await;
    let start = Instant::now();
    loop {
        let got = buffer2.receive(1, 0).await.unwrap();
        let Some(m) = got.into_iter().next() else {
            break;
        };
        let env = Envelope::decode(&m.body).unwrap();
        let body = env.inline_body().unwrap().unwrap();
        let hook = env.into_hook(body).unwrap();
        assert!(naive_http.deliver(&hook).await.is_delivered());
        buffer2.delete(&[m.receipt]).await.unwrap();
    }
    let naive_secs = start.elapsed().as_secs_f64();
    let naive_delivered = distinct(&naive_target);
    assert_eq!(
        (engine_delivered, naive_delivered),
        (HOOKS, HOOKS),
        "zero loss"
    );
    println!(
        "drain: {HOOKS} hooks over {REPOS} repositories, target latency {latency_ms} ms: engine {:.0} hooks/s ({runs} run(s), {} duplicates), naive loop {:.0} hooks/s, speed-up {:.1}x",
        HOOKS as f64 / engine_secs,
        target.accepted().len() - engine_delivered,
        HOOKS as f64 / naive_secs,
        naive_secs / engine_secs
    );
}

/// The same two consumers over a simulated SQS with a realistic round trip per call.
async fn run_simulated(rtt_ms: u64, latency_ms: u64) {
    use spigot_bench::simulated::SimulatedSqs;
    let rtt = Duration::from_millis(rtt_ms);
    // Filling is not measured: sends go without the round trip.
    async fn fill_sim(q: &SimulatedSqs) {
        for i in 0..HOOKS {
            let hook = Hook {
                delivery: format!("sim-{i}"),
                event: "push".into(),
                repository: Some(format!("octo-org/repo-{}", i % REPOS)),
                headers: vec![("x-github-delivery".into(), format!("sim-{i}"))],
                body: spigot_bench::push_of_size(2048),
                received_at_ms: 0,
                json_body: true,
            };
            q.send(&Envelope::from_hook(&hook)).await.unwrap();
        }
    }
    let target = FakeTarget::start().await;
    target.set_delay_ms(latency_ms);
    let http = http_target(&target.url);
    let engine = Engine::new(
        SimulatedSqs::new(Duration::ZERO),
        None::<S3Payloads>,
        http.clone(),
        bench_config(),
    );
    fill_sim(&engine.buffer).await;
    engine.buffer.set_rtt(rtt);
    let start = Instant::now();
    while !engine.buffer.is_empty() {
        engine
            .run(None, &AtomicBool::new(false), &Counters::default())
            .await;
    }
    let engine_secs = start.elapsed().as_secs_f64();
    let engine_calls = engine.buffer.calls();
    assert_eq!(distinct(&target), HOOKS, "zero loss");

    let naive_target = FakeTarget::start().await;
    naive_target.set_delay_ms(latency_ms);
    let naive_http = http_target(&naive_target.url);
    let q = SimulatedSqs::new(Duration::ZERO);
    fill_sim(&q).await;
    q.set_rtt(rtt);
    let start = Instant::now();
    loop {
        let Some(m) = q.receive(1, 0).await.unwrap().into_iter().next() else {
            break;
        };
        let env = Envelope::decode(&m.body).unwrap();
        let body = env.inline_body().unwrap().unwrap();
        assert!(
            naive_http
                .deliver(&env.into_hook(body).unwrap())
                .await
                .is_delivered()
        );
        q.delete(&[m.receipt]).await.unwrap();
    }
    let naive_secs = start.elapsed().as_secs_f64();
    assert_eq!(distinct(&naive_target), HOOKS, "zero loss");
    println!(
        "drain (simulated SQS, {rtt_ms} ms per call): {HOOKS} hooks, {REPOS} repositories, target latency {latency_ms} ms: engine {:.0} hooks/s ({} SQS calls), naive loop {:.0} hooks/s, speed-up {:.1}x",
        HOOKS as f64 / engine_secs,
        engine_calls,
        HOOKS as f64 / naive_secs,
        naive_secs / engine_secs
    );
}

/// A target that counts the deliveries in flight at once.
struct InFlight<T> {
    inner: T,
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl<T: Target> Target for InFlight<T> {
    async fn deliver(&self, hook: &Hook) -> spigot_core::delivery::Delivery {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(n, SeqCst);
        let answer = self.inner.deliver(hook).await;
        self.now.fetch_sub(1, SeqCst);
        answer
    }
    async fn probe(&self) -> bool {
        self.inner.probe().await
    }
}

const BOUND_HOOKS: usize = 10_000;
const BOUND_REPOS: usize = 100;
/// Five large repositories of 800 hooks each; the other 95 share the rest.
const LARGE: usize = 5;
const LARGE_HOOKS: usize = 800;

/// Hook `i`'s repository and event: the skewed backlog of the bound benchmark.
/// Of every ten hooks of a repository, six push to main, two to a feature
/// branch, two are pull requests (what coalescing has to respect).
fn backlog(i: usize) -> (String, &'static str, String) {
    let repo = if i < LARGE * LARGE_HOOKS {
        i % LARGE
    } else {
        LARGE + i % (BOUND_REPOS - LARGE)
    };
    let (event, git_ref) = match (i / BOUND_REPOS) % 10 {
        0..=5 => ("push", "refs/heads/main".to_string()),
        6 | 7 => ("push", format!("refs/heads/feature-{}", i % 3)),
        _ => ("pull_request", String::new()),
    };
    (format!("octo-org/repo-{repo}"), event, git_ref)
}

/// Drains 10,000 hooks over 100 repositories (five hold 4,000) to a
/// target answering in 50 ms, on the simulated SQS (10 ms a call, FIFO group
/// semantics), at the default concurrency (8 workers), and compares the time
/// with the lower bound max(largest repository x latency, total x latency /
/// concurrency). With `coalesce`, the bound is the one of what is delivered.
async fn bound(coalesce: spigot_core::coalesce::Coalesce) {
    use spigot_bench::simulated::SimulatedSqs;
    use std::collections::HashMap;
    const LATENCY_MS: u64 = 50;
    let target = FakeTarget::start().await;
    target.set_delay_ms(LATENCY_MS);
    let http = http_target(&target.url);
    let mut config = bench_config();
    config.coalesce = coalesce;
    let workers = config.concurrency;
    let engine = Engine::new(
        SimulatedSqs::new(Duration::ZERO),
        None::<S3Payloads>,
        InFlight {
            inner: http,
            now: Default::default(),
            peak: Default::default(),
        },
        config,
    );
    let push: serde_json::Value =
        serde_json::from_slice(&spigot_bench::push_of_size(2048)).unwrap();
    let mut repo_of = HashMap::new();
    for i in 0..BOUND_HOOKS {
        let (repo, event, git_ref) = backlog(i);
        let mut body = push.clone();
        body["repository"]["full_name"] = repo.clone().into();
        if event == "push" {
            body["ref"] = git_ref.into();
        } else {
            body["action"] = "synchronize".into();
        }
        let delivery = format!("bound-{i}");
        repo_of.insert(delivery.clone(), repo.clone());
        let hook = Hook {
            delivery: delivery.clone(),
            event: event.into(),
            repository: Some(repo),
            headers: vec![("x-github-delivery".into(), delivery)],
            body: body.to_string().into_bytes(),
            received_at_ms: 0,
            json_body: true,
        };
        engine
            .buffer
            .send(&Envelope::from_hook(&hook))
            .await
            .unwrap();
    }
    engine.buffer.set_rtt(Duration::from_millis(10));
    let counters = Counters::default();
    let start = Instant::now();
    while !engine.buffer.is_empty() {
        engine.run(None, &AtomicBool::new(false), &counters).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let s = counters.summary(None);
    let delivered = distinct(&target);
    assert_eq!(
        delivered as u64 + s.coalesced,
        BOUND_HOOKS as u64,
        "every hook delivered or coalesced"
    );
    let mut per_repo: HashMap<&str, usize> = HashMap::new();
    for r in target.accepted() {
        let id = r.header("x-github-delivery").unwrap_or_default();
        *per_repo.entry(repo_of[id].as_str()).or_default() += 1;
    }
    let largest = per_repo.values().copied().max().unwrap_or(0);
    let latency = LATENCY_MS as f64 / 1000.0;
    let bound = (largest as f64 * latency).max(delivered as f64 * latency / workers as f64);
    let peak = engine.target.peak.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "drain bound (simulated SQS 10 ms/call, target {LATENCY_MS} ms, {workers} workers, coalesce {coalesce}): {BOUND_HOOKS} hooks over {BOUND_REPOS} repositories (largest delivered {largest}); delivered {delivered}, coalesced {}; {secs:.1} s against the bound {bound:.1} s = {:.2}x; {:.2} SQS calls a hook; peak {peak} deliveries in flight",
        s.coalesced,
        secs / bound,
        engine.buffer.calls() as f64 / BOUND_HOOKS as f64,
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    bound(spigot_core::coalesce::Coalesce::None).await;
    bound(spigot_core::coalesce::Coalesce::Push).await;
    if std::env::args().any(|a| a == "bound") {
        return;
    }
    run_simulated(10, 0).await;
    run_simulated(10, 20).await;
    run(0).await;
    run(20).await;
}

/// An HTTP target client for a local target at `url`.
fn http_target(url: &str) -> HttpTarget {
    HttpTarget::new(
        url,
        Default::default(),
        format!("{url}/"),
        Duration::from_secs(5),
    )
    .unwrap()
}

/// The drainer's shape without a deadline: 8 workers, production backoff.
fn bench_config() -> EngineConfig {
    EngineConfig {
        concurrency: 8,
        wait_seconds: 0,
        stop_before: Duration::ZERO,
        until_empty: true,
        heartbeat: false,
        max_age: None,
        coalesce: spigot_core::coalesce::Coalesce::None,
        policy: Policy::production(3, 100),
        rate: None,
        body_budget: spigot_engine::config::BODY_BUDGET,
    }
}
