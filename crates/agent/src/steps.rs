//! Running a script's steps: a shell command, an HTTP download, an S3 download.
//! Each step has a time limit; a shell step runs in its own process group so
//! that a timeout stops everything it started.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest;
use spigot_core::trigger::{Status, StepReport};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::script::{Action, Script, Step};

/// Lines of output kept for a receipt.
pub const TAIL_LINES: usize = 20;
/// Longest line kept, characters.
const LINE_CHARS: usize = 400;

/// How steps are run.
pub struct Runner {
    /// The shell for `shell` steps (`-c TEXT`; `-e` too for POSIX shells).
    pub shell: String,
    /// The limit of a step that names none.
    pub step_timeout: Duration,
    /// For `download_s3`.
    pub s3: aws_sdk_s3::Client,
    /// For `download` (built with [`redirect_policy`]).
    pub http: spigot_aws::tls::LazyClient,
    /// A download larger than this fails (and leaves nothing behind).
    pub max_download_bytes: u64,
    /// The account that must own a `download_s3` bucket (S3's ExpectedBucketOwner).
    pub bucket_owner: Option<String>,
}

/// The default [`Runner::max_download_bytes`]: 2 GiB.
pub const MAX_DOWNLOAD_BYTES: u64 = 2 << 30;

/// Redirects a download may follow: at most 5, https only, never to a
/// loopback, private, link-local (169.254.169.254: instance metadata) or
/// unspecified address, nor to `localhost`. (A name that resolves to such an
/// address is not caught here: the first URL is the script's own.)
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("more than 5 redirects");
        }
        let url = attempt.url().clone();
        if url.scheme() != "https" {
            return attempt.error(format!("redirect to {url} refused: not https"));
        }
        if private_host(&url) {
            return attempt.error(format!(
                "redirect to {url} refused: a loopback, private or link-local address"
            ));
        }
        attempt.follow()
    })
}

fn private_host(url: &reqwest::Url) -> bool {
    use std::net::IpAddr;
    let v4 = |ip: std::net::Ipv4Addr| {
        ip.is_loopback()
            || ip.is_private()
            || ip.is_link_local()
            || ip.is_unspecified()
            || ip.is_broadcast()
            || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64)
    };
    let Some(host) = url.host_str() else {
        return true;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => v4(ip),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip.to_ipv4_mapped().is_some_and(v4)
        }
        Err(_) => {
            let d = host.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    }
}

/// What a script run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Each step run, in order.
    pub steps: Vec<StepReport>,
    /// The step that failed the script.
    pub failed: Option<StepReport>,
    /// The last lines of output of the last step run.
    pub tail: Vec<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// Output lines, the last [`TAIL_LINES`] kept.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: &str) {
        let line: String = line.chars().take(LINE_CHARS).collect();
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn lines(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().cloned().collect()
    }
}

/// Why a download step failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DownloadError(String);

/// Why a step failed: its exit code when it had one, and a sentence.
struct Failure {
    exit_code: Option<i32>,
    error: String,
}

impl Runner {
    /// Runs `script`'s steps; `env` is each shell step's whole environment.
    pub async fn run(&self, script: &Script, env: &[(String, String)]) -> Outcome {
        let start = Instant::now();
        let mut outcome = Outcome {
            steps: Vec::new(),
            failed: None,
            tail: Vec::new(),
            duration_ms: 0,
        };
        for (i, step) in script.steps.iter().enumerate() {
            let tail = Tail::default();
            let began = Instant::now();
            let limit = step.timeout.unwrap_or(self.step_timeout);
            let result = self.step(step, env, &tail, limit).await;
            let mut report = StepReport {
                index: i + 1,
                kind: step.action.kind().to_string(),
                name: step.name.clone(),
                status: Status::Done,
                exit_code: match step.action {
                    Action::Shell(_) => Some(0),
                    _ => None,
                },
                duration_ms: began.elapsed().as_millis() as u64,
                error: None,
            };
            if let Err(f) = &result {
                report.status = Status::Failed;
                report.exit_code = f.exit_code;
                report.error = Some(f.error.clone());
                tail.push(&f.error);
            }
            tracing::info!(step = i + 1, kind = %report.kind, status = report.status.as_str(), ms = report.duration_ms, "step ended");
            outcome.tail = tail.lines();
            outcome.steps.push(report.clone());
            if result.is_err() && !step.continue_on_error {
                outcome.failed = Some(report);
                break;
            }
        }
        outcome.duration_ms = start.elapsed().as_millis() as u64;
        outcome
    }

