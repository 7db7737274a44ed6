//! The receiver hot path against the original Python spigot's approach, in the same run.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use spigot_bench::{headers, push_of_size, receive};
use spigot_core::signature::sign_sha256;
use spigot_core::{Secrets, Verifier};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let body = push_of_size(10 * 1024);
    let headers = headers(&sign_sha256(b"s3cret", &body));
    let verifier = Verifier::new(Some(Secrets::parse("s3cret").unwrap()), false);
    for _ in 0..20_000 {
        std::hint::black_box(receive(&verifier, &headers, &body));
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let n = 100_000;
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(receive(&verifier, &headers, std::hint::black_box(&body)));
        }
        best = best.min(start.elapsed().as_secs_f64() / n as f64 * 1e6);
    }
    let python = spigot_e2e::python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/baseline.py");
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the baseline");
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).expect("baseline prints JSON");
    let py_us = py["mean_us"].as_f64().unwrap();
    println!(
        "python_baseline: 10 KB push, best of 5 means: rust {best:.2} us, python {} {py_us:.2} us, ratio {:.0}x",
        py["python"].as_str().unwrap_or("?"),
        py_us / best
    );
}
