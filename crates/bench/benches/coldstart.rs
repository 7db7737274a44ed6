//! Cold start of each release `bootstrap` against a fake Lambda Runtime API on
//! loopback: process start -> first `/next` (init), first and warm invocation
//! latency, peak RSS. AWS calls go to a local moto server; the receiver
//! forwards to a local target.
//!
//! Each function is started [`RUNS`] times; the table shows medians (peak RSS:
//! the largest). With `COLDSTART_BEFORE=DIR` (another build's `target/release`)
//! the same runs are made with those binaries too, side by side. The `spigot`
//! CLI's start is measured as well (`--version`; `status` against moto).
//!
//! Needs `cargo build --release` of the five functions and the CLI first (`make bench` does it).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spigot_core::ports::Switch;
use spigot_core::resources::Resource;
use spigot_core::spigot::State as SpigotState;

const WARM: usize = 20;
/// Cold starts of each function (the init figure is their median).
const RUNS: usize = 7;

/// A function: its name, environment and the event it is invoked with.
type Function = (&'static str, Vec<(String, String)>, String);

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Run {
    name: &'static str,
    init_ms: f64,
    first_ms: f64,
    warm_ms: f64,
    rss_mb: f64,
    size_mb: f64,
}

async fn measure(dir: &str, name: &'static str, env: Vec<(String, String)>, event: String) -> Run {
    let runtime = spigot_e2e::FakeRuntime::start(vec![event; WARM + 1]).await;
    let bin = format!("{dir}/spigot-{name}");
    let size_mb = std::fs::metadata(&bin)
        .map(|m| m.len() as f64 / 1e6)
        .unwrap_or(0.0);
    let log = std::env::temp_dir().join(format!("coldstart-{name}.log"));
    let start = Instant::now();
    let mut child = Command::new(&bin)
        .env_clear()
        .envs(runtime.env(&format!("spigot-{name}")))
        .env("RUST_LOG", "warn")
        .envs(env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {bin} ({e}); build it with `cargo build --release -p spigot-{name}`")
        });
    if tokio::time::timeout(Duration::from_secs(60), runtime.done())
        .await
        .is_err()
    {
        child.kill().ok();
        panic!(
            "{name}: not every invocation was answered in 60 s (served {}, answered {}, first /next {:?}); see {}",
            runtime.served().len(),
            runtime.answered().len(),
            runtime.first_next().map(|t| t - start),
            log.display()
        );
    }
    let rss_mb = peak_rss_kb(child.id()) as f64 / 1024.0;
    child.kill().ok();
    child.wait().ok();
    let errors = runtime.errors();
    assert!(errors.is_empty(), "{name} reported errors: {errors:?}");
    let served = runtime.served();
    let answered = runtime.answered();
    assert_eq!(
        answered.len(),
        WARM + 1,
        "{name}: every invocation answered"
    );
    let init = runtime.first_next().expect("init finished") - start;
    let lat: Vec<f64> = served
        .iter()
        .zip(&answered)
        .map(|(s, (a, _))| (*a - *s).as_secs_f64() * 1000.0)
        .collect();
    Run {
        name,
        init_ms: init.as_secs_f64() * 1000.0,
        first_ms: lat[0],
        warm_ms: lat[1..].iter().sum::<f64>() / WARM as f64,
        rss_mb,
        size_mb,
    }
}

