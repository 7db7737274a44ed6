//! In-memory ports for unit tests of handler logic (feature `memory`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::*;
use crate::delivery::Delivery;
use crate::envelope::Envelope;
use crate::webhook::Hook;

/// A buffer in memory with SQS FIFO's semantics: messages of a group are
/// handed out in order, a group is locked while any of its messages is in
/// flight, a received message is hidden for the visibility timeout (then
/// comes back, its receive count one higher), and a receipt handle is good
/// for one receive. Time is the buffer's own clock ([`MemoryBuffer::advance`]),
/// so tests pass time without waiting.
#[derive(Debug, Default)]
pub struct MemoryBuffer {
    /// Envelopes sent, as encoded text (a log: receiving does not remove them).
    pub sent: Mutex<VecDeque<String>>,
    /// Dead letters sent.
    pub dead: Mutex<Vec<DeadLetter>>,
    /// When set, every call fails with this message.
    pub fail: Mutex<Option<String>>,
    queue: Mutex<Fifo>,
}

#[derive(Debug, Default)]
struct Fifo {
    now_ms: u64,
    visibility_ms: Option<u64>,
    next: u64,
    messages: Vec<Queued>,
}

#[derive(Debug)]
struct Queued {
    id: String,
    body: String,
    group: String,
    receives: u32,
    sent_ms: u64,
    /// The handle of its current receive, while in flight.
    receipt: Option<String>,
    hidden_until_ms: u64,
}

impl Fifo {
    fn visibility_ms(&self) -> u64 {
        self.visibility_ms.unwrap_or(30_000)
    }

    fn in_flight(&self, q: &Queued) -> bool {
        q.receipt.is_some() && q.hidden_until_ms > self.now_ms
    }

    /// Up to `max` messages: each group's head run, skipping groups locked
    /// by a message in flight, in the order the groups' heads were sent.
    fn receive(&mut self, max: usize) -> Vec<Received> {
        let locked: std::collections::HashSet<String> = self
            .messages
            .iter()
            .filter(|q| self.in_flight(q))
            .map(|q| q.group.clone())
            .collect();
        let mut taken = Vec::new();
        let hide_until = self.now_ms + self.visibility_ms();
        // Messages are kept in send order, so each group yields from its head.
        for q in self.messages.iter_mut() {
            if taken.len() >= max {
                break;
            }
            if locked.contains(&q.group) {
                continue;
            }
            self.next += 1;
            let receipt = format!("{}#{}", q.id, self.next);
            q.receipt = Some(receipt.clone());
            q.hidden_until_ms = hide_until;
            q.receives = q.receives.saturating_add(1);
            taken.push(Received {
                message_id: q.id.clone(),
                receipt,
                body: q.body.clone(),
                receive_count: q.receives,
                group: q.group.clone(),
                sent_ms: q.sent_ms,
            });
        }
        taken
    }

    fn by_receipt(&mut self, receipt: &str) -> Option<&mut Queued> {
        let now = self.now_ms;
        self.messages
            .iter_mut()
            .find(|q| q.receipt.as_deref() == Some(receipt) && q.hidden_until_ms > now)
    }
}

impl MemoryBuffer {
    fn check(&self) -> Result<(), PortError> {
        match &*self.fail.lock().unwrap() {
            Some(m) => Err(PortError::new(m.clone())),
            None => Ok(()),
        }
    }

    /// A buffer whose receives hide messages for `visibility`.
    pub fn with_visibility(visibility: std::time::Duration) -> Self {
        let buffer = Self::default();
        buffer.queue.lock().unwrap().visibility_ms = Some(visibility.as_millis() as u64);
        buffer
    }

    /// Moves the buffer's clock `ms` on: hidden messages whose time is up come back.
    pub fn advance(&self, ms: u64) {
        let mut q = self.queue.lock().unwrap();
        q.now_ms = q.now_ms.saturating_add(ms);
    }

    /// The bodies still in the queue (visible or in flight), in order.
    pub fn waiting(&self) -> Vec<String> {
        let q = self.queue.lock().unwrap();
        q.messages.iter().map(|m| m.body.clone()).collect()
    }
}

