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
    let http = HttpTarget::new(
        &target.url,
        Default::default(),
        format!("{}/", target.url),
        Duration::from_secs(5),
    )
    .unwrap();

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
    let naive_http = HttpTarget::new(
        &naive_target.url,
        Default::default(),
        format!("{}/", naive_target.url),
        Duration::from_secs(5),
    )
    .unwrap();
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
    let http = HttpTarget::new(
        &target.url,
        Default::default(),
        format!("{}/", target.url),
        Duration::from_secs(5),
    )
    .unwrap();
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
    let naive_http = HttpTarget::new(
        &naive_target.url,
        Default::default(),
        format!("{}/", naive_target.url),
        Duration::from_secs(5),
    )
    .unwrap();
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

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    run_simulated(10, 0).await;
    run_simulated(10, 20).await;
    run(0).await;
    run(20).await;
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
