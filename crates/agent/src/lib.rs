//! `spigot-agent` (and `spigot agent`): pull deployments on a host nothing can reach. The agent
//! follows a trigger in the config bucket (a conditional GET of its head every
//! `--interval`: a 304 while nothing changed), runs its script once for each
//! new request, in order, and writes a receipt under the request: `in_progress`
//! when it starts, then `done` or `failed`. Its state dir remembers the last
//! request handled and the one running, so a restart neither repeats nor skips
//! one: a run cut short (the agent killed mid-script) is run again once, with
//! a note in the receipt, and marked failed if it is cut short again.

pub mod daemon;
pub mod push;
pub mod script;
pub mod steps;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use spigot_aws::S3Triggers;
use spigot_core::ports::{Clock, Read, SystemClock, Triggers};
use spigot_core::trigger::{self, Keys, Receipt, Request, ScriptRef, Status};

use crate::daemon::{Exposition, pause, stop_on_signals};
use script::Script;
use spigot_aws::aws_config::SdkConfig;
use steps::{Outcome, Runner};

/// Why the agent could not go on.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// It cannot run as given (a bad script, flag or state file): exit 2.
    #[error("{0}")]
    Usage(String),
    /// It ran and failed: exit 1.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

/// Runs of one request before the agent stops re-running it after interruptions.
const MAX_ATTEMPTS: u32 = 2;
/// Requests taken from one look at the trigger.
const BATCH: usize = 100;
/// Polls between walks forward that do not wait for the head to move
/// (a raiser that died between creating its request and moving the head).
const WALK_EVERY: u64 = 12;
/// How often an idle agent says it still follows the trigger (`spigot trigger --wait` counts it).
const SEEN_EVERY_MS: u64 = 12 * 3600 * 1000;

/// What `spigot-agent` (and `spigot agent`) is told on its command line.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The trigger to follow.
    #[arg(long, env = "SPIGOT_AGENT_TRIGGER")]
    trigger: Option<String>,
    /// The deployment script (YAML steps: shell, download, download_s3).
    #[arg(long, env = "SPIGOT_AGENT_SCRIPT")]
    script: String,
    /// Where the agent remembers the last request it handled [default: $STATE_DIRECTORY, else ~/.local/state/spigot].
    #[arg(long, env = "SPIGOT_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// How often to look for new requests.
    #[arg(long, env = "SPIGOT_AGENT_INTERVAL", default_value = "5s", value_parser = spigot_core::duration::parse)]
    interval: Duration,
    /// Serve Prometheus metrics here (e.g. 127.0.0.1:9465).
    #[arg(long, env = "SPIGOT_AGENT_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Handle what is waiting, then exit (exit 1 if a request failed).
    #[arg(long)]
    once: bool,
    /// This agent's name in receipts [default: the host name].
    #[arg(long, env = "SPIGOT_AGENT_ID")]
    agent_id: Option<String>,
    /// The shell of shell steps.
    #[arg(long, env = "SPIGOT_AGENT_SHELL", default_value = "/bin/sh")]
    shell: String,
    /// Time limit of a step that sets none.
    #[arg(long, env = "SPIGOT_AGENT_STEP_TIMEOUT", default_value = "30m", value_parser = spigot_core::duration::parse)]
    step_timeout: Duration,
    /// A download larger than this many bytes fails.
    #[arg(long, env = "SPIGOT_AGENT_MAX_DOWNLOAD_BYTES", default_value_t = steps::MAX_DOWNLOAD_BYTES)]
    max_download_bytes: u64,
    /// The account that must own download_s3 buckets [default: the agent's own account].
    #[arg(long, env = "SPIGOT_AGENT_ARTIFACT_OWNER")]
    artifact_owner: Option<String>,
    /// Tries of a receipt write (tests shorten it).
    #[arg(long, default_value_t = 8, hide = true, value_parser = clap::value_parser!(u32).range(1..=100))]
    receipt_tries: u32,
    /// The webhook secret(s), comma-separated, in this file: push requests
    /// (raised by a pipeline filter's Trigger) run only when GitHub's
    /// signature of the push checks out with one of them.
    #[arg(long, env = "SPIGOT_AGENT_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// Push requests for a push older than this are skipped (receipt `skipped`).
    #[arg(long, env = "SPIGOT_AGENT_MAX_PUSH_AGE", default_value = "1d", value_parser = spigot_core::duration::parse)]
    max_push_age: Duration,
    /// Gone: pushes reach agents through a trigger (see --help).
    #[arg(long, hide = true)]
    on: Vec<String>,
}

