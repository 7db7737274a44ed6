//! The run loop: receive from the buffer, deliver in order per group and
//! concurrently across groups, delete what was delivered, back off, dead-letter.
//! The drainer Lambda runs it until the buffer is empty; `spigot relay` runs it
//! until stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;
use spigot_core::archive::{self, What};
use spigot_core::delivery::Delivery;
use spigot_core::envelope::Envelope;
use spigot_core::ports::{
    Bucket, Buffer, Clock, DeadLetter, Received, SystemClock, Target, Timeline,
};
use spigot_core::webhook::Hook;

use crate::attempts;
use crate::config::EngineConfig;
use crate::gate::Skipped;
use crate::lease::{Lease, beat};
use crate::policy::{Breaker, Pacer};
use spigot_core::claim::{DENIED_READS, OpenError, dead_letter, open, poison_letter};

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// The buffer had nothing more to give.
    Empty,
    /// Too little time was left before the deadline.
    Deadline,
    /// Too many consecutive retryable failures: the target is struggling.
    Breaker,
    /// Asked to stop (signal, or the caller's cancel flag).
    Cancelled,
    /// Receiving from the buffer failed.
    BufferError,
}

/// Counters of a run (shared, so a relay can expose them while it runs).
#[derive(Debug, Default)]
pub struct Counters {
    /// Delivered and deleted.
    pub delivered: AtomicU64,
    /// Retryable failures, backed off through the visibility timeout.
    pub retried: AtomicU64,
    /// Sent to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Received but not attempted, made visible again.
    pub released: AtomicU64,
    /// Held back behind a failed message of their group.
    pub held: AtomicU64,
    /// Delivered, but the delete failed (they will be delivered again).
    pub undeleted: AtomicU64,
    /// Reads S3 refused (403): an attempt count or a claim-check body.
    pub denied: AtomicU64,
    /// Not attempted because their group's lease was lost (another consumer may hold it).
    pub lapsed: AtomicU64,
    /// Pushes skipped because the next hook of their repository was a push to the same branch.
    pub coalesced: AtomicU64,
    /// Milliseconds since the epoch of the last delivery.
    pub last_delivery_ms: AtomicU64,
    /// The shortest backoff given this run, in seconds, plus one (0: none).
    pub next_retry: AtomicU64,
    /// Delivery attempts by the target's answer: 2xx, 4xx, 5xx (and others), none.
    pub answers: Answers,
    /// Replays (`spigot replay`) delivered.
    pub replays: AtomicU64,
}

/// Delivery attempts by the target's answer (the dashboard's status classes).
#[derive(Debug, Default)]
pub struct Answers {
    /// 2xx.
    pub ok: AtomicU64,
    /// 4xx (429 included).
    pub client_error: AtomicU64,
    /// 5xx, and anything else that is not 2xx or 4xx.
    pub server_error: AtomicU64,
    /// No answer: a timeout or a refused connection.
    pub none: AtomicU64,
}

impl Answers {
    fn count(&self, status: Option<u16>) {
        let class = match status {
            Some(200..=299) => &self.ok,
            Some(400..=499) => &self.client_error,
            Some(_) => &self.server_error,
            None => &self.none,
        };
        class.fetch_add(1, Ordering::Relaxed);
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Delivered and deleted.
    pub delivered: u64,
    /// Retryable failures.
    pub retried: u64,
    /// Sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Released unattempted.
    pub released: u64,
    /// Held back behind a failure in their group.
    pub held: u64,
    /// Delivered, but could not be deleted (they will arrive again).
    pub undeleted: u64,
    /// Reads S3 refused (403): the role lacks a permission (metric `StoreDenied`).
    #[serde(default)]
    pub denied: u64,
    /// Not attempted because their group's lease was lost.
    #[serde(default)]
    pub lapsed: u64,
    /// Pushes skipped for a newer push to the same branch (`DRAIN_COALESCE=push`), deleted unattempted.
    #[serde(default)]
    pub coalesced: u64,
    /// Why it stopped (`None`: skipped before receiving).
    pub stop: Option<Stop>,
    /// Why it did not run, when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skipped>,
    /// The state the run left the spigot in, when it changed it (DRAINING -> ON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switched_to: Option<&'static str>,
    /// Seconds until the first hook backed off in this run is attempted again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry_secs: Option<u64>,
    /// Attempts the target answered 2xx, 4xx, 5xx (or otherwise), and not at all.
    #[serde(default)]
    pub answers: [u64; 4],
    /// Replays (`spigot replay`) delivered.
    #[serde(default)]
    pub replays: u64,
}

impl Summary {
    /// A run that did not start.
    pub fn skipped(why: Skipped) -> Self {
        Self {
            delivered: 0,
            retried: 0,
            dead_lettered: 0,
            released: 0,
            held: 0,
            undeleted: 0,
            denied: 0,
            lapsed: 0,
            coalesced: 0,
            stop: None,
            skipped: Some(why),
            switched_to: None,
            next_retry_secs: None,
            answers: [0; 4],
            replays: 0,
        }
    }
}

impl Counters {
    /// The counters as a summary.
    pub fn summary(&self, stop: Option<Stop>) -> Summary {
        Summary {
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
            undeleted: self.undeleted.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            lapsed: self.lapsed.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            stop,
            skipped: None,
            switched_to: None,
            next_retry_secs: match self.next_retry.load(Ordering::Relaxed) {
                0 => None,
                n => Some(n - 1),
            },
            answers: [
                self.answers.ok.load(Ordering::Relaxed),
                self.answers.client_error.load(Ordering::Relaxed),
                self.answers.server_error.load(Ordering::Relaxed),
                self.answers.none.load(Ordering::Relaxed),
            ],
            replays: self.replays.load(Ordering::Relaxed),
        }
    }
}

/// The engine and its ports.
pub struct Engine<B, P, T> {
    /// The buffer.
    pub buffer: B,
    /// Claim-check payloads (`None`: a claim-checked envelope cannot be delivered and waits).
    pub payloads: Option<P>,
    /// The target.
    pub target: T,
    /// Settings.
    pub config: EngineConfig,
    /// Time of deliveries (the relay's last-delivery gauge).
    pub clock: Arc<dyn Clock>,
    /// Where each attempt, delivery and dead letter is recorded (off unless set).
    pub timeline: Timeline,
    /// Who delivers, as the timeline names it (`drainer`, `relay`).
    pub by: &'static str,
}

impl<B, P, T> Engine<B, P, T> {
    /// An engine on these ports, on the system clock.
    pub fn new(buffer: B, payloads: Option<P>, target: T, config: EngineConfig) -> Self {
        Self {
            buffer,
            payloads,
            target,
            config,
            clock: Arc::new(SystemClock),
            timeline: Timeline::default(),
            by: "drainer",
        }
    }

