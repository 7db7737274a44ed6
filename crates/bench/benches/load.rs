//! Bounded load test on loopback: 5,000 signed webhooks, 50 in flight, to a
//! `spigot dev` process while the spigot is flipped OFF and ON twice. Checks
//! the ledger (every delivery id reaches the target) and reports the
//! receiver's throughput and latency percentiles. Stops by itself.
//!
//! Needs the `spigot` binary (`make bench` builds it; or set SPIGOT_BIN).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use spigot_core::ports::Buffer;
use spigot_core::signature::sign_sha256;
use spigot_e2e::{FakeTarget, SECRET, free_port, moto, unique};

const HOOKS: usize = 5000;
const IN_FLIGHT: usize = 50;

fn spigot_bin() -> PathBuf {
    std::env::var_os("SPIGOT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/release/spigot"
            ))
        })
}

fn flip(dir: &PathBuf, state: &str) {
    let ok = Command::new(spigot_bin())
        .current_dir(dir)
        .args([state, "--local"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "spigot {state} --local failed");
}

type MemoryReceiver = spigot_receiver::Receiver<
    spigot_core::ports::memory::MemoryBuffer,
    spigot_core::ports::memory::MemoryPayloads,
    spigot_aws::HttpTarget,
    spigot_core::ports::memory::MemoryEvalQueue,
    spigot_core::ports::memory::MemoryStages,
>;

/// The receiver's Lambda handler on in-memory queues, forwarding to `target_url`.
fn memory_receiver(target_url: &str) -> Arc<MemoryReceiver> {
    archived_receiver(target_url, None)
}

/// [`memory_receiver`], keeping each hook in `archive`.
fn archived_receiver(
    target_url: &str,
    archive: Option<Arc<dyn spigot_core::ports::Archive>>,
) -> Arc<MemoryReceiver> {
    use spigot_core::ports::memory::{MemoryBuffer, MemoryEvalQueue, MemoryPayloads};
    Arc::new(spigot_receiver::Receiver {
        buffer: MemoryBuffer::default(),
        payloads: Some(MemoryPayloads::default()),
        target: Some(
            spigot_aws::HttpTarget::new(
                target_url,
                Default::default(),
                format!("{target_url}/"),
                Duration::from_secs(7),
            )
            .unwrap(),
        ),
        eval: Some(MemoryEvalQueue::default()),
        verifier: spigot_core::Keyring::fixed(spigot_core::Verifier::new(
            Some(spigot_core::Secrets::parse(SECRET).unwrap()),
            false,
        )),
        claim_check_bytes: 262_144,
        metrics: Arc::new(spigot_core::ports::QuietMetrics),
        stages: None,
        draining: Default::default(),
        dedupe_window: Duration::ZERO,
        archive,
    })
}

/// The receiver's own capacity: the Lambda handler in process, in-memory queue
/// ports, forwarding over HTTP to a local target; same hooks, same concurrency.
async fn in_process() {
    let target = FakeTarget::start().await;
    let receiver = memory_receiver(&target.url);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(HOOKS)));
    let start = Instant::now();
    futures::stream::iter(0..HOOKS)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let (receiver, latencies) = (receiver.clone(), latencies.clone());
            async move {
                let body =
                    spigot_e2e::push_payload(&format!("octo-org/repo-{}", i % 25), &i.to_string())
                        .into_bytes();
                let state = if (i / 1000) % 2 == 1 { "OFF" } else { "ON" };
                let req =
                    spigot_e2e::signed_request("push", &format!("mem-{i}"), &body, Some(state));
                let t = Instant::now();
                let resp = receiver.handle_event(&req, 0).await;
                assert!(resp.status_code == 200 || resp.status_code == 202);
                latencies
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
            }
        })
        .await;
    let secs = start.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let buffered = receiver.buffer.sent.lock().unwrap().len();
    println!(
        "load (receiver in process, in-memory queues, HTTP target): {HOOKS} hooks, {IN_FLIGHT} in flight, OFF/ON twice: {:.0} req/s, latency p50 {:.2} ms p99 {:.2} ms; forwarded {}, buffered {buffered}",
        HOOKS as f64 / secs,
        pct(0.5),
        pct(0.99),
        target.accepted().len()
    );
    assert_eq!(target.accepted().len() + buffered, HOOKS, "hooks lost");
}

/// Percentile `p` of sorted `lat`.
fn pct(lat: &[f64], p: f64) -> f64 {
    lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
}