/// What the agent remembers between runs, per trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct State {
    /// The last request handled (0: none).
    last_sequence: u64,
    /// The request being run, and which attempt.
    #[serde(default)]
    running: Option<Running>,
    /// The final receipt of the running request, kept here before it is
    /// written: if writing it fails, a restart writes it again instead of
    /// running the request again.
    #[serde(default)]
    finished: Option<Receipt>,
    /// The newest push this agent deployed, per `owner/repo@branch`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    deployed: BTreeMap<String, push::Deployed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Running {
    sequence: u64,
    attempt: u32,
}

impl State {
    fn load(path: &Path) -> Result<Option<Self>, AgentError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                AgentError::Usage(format!(
                    "the agent state {} is unreadable ({e}); move it aside to start from the newest request",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::Usage(format!(
                "cannot read the agent state {}: {e}",
                path.display()
            ))),
        }
    }

    /// Written whole, then renamed over the old one: a crash leaves one or the other.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let part = path.with_extension("json.part");
        let bytes = serde_json::to_vec_pretty(self)?;
        std::fs::write(&part, bytes).with_context(|| format!("cannot write {}", part.display()))?;
        std::fs::rename(&part, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The agent's Prometheus numbers.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    handled: AtomicU64,
    failed: AtomicU64,
    last_success_ms: AtomicU64,
    last_duration_ms: AtomicU64,
    sequence: AtomicU64,
    polls: AtomicU64,
    pushes: AtomicU64,
    skipped: AtomicU64,
}

impl AgentMetrics {
    /// A final receipt: one run of the script ended, done or not (a skipped
    /// request ran nothing and is counted on its own).
    fn record(&self, receipt: &Receipt) {
        if receipt.status == Status::Skipped {
            return;
        }
        let (done, duration_ms) = (
            receipt.status == Status::Done,
            receipt.duration_ms.unwrap_or(0),
        );
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.last_duration_ms.store(duration_ms, Ordering::Relaxed);
        if done {
            self.last_success_ms
                .store(SystemClock.now_ms(), Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn text(&self) -> String {
        let mut out = Exposition::default();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.metric(
            "spigot_agent_requests_handled_total",
            "counter",
            "Requests the script ran for, to a done or failed receipt.",
            get(&self.handled),
        );
        out.metric(
            "spigot_agent_requests_failed_total",
            "counter",
            "Runs that ended failed.",
            get(&self.failed),
        );
        out.metric(
            "spigot_agent_last_success_timestamp_seconds",
            "gauge",
            "When the last run that ended done ended (0: none yet).",
            format!("{:.3}", get(&self.last_success_ms) as f64 / 1000.0),
        );
        out.metric(
            "spigot_agent_last_duration_seconds",
            "gauge",
            "Wall time of the last run.",
            format!("{:.3}", get(&self.last_duration_ms) as f64 / 1000.0),
        );
        out.metric(
            "spigot_agent_sequence",
            "gauge",
            "The last request of the trigger this agent handled.",
            get(&self.sequence),
        );
        out.metric(
            "spigot_agent_polls_total",
            "counter",
            "Looks at the trigger's head (most are 304 Not Modified).",
            get(&self.polls),
        );
        out.metric(
            "spigot_agent_pushes_handled_total",
            "counter",
            "Push requests (a filter's Trigger) the script ran for.",
            get(&self.pushes),
        );
        out.metric(
            "spigot_agent_requests_skipped_total",
            "counter",
            "Push requests skipped: too old, or older than the push already deployed.",
            get(&self.skipped),
        );
        out.text()
    }
}

/// This host's name, as an agent id.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "agent".into());
    let id: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() || id.starts_with('.') {
        "agent".into()
    } else {
        id
    }
}

fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd's StateDirectory= (several are colon-separated: the first).
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return PathBuf::from(first);
    }
    match std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("spigot"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".local/state/spigot"),
    }
}