    async fn step(
        &self,
        step: &Step,
        env: &[(String, String)],
        tail: &Tail,
        limit: Duration,
    ) -> Result<(), Failure> {
        let plain = |error: String| Failure {
            exit_code: None,
            error,
        };
        match &step.action {
            Action::Shell(text) => self.shell(text, env, tail, limit).await,
            Action::Download { url, dest, sha256 } => {
                tokio::time::timeout(limit, self.download(url, dest, sha256.as_deref(), tail))
                    .await
                    .map_err(|_| plain(format!("timed out after {}", secs(limit))))?
                    .map_err(|e| plain(e.to_string()))
            }
            Action::DownloadS3 { bucket, key, dest } => {
                tokio::time::timeout(limit, self.download_s3(bucket, key, dest, tail))
                    .await
                    .map_err(|_| plain(format!("timed out after {}", secs(limit))))?
                    .map_err(|e| plain(e.to_string()))
            }
        }
    }

    /// The shell running `text` with exactly `env`: nothing of the agent's
    /// own environment (loader and shell variables among it) leaks in
    /// unasked; POSIX shells stop at the first failing command, as prostagma
    /// stopped at the first failing line.
    fn command(&self, text: &str, env: &[(String, String)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.shell);
        let posix = Path::new(&self.shell)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| matches!(n, "sh" | "bash" | "dash" | "zsh" | "ksh" | "ash"));
        if posix {
            cmd.arg("-e");
        }
        cmd.arg("-c")
            .arg(text)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    async fn shell(
        &self,
        text: &str,
        env: &[(String, String)],
        tail: &Tail,
        limit: Duration,
    ) -> Result<(), Failure> {
        let mut cmd = self.command(text, env);
        let mut child = cmd.spawn().map_err(|e| Failure {
            exit_code: None,
            error: format!("cannot start {}: {e}", self.shell),
        })?;
        let pid = child.id();
        let readers = [
            child.stdout.take().map(|s| read_lines(s, tail.clone())),
            child.stderr.take().map(|s| read_lines(s, tail.clone())),
        ];
        let waited = tokio::time::timeout(limit, child.wait()).await;
        let status = match waited {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(Failure {
                    exit_code: None,
                    error: format!("waiting for the shell failed: {e}"),
                });
            }
            Err(_) => {
                kill_group(pid);
                let _ = child.wait().await;
                return Err(Failure {
                    exit_code: None,
                    error: format!("timed out after {}; stopped", secs(limit)),
                });
            }
        };
        for reader in readers.into_iter().flatten() {
            // The output is read to its end (a background process holding the pipe is not waited for long).
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        match status.code() {
            Some(0) => Ok(()),
            Some(code) => Err(Failure {
                exit_code: Some(code),
                error: format!("exited with code {code}"),
            }),
            None => Err(Failure {
                exit_code: None,
                error: "killed by a signal".into(),
            }),
        }
    }