impl Buffer for MemoryBuffer {
    async fn send(&self, envelope: &Envelope) -> Result<(), PortError> {
        self.check()?;
        let body = envelope.encode();
        self.sent.lock().unwrap().push_back(body.clone());
        let mut q = self.queue.lock().unwrap();
        q.next += 1;
        let queued = Queued {
            id: format!("m{}", q.next),
            body,
            group: envelope.group_id(),
            receives: 0,
            sent_ms: q.now_ms,
            receipt: None,
            hidden_until_ms: 0,
        };
        q.messages.push(queued);
        Ok(())
    }
    async fn receive(&self, max: i32, _wait: i32) -> Result<Vec<Received>, PortError> {
        self.check()?;
        let max = usize::try_from(max.clamp(0, 10)).unwrap_or(0);
        Ok(self.queue.lock().unwrap().receive(max))
    }
    async fn delete(&self, receipts: &[String]) -> Result<(), PortError> {
        self.check()?;
        let mut q = self.queue.lock().unwrap();
        let now = q.now_ms;
        // A handle whose receive has expired deletes nothing (SQS FIFO refuses it).
        q.messages.retain(|m| {
            !(m.hidden_until_ms > now && m.receipt.as_ref().is_some_and(|r| receipts.contains(r)))
        });
        Ok(())
    }
    async fn set_visibility(&self, receipt: &str, seconds: i32) -> Result<(), PortError> {
        self.check()?;
        let mut q = self.queue.lock().unwrap();
        let until = q.now_ms + u64::try_from(seconds.max(0)).unwrap_or(0) * 1000;
        match q.by_receipt(receipt) {
            Some(m) => {
                m.hidden_until_ms = until;
                if seconds == 0 {
                    m.receipt = None;
                }
                Ok(())
            }
            None => Err(PortError::of(
                PortErrorKind::Invalid,
                format!("receipt handle {receipt} has expired"),
            )),
        }
    }
    async fn visibility_timeout(&self) -> Result<std::time::Duration, PortError> {
        self.check()?;
        let ms = self.queue.lock().unwrap().visibility_ms();
        Ok(std::time::Duration::from_millis(ms))
    }
    async fn depth(&self) -> Result<u64, PortError> {
        self.check()?;
        Ok(self.queue.lock().unwrap().messages.len() as u64)
    }
    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), PortError> {
        self.check()?;
        self.dead.lock().unwrap().push(letter.clone());
        Ok(())
    }
}

/// Payloads in memory.
#[derive(Debug, Default)]
pub struct MemoryPayloads(pub Mutex<BTreeMap<String, Vec<u8>>>);

impl Bucket for MemoryPayloads {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
        self.0.lock().unwrap().insert(key.to_string(), bytes);
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, PortError> {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| PortError::of(PortErrorKind::NotFound, format!("no payload at {key}")))
    }
    async fn copy(&self, from: &str, to: &str) -> Result<(), PortError> {
        let bytes = self.get(from).await?;
        self.put(to, bytes).await
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
    async fn create(&self, key: &str, bytes: Vec<u8>) -> Result<bool, PortError> {
        let mut objects = self.0.lock().unwrap();
        if objects.contains_key(key) {
            return Ok(false);
        }
        objects.insert(key.to_string(), bytes);
        Ok(true)
    }
}

/// A target that answers from a script of outcomes and records what it got.
#[derive(Debug, Default)]
pub struct MemoryTarget {
    /// Outcomes to give, in order; when empty, `Delivered(200)`.
    pub script: Mutex<VecDeque<Delivery>>,
    /// Hooks received.
    pub got: Mutex<Vec<Hook>>,
}

impl Target for MemoryTarget {
    async fn deliver(&self, hook: &Hook) -> Delivery {
        self.got.lock().unwrap().push(hook.clone());
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Delivery::Delivered(200))
    }
    async fn probe(&self) -> bool {
        true
    }
}

/// Filters in memory.
#[derive(Debug, Default)]
pub struct MemoryFilters(pub Mutex<BTreeMap<String, Vec<u8>>>);

impl FilterStore for MemoryFilters {
    async fn list(&self, prefix: &str) -> Result<Vec<StoredFilter>, PortError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| StoredFilter {
                key: k.clone(),
                bytes: v.clone(),
            })
            .collect())
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), PortError> {
        self.0.lock().unwrap().insert(key.to_string(), bytes);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
}