/// The latency the gateway adds on the ON path. The same signed pushes,
/// 20 in flight, to a target answering in `target_ms`: posted directly, then
/// through the receiver (verification, envelope, forward, evaluation
/// enqueue; in process with in-memory queues, so neither API Gateway's nor
/// Lambda's own overhead is in it), in one run.
async fn gateway_latency(target_ms: u64) {
    const N: usize = 3000;
    const CONCURRENT: usize = 20;
    let target = FakeTarget::start().await;
    target.set_delay_ms(target_ms);
    let receiver = memory_receiver(&target.url);
    let body = spigot_bench::push_of_size(8 * 1024);
    let client = reqwest::Client::new();
    let direct = Arc::new(Mutex::new(Vec::with_capacity(N)));
    futures::stream::iter(0..N)
        .for_each_concurrent(CONCURRENT, |i| {
            let (client, direct, body, url) = (
                client.clone(),
                direct.clone(),
                body.clone(),
                target.url.clone(),
            );
            async move {
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("X-GitHub-Event", "push")
                    .header("X-GitHub-Delivery", format!("direct-{i}"))
                    .header("Content-Type", "application/json")
                    .header("X-Hub-Signature-256", sign_sha256(SECRET.as_bytes(), &body))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
                direct
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
            }
        })
        .await;
    let through = Arc::new(Mutex::new(Vec::with_capacity(N)));
    futures::stream::iter(0..N)
        .for_each_concurrent(CONCURRENT, |i| {
            let (receiver, through, body) = (receiver.clone(), through.clone(), body.clone());
            async move {
                let req = spigot_e2e::signed_request("push", &format!("gw-{i}"), &body, Some("ON"));
                let t = Instant::now();
                let resp = receiver.handle_event(&req, 0).await;
                assert_eq!(resp.status_code, 200);
                through
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
            }
        })
        .await;
    let sorted = |v: &Arc<Mutex<Vec<f64>>>| {
        let mut v = v.lock().unwrap().clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    };
    let (d, g) = (sorted(&direct), sorted(&through));
    println!(
        "gateway latency, ON path, target {target_ms} ms, {N} pushes of 8 KB, {CONCURRENT} in flight: direct p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms; through the receiver p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms; added p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms",
        pct(&d, 0.5),
        pct(&d, 0.99),
        pct(&d, 0.999),
        pct(&g, 0.5),
        pct(&g, 0.99),
        pct(&g, 0.999),
        pct(&g, 0.5) - pct(&d, 0.5),
        pct(&g, 0.99) - pct(&d, 0.99),
        pct(&g, 0.999) - pct(&d, 0.999),
    );
    assert_eq!(
        target.accepted().len(),
        2 * N,
        "every request reached the target"
    );
}

/// A stand-in for Kinesis Data Firehose on loopback: it speaks PutRecord's
/// wire format (JSON 1.1, `Firehose_20150804.PutRecord`), counts the
/// records and answers at once, as Firehose answers once it has buffered a
/// record (moto instead writes each record to S3 before it answers).
async fn firehose_standin() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let records = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let (counted, sized) = (records.clone(), bytes.clone());
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (counted, sized) = (counted.clone(), sized.clone());
                async move {
                    let target = headers
                        .get("x-amz-target")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    assert_eq!(target, "Firehose_20150804.PutRecord");
                    let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let data = request["Record"]["Data"].as_str().unwrap_or_default();
                    assert!(!data.is_empty());
                    // The record's own size (Firehose bills it, in 5 KB units), not its base64.
                    let pad = data.bytes().rev().take_while(|&b| b == b'=').count();
                    sized.fetch_add(data.len() / 4 * 3 - pad, Ordering::SeqCst);
                    counted.fetch_add(1, Ordering::SeqCst);
                    (
                        [("content-type", "application/x-amz-json-1.1")],
                        r#"{"RecordId":"standin","Encrypted":false}"#,
                    )
                }
            },
        ),
    );
    (
        format!("http://{}", spigot_e2e::serve(app).await),
        records,
        bytes,
    )
}