fn event(file: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../events/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (sdk, st) = spigot_e2e::stack().await;
    spigot_e2e::switch(&sdk, &st)
        .set(SpigotState::On)
        .await
        .unwrap();
    let target = spigot_e2e::FakeTarget::start().await;
    let moto = spigot_e2e::moto().to_string();
    let common = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = vec![
            ("AWS_ENDPOINT_URL".into(), moto.clone()),
            (
                "BUFFER_QUEUE_URL".into(),
                st.get(Resource::BufferUrl).to_string(),
            ),
            (
                "BUFFER_DLQ_URL".into(),
                st.get(Resource::DlqUrl).to_string(),
            ),
            ("CONFIG_BUCKET".into(), st.get(Resource::Bucket).to_string()),
            (
                "TARGET_URL".into(),
                format!("{}/github-webhook/", target.url),
            ),
            // The local target is http.
            ("ALLOW_INSECURE_TARGET".into(), "true".into()),
            ("API_ID".into(), st.get(Resource::ApiId).to_string()),
            ("STAGE_NAME".into(), st.get(Resource::Stage).to_string()),
        ];
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    };
    // The custom resource answers to a local ResponseURL.
    let mut cfn: serde_json::Value = serde_json::from_str(&event("cfn-create.json")).unwrap();
    cfn["ResponseURL"] = serde_json::json!(format!("{}/cfn-response", target.url));
    let here = format!("{}/../../target/release", env!("CARGO_MANIFEST_DIR"));
    let before = std::env::var("COLDSTART_BEFORE").ok();
    let mut builds = vec![("after", here.clone())];
    if let Some(b) = &before {
        builds.insert(0, ("before", b.clone()));
    }
    // The reconciler reads a GitHub stand-in with one failed delivery.
    let github = spigot_e2e::FakeHooks::start(&target.url, "spigot-local-test-secret", 100).await;
    github.seed(
        "repos/octo-org/mono/hooks/42/deliveries",
        "bench-guid",
        spigot_e2e::push_payload("octo-org/mono", "bench").as_bytes(),
        502,
        60,
        false,
    );
    let functions: Vec<Function> = vec![
        (
            "receiver",
            common(&[("WEBHOOK_SECRET", "spigot-local-test-secret")]),
            event("push.json"),
        ),
        ("drainer", common(&[]), event("scheduled.json")),
        ("evaluator", common(&[]), event("sqs-push.json")),
        ("filter-resource", common(&[]), cfn.to_string()),
        (
            "reconciler",
            common(&[
                ("GITHUB_API_URL", github.url.as_str()),
                ("GITHUB_API_ALLOW_HTTP", "true"),
                ("GITHUB_TOKEN", "ghp_bench"),
                ("GITHUB_HOOKS", "repo/octo-org/mono/42"),
            ]),
            event("scheduled.json"),
        ),
    ];
    let mut rows: Vec<(&'static str, &'static str, Run)> = Vec::new();
    for (name, env, ev) in &functions {
        for (build, dir) in &builds {
            if !std::path::Path::new(&format!("{dir}/spigot-{name}")).exists() {
                println!("{build}: no spigot-{name} in {dir}; skipped");
                continue;
            }
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                runs.push(measure(dir, name, env.clone(), ev.clone()).await);
            }
            rows.push((name, build, summarize(runs)));
        }
    }
    println!(
        "coldstart (x86_64 release build, this machine; median of {RUNS} cold starts, {WARM} warm invocations each):"
    );
    println!(
        "{:<16} {:<7} {:>9} {:>11} {:>10} {:>10} {:>9}",
        "function", "build", "init ms", "first ms", "warm ms", "peak MB", "size MB"
    );
    for (name, build, r) in &rows {
        println!(
            "{:<16} {:<7} {:>9.2} {:>11.2} {:>10.2} {:>10.1} {:>9.1}",
            name, build, r.init_ms, r.first_ms, r.warm_ms, r.rss_mb, r.size_mb
        );
    }
    // The CLI: process start to exit.
    let status_args: Vec<String> = [
        ("--endpoint", moto.as_str()),
        ("--api-id", st.get(Resource::ApiId)),
        ("--stage", st.get(Resource::Stage)),
        ("--buffer-url", st.get(Resource::BufferUrl)),
        ("--dlq-url", st.get(Resource::DlqUrl)),
        ("--eval-url", st.get(Resource::EvalUrl)),
        ("--eval-dlq-url", st.get(Resource::EvalDlqUrl)),
        ("--bucket", st.get(Resource::Bucket)),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    println!("{:<24} {:<7} {:>9}", "spigot (CLI)", "build", "wall ms");
    for (label, args) in [
        ("--version", vec!["--version".to_string()]),
        (
            "status",
            [vec!["status".to_string()], status_args.clone()].concat(),
        ),
    ] {
        for (build, dir) in &builds {
            let bin = format!("{dir}/spigot");
            if !std::path::Path::new(&bin).exists() {
                continue;
            }
            let mut times: Vec<f64> = (0..RUNS)
                .map(|_| {
                    let start = Instant::now();
                    let ok = Command::new(&bin)
                        .args(&args)
                        .env("AWS_EC2_METADATA_DISABLED", "true")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false);
                    assert!(ok, "spigot {label} failed ({build})");
                    start.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            times.sort_by(f64::total_cmp);
            println!(
                "{:<24} {:<7} {:>9.2}",
                format!("spigot {label}"),
                build,
                times[RUNS / 2]
            );
        }
    }
}

/// Medians of the runs; the largest peak RSS.
fn summarize(mut runs: Vec<Run>) -> Run {
    let median = |runs: &mut Vec<Run>, key: fn(&Run) -> f64| {
        runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
        key(&runs[runs.len() / 2])
    };
    let init_ms = median(&mut runs, |r| r.init_ms);
    let first_ms = median(&mut runs, |r| r.first_ms);
    let warm_ms = median(&mut runs, |r| r.warm_ms);
    let rss_mb = runs.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
    Run {
        name: runs[0].name,
        init_ms,
        first_ms,
        warm_ms,
        rss_mb,
        size_mb: runs[0].size_mb,
    }
}