/// Pipelines in memory: records starts, answers from a script.
#[derive(Debug, Default)]
pub struct MemoryPipelines {
    /// Starts requested.
    pub started: Mutex<Vec<Start>>,
    /// Answers to give, in order; when empty, success.
    pub script: Mutex<VecDeque<Result<String, StartError>>>,
    /// Starts are dry runs.
    pub dry_run: bool,
}

impl Pipelines for MemoryPipelines {
    async fn start(&self, start: &Start) -> Result<String, StartError> {
        self.started.lock().unwrap().push(start.clone());
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok("execution-1".into()))
    }

    fn dry_run(&self) -> bool {
        self.dry_run
    }
}

/// An evaluation queue in memory.
#[derive(Debug, Default)]
pub struct MemoryEvalQueue(pub Mutex<Vec<Envelope>>);

impl EvalQueue for MemoryEvalQueue {
    async fn enqueue(&self, envelope: &Envelope) -> Result<(), PortError> {
        self.0.lock().unwrap().push(envelope.clone());
        Ok(())
    }
}

/// Evaluation dead letters in memory.
#[derive(Debug, Default)]
pub struct MemoryEvalLetters(pub Mutex<Vec<DeadLetter>>);

impl EvalLetters for MemoryEvalLetters {
    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), PortError> {
        self.0.lock().unwrap().push(letter.clone());
        Ok(())
    }
}

/// A switch in memory.
#[derive(Debug)]
pub struct MemorySwitch(pub Mutex<Result<crate::spigot::State, crate::spigot::StateError>>);

impl MemorySwitch {
    /// A switch in `state`.
    pub fn new(state: crate::spigot::State) -> Self {
        Self(Mutex::new(Ok(state)))
    }
}

impl Switch for MemorySwitch {
    async fn read(&self) -> Result<crate::spigot::State, SwitchError> {
        Ok(self.0.lock().unwrap().clone()?)
    }
    async fn set(&self, state: crate::spigot::State) -> Result<(), PortError> {
        *self.0.lock().unwrap() = Ok(state);
        Ok(())
    }
}

/// A clock that says what it is told.
#[derive(Debug, Default)]
pub struct FixedClock(pub std::sync::atomic::AtomicU64);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Stages in memory: records every state set; a stage never set reads ON.
#[derive(Debug, Default)]
pub struct MemoryStages(pub Mutex<Vec<(StageRef, crate::spigot::State)>>);

impl Stages for MemoryStages {
    async fn read(&self, stage: &StageRef) -> Result<crate::spigot::State, SwitchError> {
        let sets = self.0.lock().unwrap();
        Ok(sets
            .iter()
            .rev()
            .find(|(s, _)| s == stage)
            .map_or(crate::spigot::State::On, |(_, state)| *state))
    }

    async fn set(&self, stage: &StageRef, state: crate::spigot::State) -> Result<(), PortError> {
        self.0.lock().unwrap().push((stage.clone(), state));
        Ok(())
    }
}

/// GitHub in memory: answers every comparison from `files` and every listing
/// of deliveries from `deliveries` (whatever the hook), or with `fail`.
#[derive(Debug, Default)]
pub struct MemoryGitHub {
    /// The changed files it answers.
    pub files: Vec<String>,
    /// When set, every call fails with this.
    pub fail: Option<PortError>,
    /// (repository, base, head) of every comparison.
    pub calls: Mutex<Vec<(String, String, String)>>,
    /// The deliveries it lists.
    pub deliveries: Mutex<Vec<crate::reconcile::HookDelivery>>,
    /// The ids redelivered, in order.
    pub redelivered: Mutex<Vec<u64>>,
    /// What a redelivery's new attempt records (default 202: it reached Spigot).
    pub redelivery_status: Option<u16>,
    /// After this many redeliveries, a redelivery never answers (a run cut short).
    pub hang_after: Mutex<Option<usize>>,
}

impl GitHub for MemoryGitHub {
    async fn compare_files(
        &self,
        repository: &str,
        base: &str,
        head: &str,
    ) -> Result<Vec<String>, PortError> {
        self.calls
            .lock()
            .unwrap()
            .push((repository.into(), base.into(), head.into()));
        match &self.fail {
            Some(e) => Err(e.clone()),
            None => Ok(self.files.clone()),
        }
    }