/// Everything one agent needs to handle requests.
pub struct Agent {
    store: S3Triggers,
    trigger: String,
    id: String,
    script: Script,
    runner: Runner,
    state_path: PathBuf,
    metrics: Arc<AgentMetrics>,
    /// Tries of a receipt write before the agent gives up (and exits).
    receipt_tries: u32,
    /// How push requests are checked.
    pushes: push::PushCheck,
}

impl Runner {
    /// What runs a script's steps, as the agent's flags say.
    async fn new(sdk: &SdkConfig, args: &AgentArgs) -> Self {
        Self {
            shell: args.shell.clone(),
            step_timeout: args.step_timeout,
            s3: spigot_aws::s3_client(sdk),
            http: spigot_aws::tls::LazyClient::new(|b| {
                b.connect_timeout(Duration::from_secs(10))
                    .redirect(steps::redirect_policy())
            }),
            max_download_bytes: args.max_download_bytes,
            bucket_owner: match &args.artifact_owner {
                Some(owner) => Some(owner.clone()),
                None => own_account(sdk).await,
            },
        }
    }
}

/// Follows `args.trigger` in `bucket` with the AWS configuration `sdk` until
/// stopped (or, with `--once`, until nothing waits).
pub async fn run(sdk: &SdkConfig, bucket: &str, args: AgentArgs) -> Result<(), AgentError> {
    // A script that cannot run is refused before anything else happens.
    let script = Script::load(&args.script).map_err(|e| AgentError::Usage(e.to_string()))?;
    let id = args.agent_id.clone().unwrap_or_else(host_name);
    trigger::check_name("agent id", &id).map_err(|e| AgentError::Usage(e.to_string()))?;
    if !args.on.is_empty() {
        return Err(AgentError::Usage(
            "--on is gone: an agent no longer takes hooks from the buffer. Declare a filter that names a trigger ({\"Repository\": \"owner/repo\", \"Branch\": \"main\", \"Trigger\": \"web\"}) and run the agent with --trigger web --webhook-secret-file FILE".into(),
        ));
    }
    let secrets = match &args.webhook_secret_file {
        None => None,
        Some(path) => Some(read_secrets(path)?),
    };
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    std::fs::create_dir_all(&state_dir).map_err(|e| {
        AgentError::Usage(format!(
            "cannot create the state dir {}: {e}",
            state_dir.display()
        ))
    })?;
    let metrics = Arc::new(AgentMetrics::default());
    let runner = Runner::new(sdk, &args).await;
    if let Some(addr) = args.metrics_listen {
        let m = metrics.clone();
        crate::daemon::serve_metrics(addr, move || {
            let m = m.clone();
            async move { m.text() }
        })
        .await?;
    }
    let stop = stop_on_signals();
    let Some(name) = args.trigger.clone() else {
        return Err(AgentError::Usage(
            "--trigger NAME is needed: the trigger this agent follows".into(),
        ));
    };
    trigger::check_name("trigger", &name).map_err(|e| AgentError::Usage(e.to_string()))?;
    let agent = Agent {
        store: S3Triggers::new(spigot_aws::s3_client(sdk), bucket),
        state_path: state_dir.join(format!("{name}.json")),
        trigger: name,
        id,
        script,
        runner,
        metrics,
        receipt_tries: args.receipt_tries,
        pushes: push::PushCheck {
            secrets,
            max_age: args.max_push_age,
        },
    };
    let failed = agent.follow(&args, &stop).await?;
    if args.once && failed > 0 {
        return Err(AgentError::Failed(anyhow::anyhow!(
            "{failed} of the requests handled failed (see `spigot trigger receipts {}`)",
            args.trigger.as_deref().unwrap_or_default()
        )));
    }
    Ok(())
}