    /// The engine, recording its steps on `timeline` as `by`.
    pub fn with_timeline(mut self, timeline: Timeline, by: &'static str) -> Self {
        self.timeline = timeline;
        self.by = by;
        self
    }

    /// Notes a step of the hook in `env`.
    fn note(&self, env: &Envelope, what: What) {
        let repository = env.repository.as_deref().unwrap_or("");
        let step = archive::Step::of(
            self.clock.now_ms(),
            &env.delivery,
            repository,
            &env.event,
            what,
        );
        self.timeline.note(step);
    }

    /// Writes the steps noted so far (one record for the batch).
    async fn record(&self) {
        if let Err(e) = self.timeline.flush().await {
            tracing::warn!(error = %e, "cannot record this batch's steps on the timeline");
        }
    }
}

struct Run<'a> {
    counters: &'a Counters,
    /// One ReceiveMessage in flight at a time. FIFO hands each call other groups
    /// anyway; serialising keeps that true on emulators whose receive is not
    /// atomic across threads (moto), and costs little next to delivery time.
    receiving: tokio::sync::Mutex<()>,
    /// Workers delivering a batch right now.
    busy: std::sync::atomic::AtomicUsize,
    /// Batches finished so far (a batch finishing during a receive unlocks groups it could not see).
    finished: AtomicU64,
    deadline: Option<Instant>,
    cancel: &'a AtomicBool,
    breaker: Breaker,
    pacer: Pacer,
    /// Body bytes in flight, in KiB permits.
    bodies: tokio::sync::Semaphore,
    stop: std::sync::Mutex<Option<Stop>>,
    /// The queue's visibility timeout, when leases are kept by a heartbeat.
    lease: Option<Duration>,
}

impl Run<'_> {
    fn stopping(&self, stop_before: Duration) -> Option<Stop> {
        if let Some(s) = *self.stop.lock().unwrap() {
            return Some(s);
        }
        if self.cancel.load(Ordering::SeqCst) {
            return Some(Stop::Cancelled);
        }
        if self
            .deadline
            .is_some_and(|d| Instant::now() + stop_before >= d)
        {
            return Some(Stop::Deadline);
        }
        None
    }

    fn halt(&self, stop: Stop) {
        let mut s = self.stop.lock().unwrap();
        if s.is_none() {
            *s = Some(stop);
        }
    }
}