    async fn download(
        &self,
        url: &str,
        dest: &str,
        sha256: Option<&str>,
        tail: &Tail,
    ) -> Result<(), DownloadError> {
        let client = self.http.get().map_err(|e| DownloadError(e.to_string()))?;
        let mut resp = client.get(url).send().await.map_err(|e| {
            DownloadError(format!("GET {url} failed: {}", spigot_aws::error_text(&e)))
        })?;
        if !resp.status().is_success() {
            return Err(DownloadError(format!(
                "GET {url} answered {}",
                resp.status()
            )));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_download_bytes)
        {
            return Err(DownloadError(format!(
                "GET {url}: {} bytes is more than the {}-byte cap",
                resp.content_length().unwrap_or_default(),
                self.max_download_bytes
            )));
        }
        let mut file = Partial::create(dest, self.max_download_bytes).await?;
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            DownloadError(format!(
                "reading {url} failed: {}",
                spigot_aws::error_text(&e)
            ))
        })? {
            file.write(&chunk).await?;
        }
        file.finish(sha256, tail).await
    }

    async fn download_s3(
        &self,
        bucket: &str,
        key: &str,
        dest: &str,
        tail: &Tail,
    ) -> Result<(), DownloadError> {
        let out = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_expected_bucket_owner(self.bucket_owner.clone())
            .send()
            .await
            .map_err(|e| {
                DownloadError(format!(
                    "S3 GetObject s3://{bucket}/{key} failed: {}",
                    spigot_aws::error_text(&e)
                ))
            })?;
        let mut body = out.body;
        let mut file = Partial::create(dest, self.max_download_bytes).await?;
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            DownloadError(format!(
                "reading s3://{bucket}/{key} failed: {}",
                spigot_aws::error_text(&e)
            ))
        })? {
            file.write(&chunk).await?;
        }
        file.finish(None, tail).await
    }
}

/// A download being written next to its destination, under a name nobody can
/// guess, created new (never through a symlink or over an existing file),
/// renamed into place when complete.
struct Partial {
    file: tokio::fs::File,
    part: String,
    dest: String,
    hash: sha2::Sha256,
    bytes: u64,
    cap: u64,
}

impl Partial {
    async fn create(dest: &str, cap: u64) -> Result<Self, DownloadError> {
        if let Some(dir) = Path::new(dest)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| DownloadError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let part = format!("{dest}.spigot-{}.part", spigot_aws::random_id());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&part)
            .await
            .map_err(|e| DownloadError(format!("cannot write {part}: {e}")))?;
        Ok(Self {
            file,
            part,
            dest: dest.to_string(),
            hash: sha2::Sha256::new(),
            bytes: 0,
            cap,
        })
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), DownloadError> {
        self.hash.update(chunk);
        self.bytes = self.bytes.saturating_add(chunk.len() as u64);
        if self.bytes > self.cap {
            let _ = tokio::fs::remove_file(&self.part).await;
            return Err(DownloadError(format!(
                "{} is larger than the {}-byte download cap; stopped",
                self.dest, self.cap
            )));
        }
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| DownloadError(format!("cannot write {}: {e}", self.part)))
    }

    async fn finish(mut self, want: Option<&str>, tail: &Tail) -> Result<(), DownloadError> {
        self.file
            .flush()
            .await
            .map_err(|e| DownloadError(format!("cannot write {}: {e}", self.part)))?;
        let got = hex::encode(self.hash.clone().finalize());
        if let Some(want) = want
            && want != got
        {
            let _ = tokio::fs::remove_file(&self.part).await;
            return Err(DownloadError(format!(
                "sha256 mismatch for {}: expected {want}, got {got}",
                self.dest
            )));
        }
        tokio::fs::rename(&self.part, &self.dest)
            .await
            .map_err(|e| DownloadError(format!("cannot move {} into place: {e}", self.dest)))?;
        tail.push(&format!(
            "wrote {} ({} bytes, sha256 {got})",
            self.dest, self.bytes
        ));
        Ok(())
    }
}

fn read_lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    stream: R,
    tail: Tail,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("  | {}", spigot_core::text::printable(&line));
            tail.push(&line);
        }
    })
}

/// Stops the process group a shell step leads (its children too).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