impl Agent {
    /// Polls and handles requests until stopped (or, with `--once`, until none is waiting);
    /// the number of requests that failed.
    async fn follow(&self, args: &AgentArgs, stop: &AtomicBool) -> Result<u64, AgentError> {
        let mut state = self.start().await?;
        eprintln!(
            "spigot agent {}: following trigger {} in s3://{} (last handled: {}), script {} ({} steps)",
            self.id,
            self.trigger,
            self.store.bucket(),
            state.last_sequence,
            self.script.path,
            self.script.steps.len()
        );
        let head_key = Keys(&self.trigger).head();
        let mut etag: Option<String> = None;
        let mut polls: u64 = 0;
        let mut failed = 0;
        let mut seen_at = SystemClock.now_ms();
        while !stop.load(Ordering::SeqCst) {
            self.metrics.polls.fetch_add(1, Ordering::Relaxed);
            let changed = match self.store.read(&head_key, etag.as_deref()).await {
                Ok(Read::Found { etag: tag, .. }) => {
                    etag = Some(tag);
                    true
                }
                Ok(Read::Unchanged) | Ok(Read::Missing) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the trigger; retrying");
                    false
                }
            };
            if changed || polls.is_multiple_of(WALK_EVERY) {
                failed += self.handle_waiting(&mut state, stop).await?;
            }
            polls += 1;
            if args.once {
                break;
            }
            let now = SystemClock.now_ms();
            if now.saturating_sub(seen_at) > SEEN_EVERY_MS {
                seen_at = now;
                if let Err(e) = trigger::seen(&self.store, &self.trigger, &self.id, now).await {
                    tracing::warn!(error = %e, "cannot note that this agent follows the trigger");
                }
            }
            pause(stop, args.interval).await;
        }
        Ok(failed)
    }

    /// Reads the state (a new agent starts at the newest request) and finishes a run cut short.
    async fn start(&self) -> Result<State, AgentError> {
        let now = SystemClock.now_ms();
        trigger::seen(&self.store, &self.trigger, &self.id, now)
            .await
            .map_err(|e| AgentError::Failed(e.into()))?;
        let mut state = match State::load(&self.state_path)? {
            Some(s) => s,
            None => {
                // New here: the newest request is the one to deploy; older ones are history.
                let newest = trigger::head(&self.store, &self.trigger)
                    .await
                    .map_err(|e| AgentError::Failed(e.into()))?
                    .map_or(0, |(h, _)| h.sequence);
                let state = State {
                    last_sequence: newest.saturating_sub(1),
                    ..State::default()
                };
                state.save(&self.state_path)?;
                state
            }
        };
        self.metrics
            .sequence
            .store(state.last_sequence, Ordering::Relaxed);
        if let Some(running) = state.running {
            self.resume(&mut state, running).await?;
        }
        Ok(state)
    }

    /// A run of `running` was cut short (the agent stopped mid-script): run it
    /// again, or, after [`MAX_ATTEMPTS`], record it failed; never skip it silently.
    /// Runs the script for `request`, or records why it was skipped or
    /// refused, in `receipt`.
    async fn act(
        &self,
        state: &mut State,
        request: &Request,
        attempt: u32,
        verdict: push::Verdict,
        receipt: &mut Receipt,
    ) {
        let (seq, trigger) = (request.sequence, &self.trigger);
        match verdict {
            push::Verdict::Run { deployed, env } => {
                eprintln!(
                    "request {seq} of {trigger} (by {}): running {}",
                    request.by, self.script.path
                );
                let mut all = self.environment(request, attempt);
                all.extend(env);
                let outcome = self.runner.run(&self.script, &all).await;
                finish(receipt, outcome);
                keep_output(receipt, &self.script);
                if request.push.is_some() {
                    self.metrics.pushes.fetch_add(1, Ordering::Relaxed);
                }
                if let (Status::Done, Some((branch, pushed))) = (receipt.status, deployed) {
                    state.deployed.insert(branch, pushed);
                }
            }
            push::Verdict::Skip(why) => {
                eprintln!("request {seq} of {trigger}: skipped: {why}");
                finish(receipt, Outcome::default());
                receipt.status = Status::Skipped;
                receipt.note = Some(format!("skipped, nothing ran: {why}"));
                self.metrics.skipped.fetch_add(1, Ordering::Relaxed);
            }
            push::Verdict::Refuse(why) => {
                // Nothing runs: the data is not what the script declared, or the push is not GitHub's.
                eprintln!("request {seq} of {trigger}: refused: {why}");
                finish(receipt, Outcome::default());
                receipt.status = Status::Failed;
                receipt.note = Some(format!("refused the request, nothing ran: {why}"));
            }
        }
    }

    /// The request a previous run was interrupted in; `None` (and handled)
    /// when it is unreadable or gone.
    async fn interrupted(
        &self,
        state: &mut State,
        sequence: u64,
    ) -> Result<Option<Request>, AgentError> {
        let fetched = trigger::request(&self.store, &self.trigger, sequence)
            .await
            .map_err(|e| AgentError::Failed(e.into()))?;
        match fetched {
            Some(Ok(request)) => Ok(Some(request)),
            Some(Err(why)) => {
                state.running = None;
                self.unreadable(state, sequence, &why).await?;
                Ok(None)
            }
            None => {
                state.running = None;
                state.save(&self.state_path)?;
                Ok(None)
            }
        }
    }

    /// A request interrupted `MAX_ATTEMPTS` times is recorded failed, not run again.
    async fn give_up(
        &self,
        state: &mut State,
        request: &Request,
        attempt: u32,
        note: String,
    ) -> Result<(), AgentError> {
        let mut receipt = self.receipt(request, attempt, Some(note.clone()));
        receipt.status = Status::Failed;
        receipt.note = Some(format!(
            "{note}; not run again after {MAX_ATTEMPTS} attempts"
        ));
        receipt.finished_at = Some(receipt.started_at.clone());
        self.put(&receipt).await?;
        self.metrics.record(&receipt);
        eprintln!(
            "request {} of {}: interrupted {attempt} times; recorded failed",
            request.sequence, self.trigger
        );
        state.last_sequence = request.sequence;
        state.running = None;
        state.save(&self.state_path)?;
        Ok(())
    }

    /// Handles the requests waiting after the last one handled, in order;
    /// how many failed.
    async fn handle_waiting(
        &self,
        state: &mut State,
        stop: &AtomicBool,
    ) -> Result<u64, AgentError> {
        let requests =
            match trigger::requests_after(&self.store, &self.trigger, state.last_sequence, BATCH)
                .await
            {
                Ok(requests) => requests,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read requests; retrying");
                    return Ok(0);
                }
            };
        let mut failed = 0;
        for (sequence, fetched) in requests {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let receipt = match fetched {
                Ok(request) => self.handle(state, &request, None).await?,
                Err(why) => self.unreadable(state, sequence, &why).await?,
            };
            failed += u64::from(receipt.status == Status::Failed);
        }
        Ok(failed)
    }

    async fn resume(&self, state: &mut State, running: Running) -> Result<(), AgentError> {
        if let Some(done) = state.finished.clone()
            && done.sequence == running.sequence
        {
            // The run ended; only its receipt was not written: write it, run nothing.
            eprintln!(
                "request {} of {}: writing the receipt a previous run could not",
                done.sequence, self.trigger
            );
            self.put(&done).await?;
            state.last_sequence = done.sequence;
            state.running = None;
            state.finished = None;
            state.save(&self.state_path)?;
            return Ok(());
        }
        let mine = trigger::receipt(&self.store, &self.trigger, running.sequence, &self.id)
            .await
            .map_err(|e| AgentError::Failed(e.into()))?;
        if let Some(r) = &mine
            && r.status.is_final()
            && r.attempt == running.attempt
        {
            // The receipt was written; only the state was not.
            state.last_sequence = running.sequence;
            state.running = None;
            state.save(&self.state_path)?;
            return Ok(());
        }
        let Some(request) = self.interrupted(state, running.sequence).await? else {
            return Ok(());
        };
        let note = format!(
            "attempt {} was interrupted (the agent stopped mid-script{})",
            running.attempt,
            mine.as_ref()
                .and_then(|r| r.steps.last())
                .map(|s| format!(" after step {}", s.index))
                .unwrap_or_default()
        );
        if running.attempt >= MAX_ATTEMPTS {
            return self.give_up(state, &request, running.attempt, note).await;
        }
        eprintln!(
            "request {} of {}: {note}; running it again",
            request.sequence, self.trigger
        );
        self.handle(state, &request, Some((running.attempt + 1, note)))
            .await
            .map(|_| ())
    }

    fn receipt(&self, request: &Request, attempt: u32, note: Option<String>) -> Receipt {
        Receipt {
            trigger: self.trigger.clone(),
            sequence: request.sequence,
            agent: self.id.clone(),
            status: Status::InProgress,
            attempt,
            started_at: spigot_core::time::format_rfc3339(SystemClock.now_ms() / 1000),
            finished_at: None,
            duration_ms: None,
            script: ScriptRef {
                path: self.script.path.clone(),
                sha256: self.script.sha256.clone(),
            },
            steps: Vec::new(),
            failed_step: None,
            output_tail: Vec::new(),
            note,
        }
    }

    /// Writes `receipt`, trying again for a while when the bucket does not answer.
    async fn put(&self, receipt: &Receipt) -> Result<(), AgentError> {
        let mut wait = Duration::from_millis(500);
        for attempt in 1.. {
            match trigger::put_receipt(&self.store, receipt, SystemClock.now_ms()).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < self.receipt_tries => {
                    tracing::warn!(error = %e, "cannot write the receipt; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(15));
                }
                Err(e) => return Err(AgentError::Failed(e.into())),
            }
        }
        unreachable!("the loop returns")
    }

    /// Runs the script for `request`: state, `in_progress`, steps, final receipt, state.
    async fn handle(
        &self,
        state: &mut State,
        request: &Request,
        rerun: Option<(u32, String)>,
    ) -> Result<Receipt, AgentError> {
        let (attempt, note) = rerun.map_or((1, None), |(a, n)| (a, Some(n)));
        state.running = Some(Running {
            sequence: request.sequence,
            attempt,
        });
        state.save(&self.state_path)?;
        let mut receipt = self.receipt(request, attempt, note);
        self.put(&receipt).await?;
        let verdict = self.verdict(state, request).await;
        self.act(state, request, attempt, verdict, &mut receipt)
            .await;
        state.finished = Some(receipt.clone());
        state.save(&self.state_path)?;
        self.put(&receipt).await?;
        self.metrics.record(&receipt);
        self.metrics
            .sequence
            .store(request.sequence, Ordering::Relaxed);
        eprintln!(
            "request {} of {}: {} in {} ms",
            request.sequence,
            self.trigger,
            receipt.status.as_str(),
            receipt.duration_ms.unwrap_or(0)
        );
        state.last_sequence = request.sequence;
        state.running = None;
        state.finished = None;
        state.save(&self.state_path)?;
        Ok(receipt)
    }

    /// Request `sequence` is there but cannot be read (corrupt, too large):
    /// a failed receipt says why, and the agent goes on to the next.
    async fn unreadable(
        &self,
        state: &mut State,
        sequence: u64,
        why: &str,
    ) -> Result<Receipt, AgentError> {
        eprintln!(
            "request {sequence} of {}: unreadable, skipped: {why}",
            self.trigger
        );
        let placeholder = Request {
            trigger: self.trigger.clone(),
            sequence,
            by: String::new(),
            data: Default::default(),
            raised_at: String::new(),
            raised_at_ms: 0,
            token: String::new(),
            push: None,
        };
        let mut receipt = self.receipt(&placeholder, 1, None);
        receipt.status = Status::Failed;
        receipt.finished_at = Some(receipt.started_at.clone());
        receipt.note = Some(format!("the request could not be read, nothing ran: {why}"));
        self.put(&receipt).await?;
        self.metrics.record(&receipt);
        state.last_sequence = sequence;
        state.save(&self.state_path)?;
        Ok(receipt)
    }

    /// Whether to run `request`: its data checked against the script's
    /// `params:`, and a push request's push verified and judged.
    async fn verdict(&self, state: &State, request: &Request) -> push::Verdict {
        if let Err(e) = self.script.params.check(&request.data) {
            return push::Verdict::Refuse(e.to_string());
        }
        match &request.push {
            None => push::Verdict::Run {
                deployed: None,
                env: Vec::new(),
            },
            Some(p) => {
                let now = SystemClock.now_ms() / 1000;
                self.pushes
                    .judge(&self.store, request, p, &state.deployed, now)
                    .await
            }
        }
    }

    /// The steps' whole environment: the base, what the script passes
    /// through, the request's (checked) data, and what the agent says about it.
    fn environment(&self, request: &Request, attempt: u32) -> Vec<(String, String)> {
        let mut env = base_environment(&self.script, &self.runner.shell);
        env.extend(request.data.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend([
            ("SPIGOT_TRIGGER".into(), self.trigger.clone()),
            ("SPIGOT_SEQUENCE".into(), request.sequence.to_string()),
            ("SPIGOT_BY".into(), request.by.clone()),
            ("SPIGOT_RAISED_AT".into(), request.raised_at.clone()),
            ("SPIGOT_AGENT".into(), self.id.clone()),
            ("SPIGOT_ATTEMPT".into(), attempt.to_string()),
        ]);
        env
    }
}