impl<B: Buffer, P: Bucket, T: Target> Engine<B, P, T> {
    /// Runs until the buffer is empty (or forever, without `until_empty`), the
    /// deadline nears, the breaker trips, or `cancel` is set.
    pub async fn run(
        &self,
        deadline: Option<Instant>,
        cancel: &AtomicBool,
        counters: &Counters,
    ) -> Summary {
        let lease = if self.config.heartbeat {
            match self.buffer.visibility_timeout().await {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the buffer's visibility timeout, which the heartbeat is derived from");
                    return counters.summary(Some(Stop::BufferError));
                }
            }
        } else {
            None
        };
        let run = Run {
            counters,
            receiving: tokio::sync::Mutex::new(()),
            busy: std::sync::atomic::AtomicUsize::new(0),
            finished: AtomicU64::new(0),
            deadline,
            cancel,
            breaker: Breaker::default(),
            pacer: Pacer::new(self.config.rate),
            bodies: tokio::sync::Semaphore::new(self.budget_kib() as usize),
            stop: std::sync::Mutex::new(None),
            lease,
        };
        let workers = (0..self.config.concurrency.max(1)).map(|_| self.worker(&run));
        let stops = join_all(workers).await;
        let stop = run
            .stop
            .lock()
            .unwrap()
            .or_else(|| stops.into_iter().flatten().next());
        counters.summary(stop)
    }

    async fn worker(&self, run: &Run<'_>) -> Option<Stop> {
        loop {
            if let Some(s) = run.stopping(self.config.stop_before) {
                return Some(s);
            }
            let received = {
                let _turn = run.receiving.lock().await;
                // Another worker may have found the end while this one waited its turn.
                if let Some(s) = run.stopping(self.config.stop_before) {
                    return Some(s);
                }
                let finished_before = run.finished.load(Ordering::SeqCst);
                let asked = Instant::now();
                let r = self
                    .buffer
                    .receive(10, self.config.wait_seconds)
                    .await
                    .map(|b| (b, asked));
                // Counted busy before the next receive can look.
                if r.as_ref().is_ok_and(|(b, _)| !b.is_empty()) {
                    run.busy.fetch_add(1, Ordering::SeqCst);
                }
                (r, finished_before != run.finished.load(Ordering::SeqCst))
            };
            let (received, unlocked_meanwhile) = received;
            let (batch, asked) = match received {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot receive from the buffer");
                    run.halt(Stop::BufferError);
                    return Some(Stop::BufferError);
                }
            };
            if batch.is_empty() {
                if self.config.until_empty {
                    // Nobody is delivering, so nothing is locked behind a batch in
                    // flight: the buffer is drained, and the other workers need not
                    // each wait out a long poll to learn it.
                    if unlocked_meanwhile {
                        continue; // look again: groups were locked when this receive began
                    }
                    if run.busy.load(Ordering::SeqCst) == 0 {
                        run.halt(Stop::Empty);
                    }
                    return Some(Stop::Empty);
                }
                continue;
            }
            self.batch(run, batch, asked).await;
            self.record().await;
            run.finished.fetch_add(1, Ordering::SeqCst);
            run.busy.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Delivers one received batch (asked for at `asked`): groups
    /// concurrently, each group in order, each message deleted as soon as it
    /// is delivered. With a heartbeat (the relay), every received message not
    /// yet deleted, released or backed off is kept hidden while the batch
    /// works, however slow the target: none comes back to be delivered twice,
    /// and a group whose lease is lost is delivered no further.
    async fn batch(&self, run: &Run<'_>, batch: Vec<Received>, asked: Instant) {
        let mut groups: Vec<Vec<Received>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for m in batch {
            match index.get(&m.group) {
                Some(&i) => groups[i].push(m),
                None => {
                    index.insert(m.group.clone(), groups.len());
                    groups.push(vec![m]);
                }
            }
        }
        let lease = Lease::new(groups.iter().flatten(), asked, run.lease);
        let work = join_all(groups.into_iter().map(|msgs| self.group(run, msgs, &lease)));
        match run.lease {
            None => {
                work.await;
            }
            Some(timeout) => {
                tokio::pin!(work);
                loop {
                    tokio::select! {
                        _ = &mut work => break,
                        _ = tokio::time::sleep(beat(timeout)) => lease.renew(&self.buffer).await,
                    }
                }
            }
        }
    }

    /// Deletes delivered messages, then their claim-check objects.
    async fn finish(&self, run: &Run<'_>, receipts: Vec<String>, claims: Vec<String>) {
        if receipts.is_empty() {
            return;
        }
        if let Err(e) = self.buffer.delete(&receipts).await {
            // They come back after the visibility timeout and are delivered again (at-least-once).
            run.counters
                .undeleted
                .fetch_add(receipts.len() as u64, Ordering::Relaxed);
            tracing::error!(error = %e, count = receipts.len(), "cannot delete delivered messages");
            return;
        }
        if let Some(store) = &self.payloads {
            for key in claims {
                if let Err(e) = store.delete(&key).await {
                    tracing::warn!(%key, error = %e, "cannot delete a claim-check payload (the bucket lifecycle will)");
                }
            }
        }
    }

    /// One group's messages, in order, each deleted once delivered or
    /// dead-lettered (a kill then repeats at most the one in hand).
    async fn group(&self, run: &Run<'_>, msgs: Vec<Received>, lease: &Lease) {
        let mut rest = msgs.into_iter().peekable();
        while let Some(m) = rest.next() {
            if self.leave_group(run, &m, &mut rest, lease).await {
                break;
            }
            let prior = attempts::prior(self.payloads.as_ref(), &m).await;
            if prior.denied {
                run.counters.denied.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(reason) = self.set_aside(&m, prior.aside.as_deref()) {
                match self
                    .put_aside(run, &m, reason, prior, &mut rest, lease)
                    .await
                {
                    Flow::Next => continue,
                    Flow::Stop => break,
                }
            }
            let prior = prior.attempts;
            if self.coalesce(run, &m, prior, rest.peek(), lease).await {
                continue;
            }
            // A rate-limit slot past the deadline is not waited for: release instead.
            let latest = run.deadline.and_then(|d| {
                tokio::time::Instant::from_std(d).checked_sub(self.config.stop_before)
            });
            if !run.pacer.wait_until(latest).await {
                self.release_rest(run, m, &mut rest, lease).await;
                break;
            }
            let step = {
                // Decoded once: its size bounds the bytes in flight, then it is delivered.
                let env = Envelope::decode(&m.body);
                let _bytes = self.hold_body(run, &m, env.as_ref().ok()).await;
                self.open_and_deliver(&m, env, prior, run.counters).await
            };
            if prior > 0 && !matches!(step, Step::Retry { .. }) {
                attempts::clear(self.payloads.as_ref(), &m).await;
            }
            if let Flow::Stop = self.settle(run, &m, step, prior, &mut rest, lease).await {
                break;
            }
        }
    }

    /// True when the group is to be left now: its lease is lost (another
    /// consumer may have it) or the run is stopping (what is left is released).
    async fn leave_group(
        &self,
        run: &Run<'_>,
        m: &Received,
        rest: &mut Rest,
        lease: &Lease,
    ) -> bool {
        if !lease.holds(&m.group) {
            let left: Vec<Received> = std::iter::once(m.clone()).chain(rest.by_ref()).collect();
            run.counters
                .lapsed
                .fetch_add(left.len() as u64, Ordering::Relaxed);
            lease.forget(left.iter());
            return true;
        }
        if run.stopping(self.config.stop_before).is_some() {
            self.release_rest(run, m.clone(), rest, lease).await;
            return true;
        }
        false
    }

    /// `m` and the rest of its group back to the queue, unattempted.
    async fn release_rest(&self, run: &Run<'_>, m: Received, rest: &mut Rest, lease: &Lease) {
        let left: Vec<Received> = std::iter::once(m).chain(rest.by_ref()).collect();
        lease.forget(left.iter());
        self.release(run, left.into_iter()).await;
    }

    /// Moved aside, or about to outlive the buffer's retention: to the DLQ
    /// without an attempt, and its group goes on; if the letter cannot be
    /// sent, `m` backs off and the group waits behind it.
    async fn put_aside(
        &self,
        run: &Run<'_>,
        m: &Received,
        reason: String,
        prior: attempts::Prior,
        rest: &mut Rest,
        lease: &Lease,
    ) -> Flow {
        let step = self.dead_on_arrival(m, reason).await;
        if matches!(step, Step::DeadLettered) {
            attempts::clear(self.payloads.as_ref(), m).await;
            run.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            lease.forget(std::iter::once(m));
            self.finish(run, vec![m.receipt.clone()], Vec::new()).await;
            return Flow::Next;
        }
        let held: Vec<Received> = rest.by_ref().collect();
        lease.forget(std::iter::once(m).chain(held.iter()));
        let failure = Failure::kept("cannot dead-letter", prior.aside);
        self.back_off(run, m, prior.attempts, failure, held).await;
        Flow::Stop
    }

    /// True when `m` was coalesced: a newer push to the same branch follows,
    /// so it is deleted unattempted.
    async fn coalesce(
        &self,
        run: &Run<'_>,
        m: &Received,
        prior: u32,
        next: Option<&Received>,
        lease: &Lease,
    ) -> bool {
        let Some(newer) = self.superseded(m, next) else {
            return false;
        };
        let (delivery, repository) = Envelope::ids(&m.body);
        tracing::info!(%delivery, %repository, message = %m.message_id, superseded_by = %newer, "coalesced: a newer push to the same branch follows");
        run.counters.coalesced.fetch_add(1, Ordering::Relaxed);
        if prior > 0 {
            attempts::clear(self.payloads.as_ref(), m).await;
        }
        lease.forget(std::iter::once(m));
        self.finish(run, vec![m.receipt.clone()], Vec::new()).await;
        true
    }

    /// What follows an attempt: delete a delivered or dead-lettered hook, or
    /// back off and hold the rest of the group behind it.
    async fn settle(
        &self,
        run: &Run<'_>,
        m: &Received,
        step: Step,
        prior: u32,
        rest: &mut Rest,
        lease: &Lease,
    ) -> Flow {
        match step {
            Step::Delivered(claim) => {
                run.breaker.success();
                run.counters.delivered.fetch_add(1, Ordering::Relaxed);
                run.counters
                    .last_delivery_ms
                    .store(self.clock.now_ms(), Ordering::Relaxed);
                // Forgotten first: a heartbeat must not take a message
                // deleted under it for a lost lease.
                lease.forget(std::iter::once(m));
                self.finish(run, vec![m.receipt.clone()], claim.into_iter().collect())
                    .await;
                Flow::Next
            }
            Step::DeadLettered => {
                run.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                lease.forget(std::iter::once(m));
                self.finish(run, vec![m.receipt.clone()], Vec::new()).await;
                Flow::Next
            }
            Step::Retry {
                reason,
                retry_after,
            } => {
                let held: Vec<Received> = rest.by_ref().collect();
                lease.forget(std::iter::once(m).chain(held.iter()));
                let failure = Failure {
                    reason,
                    retry_after,
                    aside: None,
                };
                self.back_off(run, m, prior + 1, failure, held).await;
                Flow::Stop
            }
        }
    }

    fn budget_kib(&self) -> u32 {
        (self.config.body_budget / 1024).clamp(1, u32::MAX as usize) as u32
    }

    /// Waits until `m`'s body fits in the run's body budget; the permit frees it.
    async fn hold_body<'r>(
        &self,
        run: &'r Run<'_>,
        m: &Received,
        env: Option<&Envelope>,
    ) -> Option<tokio::sync::SemaphorePermit<'r>> {
        let bytes = env.map_or(m.body.len() as u64, Envelope::body_size);
        let kib = (bytes / 1024 + 1).min(u64::from(self.budget_kib())) as u32;
        run.bodies.acquire_many(kib).await.ok()
    }

    /// A retryable failure: hide `m` for its backoff, release the rest of its
    /// group unattempted (FIFO keeps them behind `m`, which comes back first),
    /// and count towards the breaker.
    async fn back_off(
        &self,
        run: &Run<'_>,
        m: &Received,
        attempt: u32,
        failure: Failure,
        held: Vec<Received>,
    ) {
        let Failure {
            reason,
            retry_after,
            aside,
        } = failure;
        let mut failed = attempts::Record::of(m, "delivery", attempt, &reason, self.clock.now_ms());
        failed.aside = aside;
        attempts::record(self.payloads.as_ref(), m, &failed).await;
        let wait = self
            .config
            .policy
            .backoff(attempt, &m.message_id, retry_after);
        tracing::warn!(delivery = %failed.delivery, repository = %failed.repository, message = %m.message_id, %reason, attempt, wait, "retryable failure; backing off");
        run.counters.retried.fetch_add(1, Ordering::Relaxed);
        let soonest = u64::from(wait.max(0).unsigned_abs()).saturating_add(1);
        let _ = run
            .counters
            .next_retry
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n == 0 || soonest < n).then_some(soonest)
            });
        let _ = self.buffer.set_visibility(&m.receipt, wait).await;
        for later in held {
            run.counters.held.fetch_add(1, Ordering::Relaxed);
            let _ = self.buffer.set_visibility(&later.receipt, 0).await;
        }
        if run.breaker.failure(&self.config.policy) {
            tracing::warn!("circuit breaker open: stopping this run");
            run.halt(Stop::Breaker);
        }
    }

    async fn release(&self, run: &Run<'_>, msgs: impl Iterator<Item = Received>) {
        for m in msgs {
            run.counters.released.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.buffer.set_visibility(&m.receipt, 0).await {
                let (delivery, repository) = Envelope::ids(&m.body);
                tracing::warn!(%delivery, %repository, message = %m.message_id, error = %e, "cannot release; it returns after the visibility timeout");
            }
        }
    }

    /// One message, after `prior` failed attempts: delivered, dead-lettered, or to retry.
    async fn open_and_deliver(
        &self,
        m: &Received,
        decoded: Result<Envelope, spigot_core::envelope::EnvelopeError>,
        prior: u32,
        counters: &Counters,
    ) -> Step {
        let env = match decoded {
            Ok(e) => e,
            Err(e) => {
                return self
                    .dead_letter(&poison_letter(m, e.to_string()), &m.message_id)
                    .await;
            }
        };
        let opened = match open(&env, self.payloads.as_ref()).await {
            Ok(o) => o,
            Err(OpenError::Retry(reason)) => {
                return self.retry_or_give_up(env, prior, reason, None, None).await;
            }
            Err(OpenError::Permanent(reason)) => {
                return self.dead_envelope(env, reason, None).await;
            }
            Err(OpenError::Denied(reason)) => {
                counters.denied.fetch_add(1, Ordering::Relaxed);
                tracing::error!(delivery = %env.delivery, %reason, attempt = prior + 1, "claim-check read refused");
                if prior + 1 >= DENIED_READS {
                    let reason = format!("{reason} ({DENIED_READS} reads refused)");
                    return self.dead_envelope(env, reason, None).await;
                }
                return Step::Retry {
                    reason,
                    retry_after: None,
                };
            }
        };
        match self.attempt(&env, &opened.hook, counters).await {
            Delivery::Delivered(_) => Step::Delivered(opened.claim),
            Delivery::Retryable(f) => {
                self.retry_or_give_up(env, prior, f.reason, f.status, f.retry_after)
                    .await
            }
            Delivery::Permanent(f) => self.dead_envelope(env, f.reason, f.status).await,
        }
    }

    /// One delivery attempt of `hook` (of `env`): timed, counted by the
    /// target's answer, and noted on the timeline.
    async fn attempt(&self, env: &Envelope, hook: &Hook, counters: &Counters) -> Delivery {
        let started = Instant::now();
        let delivered = self.target.deliver(hook).await;
        let ms = started.elapsed().as_millis() as u64;
        let by = self.by.to_string();
        let what = match &delivered {
            Delivery::Delivered(status) => {
                tracing::info!(delivery = %hook.delivery, event = %hook.event, status, "delivered");
                if env.replay.is_some() {
                    counters.replays.fetch_add(1, Ordering::Relaxed);
                }
                counters.answers.count(Some(*status));
                What::Delivered {
                    by,
                    status: *status,
                    ms,
                }
            }
            Delivery::Retryable(f) | Delivery::Permanent(f) => {
                counters.answers.count(f.status);
                What::Attempt {
                    by,
                    status: f.status,
                    ms,
                    error: f.reason.clone(),
                }
            }
        };
        self.note(env, what);
        delivered
    }

    /// The delivery id of the push that makes `m` redundant, when coalescing
    /// is on and `next` (the next hook of its repository) is a push to the
    /// same branch. A claim-checked body is never coalesced (nor deleted here:
    /// its object goes with the bucket's lifecycle).
    fn superseded(&self, m: &Received, next: Option<&Received>) -> Option<String> {
        if self.config.coalesce == spigot_core::coalesce::Coalesce::None {
            return None;
        }
        let earlier = Envelope::decode(&m.body).ok()?;
        let later = Envelope::decode(&next?.body).ok()?;
        spigot_core::coalesce::supersedes(self.config.coalesce, &earlier, &later)
            .then_some(later.delivery)
    }

    /// Why `m` goes to the DLQ unattempted, if it does: an operator moved it
    /// aside, or it has been in the buffer so long that the queue's retention
    /// would soon drop it (the engine dead-letters it first: nothing is lost).
    fn set_aside(&self, m: &Received, aside: Option<&str>) -> Option<String> {
        if let Some(by) = aside {
            return Some(format!("moved aside by {by} (spigot dlq aside)"));
        }
        let age_ms = self.clock.now_ms().saturating_sub(m.sent_ms);
        let max = self.config.max_age?;
        (m.sent_ms > 0 && u128::from(age_ms) > max.as_millis()).then(|| {
            format!(
                "in the buffer {} h, past the engine's limit of {} h: dead-lettered before the queue's retention drops it",
                age_ms / 3_600_000,
                max.as_secs() / 3600
            )
        })
    }

    /// `m` to the DLQ with `reason`, not attempted.
    async fn dead_on_arrival(&self, m: &Received, reason: String) -> Step {
        match Envelope::decode(&m.body) {
            Ok(env) => self.dead_envelope(env, reason, None).await,
            Err(e) => {
                let reason = format!("{reason}; {e}");
                self.dead_letter(&poison_letter(m, reason), &m.message_id)
                    .await
            }
        }
    }

    /// A retryable failure: retry, unless it was the last attempt the policy allows.
    async fn retry_or_give_up(
        &self,
        env: Envelope,
        prior: u32,
        reason: String,
        status: Option<u16>,
        retry_after: Option<u64>,
    ) -> Step {
        // `prior` is read from the bucket or the message: saturating, never wrapping.
        let attempts = prior.saturating_add(1);
        if self.config.policy.exhausted(attempts) {
            let reason = format!("gave up after {attempts} delivery attempts; last: {reason}");
            return self.dead_envelope(env, reason, status).await;
        }
        Step::Retry {
            reason,
            retry_after,
        }
    }

    async fn dead_envelope(&self, mut env: Envelope, reason: String, status: Option<u16>) -> Step {
        tracing::warn!(delivery = %env.delivery, %reason, "dead-lettering");
        // The letter gets its own copy of a claim-checked body: no other copy's
        // delivery can then delete it.
        if let Some(store) = &self.payloads {
            let copy = format!("dlq-{}", env.attempts.saturating_add(1));
            let before = env.clone();
            if let Some((old, new)) = env.recheck_body(&copy)
                && let Err(e) = store.copy(&old, &new).await
            {
                tracing::warn!(delivery = %env.delivery, error = %e, "cannot copy the claim-check payload; the letter keeps the buffered copy's");
                env = before;
            }
        }
        let id = env.delivery.clone();
        let noted = env.clone();
        let step = self
            .dead_letter(&dead_letter(env, reason.clone(), status), &id)
            .await;
        if matches!(step, Step::DeadLettered) {
            let by = self.by.to_string();
            self.note(&noted, What::DeadLettered { by, reason });
        }
        step
    }

    async fn dead_letter(&self, letter: &DeadLetter, id: &str) -> Step {
        match self.buffer.dead_letter(letter).await {
            Ok(()) => Step::DeadLettered,
            Err(e) => {
                // Not deleted: it stays in the buffer, backed off like a retryable failure,
                // and the rest of its group waits behind it (nothing overtakes it).
                tracing::error!(delivery = %id, error = %e, "cannot dead-letter; backing off");
                Step::Retry {
                    reason: format!("cannot dead-letter: {e}"),
                    retry_after: None,
                }
            }
        }
    }
}