/// What the archive adds to the receiver's answer. The same signed
/// 10 KB pushes, 20 in flight, to a target answering at once, through the
/// receiver without the archive, with it on the Firehose stand-in, and with
/// it on moto's Firehose, in alternating rounds of one run.
async fn archive_latency(concurrent: usize) {
    const ROUNDS: usize = 6;
    let per_round = if concurrent == 1 { 150 } else { 500 };
    let target = FakeTarget::start().await;
    let endpoint = moto();
    let sdk = spigot_aws::sdk_config(Some(endpoint)).await;
    let stack = spigot_aws::local::provision(&sdk, endpoint, &unique("bench-archive"))
        .await
        .unwrap();
    let stream = stack.get(spigot_core::resources::Resource::ArchiveStream);
    let on_moto: Arc<dyn spigot_core::ports::Archive> =
        Arc::new(spigot_aws::FirehoseArchive::new(&sdk, stream, None));
    let (standin_url, standin_records, standin_bytes) = firehose_standin().await;
    let standin_sdk = spigot_aws::sdk_config(Some(&standin_url)).await;
    let on_standin: Arc<dyn spigot_core::ports::Archive> =
        Arc::new(spigot_aws::FirehoseArchive::new(&standin_sdk, stream, None));
    let receivers = [
        archived_receiver(&target.url, None),
        archived_receiver(&target.url, Some(on_standin)),
        archived_receiver(&target.url, Some(on_moto)),
    ];
    let body = spigot_bench::push_of_size(10 * 1024);
    let mut lat: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (which, receiver) in receivers.iter().enumerate() {
            let times = Arc::new(Mutex::new(Vec::with_capacity(per_round)));
            futures::stream::iter(0..per_round)
                .for_each_concurrent(concurrent, |i| {
                    let (receiver, times, body) = (receiver.clone(), times.clone(), body.clone());
                    async move {
                        let id = format!("arch-{round}-{which}-{i}");
                        let req = spigot_e2e::signed_request("push", &id, &body, Some("ON"));
                        let t = Instant::now();
                        let resp = receiver.handle_event(&req, 0).await;
                        assert_eq!(resp.status_code, 200);
                        times
                            .lock()
                            .unwrap()
                            .push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                })
                .await;
            lat[which].extend(times.lock().unwrap().iter());
        }
    }
    for l in &mut lat {
        l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let n = ROUNDS * per_round;
    println!(
        "archive latency, ON path, target 0 ms, {n} pushes of 10 KB each way, {concurrent} in flight, alternating rounds: \
         without the archive p50 {:.2} / p99 {:.2} ms; \
         with it, Firehose stand-in p50 {:.2} / p99 {:.2} ms (added p50 {:.2} / p99 {:.2}); \
         with it, moto's Firehose p50 {:.2} / p99 {:.2} ms (added p50 {:.2} / p99 {:.2})",
        pct(&lat[0], 0.5),
        pct(&lat[0], 0.99),
        pct(&lat[1], 0.5),
        pct(&lat[1], 0.99),
        pct(&lat[1], 0.5) - pct(&lat[0], 0.5),
        pct(&lat[1], 0.99) - pct(&lat[0], 0.99),
        pct(&lat[2], 0.5),
        pct(&lat[2], 0.99),
        pct(&lat[2], 0.5) - pct(&lat[0], 0.5),
        pct(&lat[2], 0.99) - pct(&lat[0], 0.99),
    );
    assert_eq!(
        target.accepted().len(),
        3 * n,
        "every hook reached the target"
    );
    assert_eq!(
        standin_records.load(Ordering::SeqCst),
        n,
        "one record a hook"
    );
    println!(
        "archive record of a {}-byte push: {} bytes on average (Firehose bills 5 KB units)",
        body.len(),
        standin_bytes.load(Ordering::SeqCst) / n
    );
}

/// From a drainer run's start (the schedule fires, or `spigot on --now`
/// invokes it) to the first hook at the target: the gate (switch read, health
/// probe) and the first receive, on the simulated SQS (10 ms a call), target 0 ms.
async fn on_to_first_hook() {
    use spigot_bench::simulated::SimulatedSqs;
    let target = FakeTarget::start().await;
    let http = spigot_aws::HttpTarget::new(
        &target.url,
        Default::default(),
        format!("{}/", target.url),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut firsts = Vec::new();
    for round in 0..20 {
        let engine = spigot_engine::Engine::new(
            SimulatedSqs::new(Duration::ZERO),
            None::<spigot_aws::S3Payloads>,
            http.clone(),
            spigot_engine::EngineConfig::test(8, Duration::from_secs(5)),
        );
        for i in 0..50 {
            let hook = spigot_core::Hook {
                delivery: format!("first-{round}-{i}"),
                event: "push".into(),
                repository: Some(format!("octo-org/repo-{}", i % 5)),
                headers: vec![],
                body: spigot_bench::push_of_size(2048),
                received_at_ms: 0,
                json_body: true,
            };
            engine
                .buffer
                .send(&spigot_core::Envelope::from_hook(&hook))
                .await
                .unwrap();
        }
        engine.buffer.set_rtt(Duration::from_millis(10));
        let switch = spigot_core::ports::memory::MemorySwitch::new(spigot_core::State::Draining);
        let before = target.accepted().len();
        let t = Instant::now();
        let gate = spigot_engine::gate(&switch, &engine.target).await;
        assert!(gate.is_ok());
        let (cancel, counters) = (
            std::sync::atomic::AtomicBool::new(false),
            spigot_engine::Counters::default(),
        );
        let run = engine.run(None, &cancel, &counters);
        let watch = async {
            while target.accepted().len() == before {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            t.elapsed().as_secs_f64() * 1000.0
        };
        let (_, first) = futures::join!(run, watch);
        firsts.push(first);
    }
    firsts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "from a drainer run's start to the first drained hook (simulated SQS 10 ms/call, target 0 ms, 20 runs): p50 {:.1} ms, max {:.1} ms; deployed add the schedule (0-60 s) and RESUME_HEALTHY_SECONDS (30 s) unless spigot on --now",
        pct(&firsts, 0.5),
        firsts.last().copied().unwrap_or_default()
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::args().any(|a| a == "archive") {
        archive_latency(1).await;
        archive_latency(20).await;
        return;
    }
    gateway_latency(0).await;
    gateway_latency(100).await;
    archive_latency(1).await;
    archive_latency(20).await;
    on_to_first_hook().await;
    if std::env::args().any(|a| a == "latency") {
        return;
    }
    in_process().await;
    if std::env::args().any(|a| a == "in-process") {
        return;
    }
    let target = FakeTarget::start().await;
    let dir = std::env::temp_dir().join(unique("spigot-load-"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut dev = Command::new(spigot_bin())
        .current_dir(&dir)
        .args([
            "dev",
            "--endpoint",
            moto(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--target",
            &target.url,
        ])
        .args([
            "--name",
            &unique("load"),
            "--secret",
            SECRET,
            "--drain-interval",
            "1",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spigot binary (build it with cargo build --release -p spigot-cli)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "spigot dev did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{addr}/webhook");
    let client = reqwest::Client::new();
    let sent = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(HOOKS)));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));

    // Flip OFF at 20 % and 60 %, ON at 40 % and 80 % of the hooks sent.
    let flipper = {
        let (sent, dir) = (sent.clone(), dir.clone());
        std::thread::spawn(move || {
            for (at, state) in [(0.2, "off"), (0.4, "on"), (0.6, "off"), (0.8, "on")] {
                while (sent.load(Ordering::Relaxed) as f64) < at * HOOKS as f64 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                flip(&dir, state);
            }
        })
    };
    let start = Instant::now();
    futures::stream::iter(0..HOOKS)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let (client, url, sent, latencies, statuses) = (
                client.clone(),
                url.clone(),
                sent.clone(),
                latencies.clone(),
                statuses.clone(),
            );
            async move {
                let body =
                    spigot_e2e::push_payload(&format!("octo-org/repo-{}", i % 25), &i.to_string())
                        .into_bytes();
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("X-GitHub-Event", "push")
                    .header("X-GitHub-Delivery", format!("load-{i}"))
                    .header("Content-Type", "application/json")
                    .header("X-Hub-Signature-256", sign_sha256(SECRET.as_bytes(), &body))
                    .body(body)
                    .send()
                    .await
                    .expect("spigot dev answers");
                latencies
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
                *statuses
                    .lock()
                    .unwrap()
                    .entry(resp.status().as_u16())
                    .or_default() += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
    let send_secs = start.elapsed().as_secs_f64();
    flipper.join().unwrap();

    // Everything buffered drains after the last ON.
    let deadline = Instant::now() + Duration::from_secs(300);
    let distinct = || {
        let mut ids: Vec<String> = target
            .accepted()
            .iter()
            .filter_map(|r| r.header("x-github-delivery").map(str::to_string))
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    while distinct() < HOOKS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total_secs = start.elapsed().as_secs_f64();
    dev.kill().ok();
    dev.wait().ok();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let delivered = distinct();
    println!(
        "load: {HOOKS} hooks, {IN_FLIGHT} in flight, OFF/ON twice: receiver {:.0} req/s, latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms; answers {:?}; delivered {delivered}/{HOOKS} (duplicates {}) after {:.1} s",
        HOOKS as f64 / send_secs,
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1],
        statuses.lock().unwrap(),
        target.accepted().len() - delivered,
        total_secs
    );
    assert_eq!(delivered, HOOKS, "hooks lost");
}
