//! `make run` (tools/run.py) and the README's transcript.

use crate::prelude::*;

fn run_py(dir: &Path, args: &[&str]) -> Command {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    std::fs::create_dir_all(dir.join("tools")).unwrap();
    for f in ["run.py", "moto_server.py"] {
        std::fs::copy(format!("{root}/tools/{f}"), dir.join("tools").join(f)).unwrap();
    }
    let mut c = Command::new(python());
    c.current_dir(dir)
        .arg("tools/run.py")
        .args([
            "--spigot",
            assert_cmd::cargo::cargo_bin("spigot").to_str().unwrap(),
        ])
        .args(args);
    c
}

#[test]
fn make_run_names_a_taken_port_at_once() {
    let dir = workdir();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let start = Instant::now();
    let out = run_py(&dir, &["--moto-port", &port]).output().unwrap();
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port {port} is taken")) && stderr.contains("MOTO_PORT="),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(!dir.join(".spigot").exists(), "nothing started or written");
    // The receiver's port, moved with ARGS as the README says, is checked too.
    let free = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = run_py(&dir, &["--moto-port", &free, "--", "--listen", &listen])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port {port} (the webhook receiver) is taken")),
        "{stderr}"
    );
    assert!(!dir.join(".spigot").exists(), "nothing started or written");
}

#[test]
fn ctrl_c_stops_spigot_dev_only_and_moto_keeps_the_stack() {
    let dir = workdir();
    let (moto_port, listen, sink) = (free_port(), free_port(), free_port());
    let py = run_py(&dir, &[]).get_program().to_owned();
    let spigot_bin = assert_cmd::cargo::cargo_bin("spigot");
    // The caller: a shell that runs `make run`'s launcher, then goes on.
    let script = format!(
        "'{}' tools/run.py --spigot '{}' --moto-port {moto_port} --listen-port {listen} --sink-port {sink}; echo caller-alive > after.txt",
        py.to_string_lossy(),
        spigot_bin.display()
    );
    let mut caller = Command::new("bash")
        .current_dir(&dir)
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_serving(format!("127.0.0.1:{listen}").parse().unwrap());
    // Ctrl-C to spigot dev (the launcher's process became it).
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", caller.id())).unwrap();
    let dev: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        Command::new("kill")
            .args(["-INT", &dev.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = caller.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("after.txt"))
            .unwrap()
            .trim(),
        "caller-alive"
    );
    // moto kept running with the stack in it; a second launch reuses it.
    let stack: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".spigot/dev.json")).unwrap())
            .unwrap();
    let alive = {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", moto_port)).expect("moto outlived spigot dev");
        s.write_all(b"GET /moto-api/data.json HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head).into_owned()
    };
    assert!(alive.ends_with("200"), "moto outlived spigot dev: {alive}");
    assert!(stack["buffer_url"].as_str().is_some(), "{stack}");
    let out = run_py(&dir, &["--stop"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("moto (pid"),
        "{out:?}"
    );
}

/// The console blocks of the README's "Try it locally" section: (command, expected lines) pairs, then the dev window's lines.
fn readme_transcript() -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section =
        &readme[readme.find("## Try it locally").unwrap()..readme.find("## Deploy").unwrap()];
    let blocks: Vec<&str> = section
        .split("```console\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect();
    assert_eq!(blocks.len(), 2, "a transcript and the dev window's lines");
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in blocks[0].lines() {
        match line.strip_prefix("$ spigot ") {
            Some(cmd) => steps.push((cmd.to_string(), Vec::new())),
            None => steps.last_mut().unwrap().1.push(line.to_string()),
        }
    }
    (steps, blocks[1].lines().map(String::from).collect())
}

/// The README's "Try it locally" section is what a run prints.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_transcript_is_what_a_run_prints() {
    let (steps, window) = readme_transcript();
    assert!(steps.len() >= 8, "{steps:?}");
    let dir = workdir();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for d in ["tests", "examples"] {
        std::os::unix::fs::symlink(format!("{root}/{d}"), dir.join(d)).unwrap();
    }
    let (listen, sink) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("dev.log")).unwrap();
    let child = spigot(&dir)
        .args(["dev", "--endpoint", moto(), "--name", &unique("readme")])
        .args([
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--sink",
            &format!("127.0.0.1:{sink}"),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _dev = Dev(child);
    wait_serving(format!("127.0.0.1:{listen}").parse().unwrap());
    let ports = |s: &str| {
        s.replace("127.0.0.1:3000", &format!("127.0.0.1:{listen}"))
            .replace("127.0.0.1:3001", &format!("127.0.0.1:{sink}"))
    };
    for (cmd, expected) in &steps {
        let mut args: Vec<String> = cmd.split_whitespace().map(String::from).collect();
        if args[0] == "send" {
            args.extend(["--url".into(), format!("http://127.0.0.1:{listen}/webhook")]);
        }
        let out = spigot(&dir).args(&args).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "spigot {cmd}: {stderr}");
        let got: Vec<&str> = stdout.lines().collect();
        assert_eq!(got.len(), expected.len(), "spigot {cmd}:\n{stdout}");
        for (e, g) in expected.iter().zip(&got) {
            assert!(
                matches(&ports(e), g),
                "spigot {cmd}:\n  README: {e}\n  run:    {g}"
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(dir.join("dev.log")).unwrap();
        let missing: Vec<&String> = window
            .iter()
            .filter(|w| !log.lines().any(|l| matches(&format!("…{w}"), l)))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dev window lacks {missing:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `make run` finds spigot where cargo put it (CARGO_TARGET_DIR), and
/// with no binary there it says so before anything starts: no traceback, no
/// moto left behind. Control: the same call without the override starts
/// nothing either way we cannot see here, so the positive control is the
/// README transcript test, which runs `spigot dev` from the real build.
#[test]
fn make_run_looks_for_spigot_in_cargo_target_dir_and_leaves_nothing_behind() {
    let dir = workdir();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let elsewhere = dir.join("elsewhere");
    let moto_port = free_port();
    let out = std::process::Command::new(python())
        .current_dir(root)
        .arg("tools/run.py")
        .args(["--moto-port", &moto_port.to_string()])
        .args(["--listen-port", &free_port().to_string()])
        .args(["--sink-port", &free_port().to_string()])
        .env("CARGO_TARGET_DIR", &elsewhere)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("Traceback"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no spigot binary at {}",
            elsewhere.join("debug/spigot").display()
        )),
        "{stderr}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", moto_port)).is_err(),
        "no moto was started"
    );
}