/// A failure to back off from.
struct Failure {
    reason: String,
    retry_after: Option<u64>,
    /// An operator's order to move the hook aside, kept for its next attempt.
    aside: Option<String>,
}

impl Failure {
    fn kept(reason: &str, aside: Option<String>) -> Self {
        Self {
            reason: reason.to_string(),
            retry_after: None,
            aside,
        }
    }
}

/// The rest of a group, after the message in hand.
type Rest = std::iter::Peekable<std::vec::IntoIter<Received>>;

/// Whether a group goes on to its next message.
enum Flow {
    Next,
    Stop,
}

enum Step {
    Delivered(Option<String>),
    DeadLettered,
    Retry {
        reason: String,
        retry_after: Option<u64>,
    },
}

#[cfg(test)]
mod tests {
    //! The run loop on the FIFO-faithful in-memory buffer: groups locked
    //! while in flight, visibility, receive counts; the buffer's own clock
    //! stands in for time passing.

    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    use spigot_core::delivery::Failure as Refused;
    use spigot_core::ports::memory::{MemoryBuffer, MemoryPayloads};

    use super::*;

    /// A target answering each delivery id from its own script (2xx when
    /// the script is empty), recording what it was sent, in order.
    #[derive(Default)]
    struct Scripted {
        scripts: Mutex<HashMap<String, VecDeque<Delivery>>>,
        got: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn answer(&self, delivery: &str, answers: &[Delivery]) {
            self.scripts
                .lock()
                .unwrap()
                .insert(delivery.to_string(), answers.iter().cloned().collect());
        }