/// The webhook secrets in `path` (comma-separated, like WEBHOOK_SECRET).
fn read_secrets(path: &Path) -> Result<spigot_core::signature::Secrets, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AgentError::Usage(format!(
            "cannot read the webhook secret file {}: {e}",
            path.display()
        ))
    })?;
    spigot_core::signature::Secrets::parse(text.trim())
        .map_err(|e| AgentError::Usage(format!("the webhook secret file {}: {e}", path.display())))
}

/// The account of the agent's credentials (STS GetCallerIdentity, which
/// needs no permission), for S3's ExpectedBucketOwner; `None` if unknown.
async fn own_account(sdk: &spigot_aws::aws_config::SdkConfig) -> Option<String> {
    let sts = aws_sdk_sts::Client::new(sdk);
    let asked = tokio::time::timeout(Duration::from_secs(5), sts.get_caller_identity().send());
    match asked.await {
        Ok(Ok(id)) => id.account().map(str::to_string),
        _ => {
            tracing::warn!(
                "cannot read the agent's account: download_s3 sets no ExpectedBucketOwner (give --artifact-owner)"
            );
            None
        }
    }
}

/// What every step starts from, none of it from a request: PATH, HOME,
/// LANG, USER and LOGNAME as the agent has them (PATH and LANG defaulted),
/// SHELL (the agent's `--shell`), and the variables the script lists under
/// `env_passthrough:`. Nothing else of the agent's environment reaches a step.
pub fn base_environment(script: &Script, shell: &str) -> Vec<(String, String)> {
    let own = |name: &str| std::env::var(name).ok();
    let mut env = vec![
        (
            "PATH".to_string(),
            own("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        (
            "LANG".into(),
            own("LANG").unwrap_or_else(|| "C.UTF-8".into()),
        ),
        ("SHELL".into(), shell.to_string()),
    ];
    for name in ["HOME", "USER", "LOGNAME"]
        .into_iter()
        .map(str::to_string)
        .chain(script.env_passthrough.iter().cloned())
    {
        if let Some(value) = own(&name) {
            env.push((name, value));
        }
    }
    env
}

/// A receipt keeps the output tail only when the script asks (`record_output:
/// true`), each line with obvious secrets redacted.
pub fn keep_output(receipt: &mut Receipt, script: &Script) {
    if script.record_output {
        for line in &mut receipt.output_tail {
            *line = spigot_core::trigger::redact(line);
        }
    } else {
        receipt.output_tail.clear();
    }
}

/// Fills in the end of `receipt` from what the run did.
pub fn finish(receipt: &mut Receipt, outcome: Outcome) {
    receipt.status = if outcome.failed.is_some() {
        Status::Failed
    } else {
        Status::Done
    };
    receipt.finished_at = Some(spigot_core::time::format_rfc3339(
        SystemClock.now_ms() / 1000,
    ));
    receipt.duration_ms = Some(outcome.duration_ms);
    receipt.steps = outcome.steps;
    receipt.failed_step = outcome.failed;
    receipt.output_tail = outcome.tail;
}