    async fn deliveries(
        &self,
        _hook: &crate::reconcile::HookSource,
        since: u64,
    ) -> Result<Vec<crate::reconcile::HookDelivery>, PortError> {
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        let all = self.deliveries.lock().unwrap().clone();
        Ok(all
            .into_iter()
            .filter(|d| d.delivered_at >= since)
            .collect())
    }

    async fn delivery_repository(
        &self,
        _hook: &crate::reconcile::HookSource,
        _delivery: u64,
    ) -> Result<Option<String>, PortError> {
        Ok(None)
    }

    async fn redeliver(
        &self,
        _hook: &crate::reconcile::HookSource,
        delivery: u64,
    ) -> Result<(), PortError> {
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        let hang = self
            .hang_after
            .lock()
            .unwrap()
            .is_some_and(|n| self.redelivered.lock().unwrap().len() >= n);
        if hang {
            std::future::pending::<()>().await;
        }
        self.redelivered.lock().unwrap().push(delivery);
        let mut all = self.deliveries.lock().unwrap();
        if let Some(d) = all.iter().find(|d| d.id == delivery).cloned() {
            let id = all.iter().map(|d| d.id).max().unwrap_or(0) + 1;
            all.push(crate::reconcile::HookDelivery {
                id,
                redelivery: true,
                status_code: self.redelivery_status.unwrap_or(202),
                ..d
            });
        }
        Ok(())
    }
}

/// Trigger objects in memory, with entity tags (a counter) and the conditions honoured atomically.
#[derive(Debug, Default)]
pub struct MemoryTriggers {
    /// key -> (etag, bytes)
    pub objects: Mutex<BTreeMap<String, (String, Vec<u8>)>>,
    /// Writes refused because their condition failed.
    pub refused: std::sync::atomic::AtomicU64,
    tags: std::sync::atomic::AtomicU64,
}

impl super::Triggers for MemoryTriggers {
    async fn read_at_most(&self, key: &str, at_most: usize) -> Result<super::Read, PortError> {
        Ok(match self.read(key, None).await? {
            super::Read::Found { mut bytes, etag } => {
                bytes.truncate(at_most.saturating_add(1));
                super::Read::Found { bytes, etag }
            }
            other => other,
        })
    }

    async fn read(&self, key: &str, known: Option<&str>) -> Result<super::Read, PortError> {
        tokio_yield().await;
        let objects = self.objects.lock().unwrap();
        Ok(match objects.get(key) {
            None => super::Read::Missing,
            Some((etag, _)) if Some(etag.as_str()) == known => super::Read::Unchanged,
            Some((etag, bytes)) => super::Read::Found {
                bytes: bytes.clone(),
                etag: etag.clone(),
            },
        })
    }

    async fn write(
        &self,
        key: &str,
        bytes: Vec<u8>,
        when: super::Write<'_>,
    ) -> Result<bool, PortError> {
        tokio_yield().await;
        let mut objects = self.objects.lock().unwrap();
        let allowed = match (when, objects.get(key)) {
            (super::Write::Always, _) => true,
            (super::Write::IfAbsent, existing) => existing.is_none(),
            (super::Write::IfMatches(tag), Some((etag, _))) => etag == tag,
            (super::Write::IfMatches(_), None) => false,
        };
        if !allowed {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Ok(false);
        }
        let n = self.tags.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        objects.insert(key.to_string(), (format!("\"{n}\""), bytes));
        Ok(true)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        tokio_yield().await;
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

/// Lets other tasks run between the calls of concurrent callers (as a network would).
async fn tokio_yield() {
    struct YieldOnce(bool);
    impl std::future::Future for YieldOnce {
        type Output = ();
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<()> {
            if self.0 {
                return std::task::Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
    YieldOnce(false).await
}

/// An archive in memory: the records put, in order.
#[derive(Debug, Default)]
pub struct MemoryArchive {
    /// Every record put.
    pub records: Mutex<Vec<Vec<u8>>>,
}

impl MemoryArchive {
    /// The records read back as one object.
    pub fn entries(&self) -> Vec<crate::archive::Entry> {
        crate::archive::read_object(&self.records.lock().unwrap().concat()).0
    }
}

impl Archive for MemoryArchive {
    fn put(
        &self,
        records: Vec<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PortError>> + Send + '_>>
    {
        self.records.lock().unwrap().extend(records);
        Box::pin(async { Ok(()) })
    }
}