        fn got(&self) -> Vec<String> {
            self.got.lock().unwrap().clone()
        }
    }

    impl Target for Scripted {
        async fn deliver(&self, hook: &spigot_core::webhook::Hook) -> Delivery {
            self.got.lock().unwrap().push(hook.delivery.clone());
            self.scripts
                .lock()
                .unwrap()
                .get_mut(&hook.delivery)
                .and_then(VecDeque::pop_front)
                .unwrap_or(Delivery::Delivered(200))
        }
        async fn probe(&self) -> bool {
            true
        }
    }

    fn refused(status: u16) -> Refused {
        Refused {
            status: Some(status),
            reason: format!("target answered {status}"),
            retry_after: None,
        }
    }

    fn hook(repo: &str, id: &str) -> Envelope {
        let body = format!(r#"{{"repository":{{"full_name":"{repo}"}}}}"#);
        let h = spigot_core::webhook::Hook::read(
            [
                ("x-github-delivery", id),
                ("x-github-event", "push"),
                ("content-type", "application/json"),
            ],
            body.into_bytes(),
            1,
        )
        .unwrap();
        Envelope::from_hook(&h)
    }

    type TestEngine = Engine<MemoryBuffer, MemoryPayloads, Scripted>;

    async fn engine(hooks: &[(&str, &str)], config: EngineConfig) -> TestEngine {
        let buffer = MemoryBuffer::with_visibility(Duration::from_secs(30));
        for (repo, id) in hooks {
            buffer.send(&hook(repo, id)).await.unwrap();
        }
        Engine::new(
            buffer,
            Some(MemoryPayloads::default()),
            Scripted::default(),
            config,
        )
    }

    fn config() -> EngineConfig {
        EngineConfig::test(2, Duration::from_secs(1))
    }

    async fn run(e: &TestEngine) -> Summary {
        e.run(None, &AtomicBool::new(false), &Counters::default())
            .await
    }

    fn of(got: &[String], repo_prefix: &str) -> Vec<String> {
        got.iter()
            .filter(|d| d.starts_with(repo_prefix))
            .cloned()
            .collect()
    }

    #[tokio::test]
    async fn each_repository_is_delivered_in_order_and_the_buffer_ends_empty() {
        let e = engine(
            &[
                ("o/a", "a1"),
                ("o/b", "b1"),
                ("o/a", "a2"),
                ("o/b", "b2"),
                ("o/a", "a3"),
            ],
            config(),
        )
        .await;
        let s = run(&e).await;
        assert_eq!((s.delivered, s.retried, s.stop), (5, 0, Some(Stop::Empty)));
        let got = e.target.got();
        assert_eq!(of(&got, "a"), ["a1", "a2", "a3"]);
        assert_eq!(of(&got, "b"), ["b1", "b2"]);
        assert_eq!(e.buffer.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_failure_holds_the_rest_of_its_repository_and_no_other() {
        let e = engine(
            &[
                ("o/a", "a1"),
                ("o/a", "a2"),
                ("o/a", "a3"),
                ("o/b", "b1"),
                ("o/b", "b2"),
            ],
            config(),
        )
        .await;
        e.target.answer("a1", &[Delivery::Retryable(refused(503))]);
        let first = run(&e).await;
        assert_eq!((first.delivered, first.retried, first.held), (2, 1, 2));
        assert_eq!(of(&e.target.got(), "a"), ["a1"], "a2 and a3 wait behind a1");
        assert_eq!(e.buffer.depth().await.unwrap(), 3);
        // Before its backoff ends, nothing of a is handed out again.
        let early = run(&e).await;
        assert_eq!(early.delivered, 0);
        e.buffer.advance(3_000);
        let after = run(&e).await;
        assert_eq!(after.delivered, 3);
        assert_eq!(of(&e.target.got(), "a"), ["a1", "a1", "a2", "a3"]);
        assert_eq!(e.buffer.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_group_held_by_a_dead_consumer_waits_out_its_visibility_and_goes_on_in_order() {
        let e = engine(&[("o/a", "a1"), ("o/a", "a2"), ("o/b", "b1")], config()).await;
        // Another consumer receives a's messages and dies holding them.
        let held = e.buffer.receive(2, 0).await.unwrap();
        let groups: Vec<&str> = held.iter().map(|m| m.group.as_str()).collect();
        assert_eq!(groups.len(), 2);
        assert!(groups.iter().all(|g| g.contains('a')), "{groups:?}");
        let s = run(&e).await;
        assert_eq!(s.delivered, 1, "only b: a is locked while in flight");
        assert_eq!(e.target.got(), ["b1"]);
        e.buffer.advance(30_000);
        let s = run(&e).await;
        assert_eq!(s.delivered, 2);
        assert_eq!(e.target.got(), ["b1", "a1", "a2"]);
    }

    #[tokio::test]
    async fn the_attempt_cap_dead_letters_with_the_last_answer_and_the_repository_goes_on() {
        let mut cfg = config();
        cfg.policy.max_attempts = 2;
        let e = engine(&[("o/a", "a1"), ("o/a", "a2")], cfg).await;
        e.target.answer(
            "a1",
            &[
                Delivery::Retryable(refused(503)),
                Delivery::Retryable(refused(502)),
            ],
        );
        assert_eq!(run(&e).await.retried, 1);
        e.buffer.advance(3_000);
        let s = run(&e).await;
        assert_eq!((s.dead_lettered, s.delivered), (1, 1));
        let dead = e.buffer.dead.lock().unwrap().clone();
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0]
                .reason
                .contains("gave up after 2 delivery attempts; last: target answered 502"),
            "{}",
            dead[0].reason
        );
        assert_eq!(e.target.got(), ["a1", "a1", "a2"]);
        assert_eq!(e.buffer.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_permanent_refusal_dead_letters_only_that_hook() {
        let e = engine(&[("o/a", "a1"), ("o/a", "a2"), ("o/b", "b1")], config()).await;
        e.target.answer("a1", &[Delivery::Permanent(refused(400))]);
        let s = run(&e).await;
        assert_eq!((s.dead_lettered, s.delivered, s.retried), (1, 2, 0));
        assert_eq!(of(&e.target.got(), "a"), ["a1", "a2"]);
        assert_eq!(e.buffer.dead.lock().unwrap()[0].status, Some(400));
    }

    #[tokio::test]
    async fn the_breaker_stops_a_run_after_consecutive_retryable_failures() {
        let e = engine(
            &[("o/a", "a1"), ("o/b", "b1"), ("o/c", "c1"), ("o/d", "d1")],
            EngineConfig::test(1, Duration::from_secs(1)),
        )
        .await;
        for id in ["a1", "b1", "c1", "d1"] {
            e.target.answer(id, &[Delivery::Retryable(refused(503))]);
        }
        let s = run(&e).await;
        assert_eq!(s.stop, Some(Stop::Breaker));
        assert_eq!(s.delivered, 0);
        // Three failures in a row trip it: the fourth is released unattempted.
        assert_eq!(
            (s.retried, s.released, s.answers),
            (3, 1, [0, 0, 3, 0]),
            "{s:?}"
        );
        // Control: with the backoffs over, the three go; the fourth gets its
        // first attempt (refused, as scripted), and goes at the next run.
        e.buffer.advance(3_000);
        let s = run(&e).await;
        assert_eq!((s.delivered, s.retried), (3, 1), "{s:?}");
        e.buffer.advance(3_000);
        assert_eq!(run(&e).await.delivered, 1);
        assert_eq!(e.buffer.depth().await.unwrap(), 0);
    }
}
