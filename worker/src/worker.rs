//! The consumer loop. Records are taken off the raw topic, queued per (partition, key) and run
//! by one runner per busy key, at most `concurrency` at a time. An offset is stored for commit
//! only once every earlier offset of its partition is finished (written, or dead-lettered with
//! an acknowledgement). On revocation the worker waits for the revoked partitions' running
//! events, commits, and drops the rest for the new owner; on shutdown it drains and commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use wapipe_core::kafka::KafkaArgs;
use wapipe_core::record::{
    HEADER_DLQ_ATTEMPTS, HEADER_DLQ_ERROR, HEADER_DLQ_FIRST_FAILURE_AT, HEADER_DLQ_LAST_FAILURE_AT,
    HEADER_DLQ_SOURCE_OFFSET, HEADER_DLQ_SOURCE_PARTITION, HEADER_DLQ_SOURCE_TOPIC,
};

use crate::error::{Error, Fault, Result};
use crate::observe::{Health, KindLabel, Metrics, Outcome, RetryReason};
use crate::route::{claimed_kind, route, Incoming};
use crate::schedule::{KeyQueues, PartitionProgress};
use crate::sink::SharedSink;

/// What the consumer loop needs, independent of how it was configured.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub kafka: KafkaArgs,
    pub topic: String,
    pub dead_letter_topic: String,
    pub group: String,
    pub max_attempts: u32,
    pub concurrency: usize,
    pub max_buffered: usize,
    pub retry_backoff: Duration,
    pub max_backoff: Duration,
    pub drain_timeout: Duration,
    /// Longest a single sink write may take before it counts as the sink being unavailable.
    pub sink_timeout: Duration,
    /// Static group membership (`group.instance.id`): a restarted replica with the same id
    /// takes its partitions back without waiting for its old session to expire.
    pub group_instance_id: Option<String>,
}

impl WorkerSettings {
    pub fn new(kafka: KafkaArgs, topic: &str, dead_letter_topic: &str, group: &str) -> Self {
        WorkerSettings {
            kafka,
            topic: topic.into(),
            dead_letter_topic: dead_letter_topic.into(),
            group: group.into(),
            max_attempts: 3,
            concurrency: 16,
            max_buffered: 2000,
            retry_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
            sink_timeout: Duration::from_secs(60),
            group_instance_id: None,
        }
    }
}

type QueueKey = (i32, Option<Vec<u8>>);

/// How long a hand-over waits for abandoned writes to stop (a dropped future stops at its next
/// poll, so this only guards against a runtime that cannot run them).
const ABANDON_WAIT: Duration = Duration::from_secs(10);

/// How long the buffer may stay full, with no record taken, before fetching is paused.
const HOLD_BEFORE_PAUSE: Duration = Duration::from_secs(2);

/// Most records taken off the consumer's queue at once (those already there, never waiting).
const MAX_BATCH: usize = 256;

/// Longest an offset waits to be stored while no record arrives (the auto-commit runs every
/// second, so this adds little to what a crash redoes).
const STORE_INTERVAL: Duration = Duration::from_millis(100);

struct Job {
    incoming: Incoming,
    epoch: u64,
}

struct PartitionSlot {
    epoch: u64,
    progress: PartitionProgress,
    executing: usize,
    revoking: bool,
    /// The next offset to store for the auto-commit, when it moved since the last store.
    unstored: Option<i64>,
    /// Cancelled when the partition is handed over with writes still running after the drain
    /// timeout: they are abandoned (their futures dropped) before the new owner starts. A child
    /// of the worker's `abandon` token, so shutdown cancels it too.
    cancel: CancellationToken,
}

impl PartitionSlot {
    fn new(epoch: u64, abandon: &CancellationToken) -> PartitionSlot {
        PartitionSlot {
            epoch,
            progress: PartitionProgress::default(),
            executing: 0,
            revoking: false,
            unstored: None,
            cancel: abandon.child_token(),
        }
    }
}

#[derive(Default)]
struct State {
    queues: KeyQueues<QueueKey, Job>,
    partitions: HashMap<i32, PartitionSlot>,
    buffered: usize,
    /// Whether fetching is paused because the buffer is full. Every partition this worker is
    /// assigned follows it, including one assigned while paused: librdkafka keeps an
    /// application's pause on a partition across revoke and re-assign, so the worker sets each
    /// newly assigned partition's state itself.
    paused: bool,
}

struct Shared {
    settings: WorkerSettings,
    state: Mutex<State>,
    /// Signalled whenever an event finishes, for revocation and shutdown to wait on.
    finished: Condvar,
    space: Notify,
    permits: Semaphore,
    epochs: AtomicU64,
    /// Set when a partition's offset moved; the consumer loop stores them all at once.
    unstored: AtomicBool,
    sink: SharedSink,
    producer: FutureProducer,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Fired when the drain timeout passed: running events give up without finishing.
    abandon: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, not invariants, behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn owns(&self, partition: i32, epoch: u64) -> bool {
        self.lock()
            .partitions
            .get(&partition)
            .is_some_and(|slot| slot.epoch == epoch && !slot.revoking)
    }

    fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Stores, in one call, the offsets that moved since the last store. Called from the
    /// consumer loop only, so never while a rebalance callback runs.
    fn store_moved<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C) {
        if !self.unstored.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, slot) in self.lock().partitions.iter_mut() {
            if let Some(offset) = slot.unstored.take() {
                let _ = tpl.add_partition_offset(
                    &self.settings.topic,
                    *partition,
                    Offset::Offset(offset),
                );
            }
        }
        if tpl.count() > 0 {
            if let Err(error) = consumer.store_offsets(&tpl) {
                tracing::debug!(%error, "storing offsets failed");
            }
        }
    }

    /// Offsets to commit for `partitions` (all when `None`), and forgets those partitions.
    fn release(&self, partitions: Option<&[i32]>) -> TopicPartitionList {
        let mut state = self.lock();
        let mut tpl = TopicPartitionList::new();
        let chosen: Vec<i32> = match partitions {
            Some(list) => list.to_vec(),
            None => state.partitions.keys().copied().collect(),
        };
        for partition in chosen {
            if let Some(slot) = state.partitions.remove(&partition) {
                if let Some(offset) = slot.progress.safe_offset() {
                    let _ = tpl.add_partition_offset(
                        &self.settings.topic,
                        partition,
                        Offset::Offset(offset),
                    );
                }
            }
        }
        tpl
    }
}

/// Consumer context: assignment bookkeeping and a clean hand-over on revocation.
struct WorkerContext {
    shared: Arc<Shared>,
}

impl ClientContext for WorkerContext {}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let shared = &self.shared;
        let revoked: Vec<i32> = tpl
            .elements_for_topic(&shared.settings.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let owned = {
            let mut state = shared.lock();
            let mut owned = 0;
            for partition in &revoked {
                if let Some(slot) = state.partitions.get_mut(partition) {
                    slot.revoking = true;
                    owned += 1;
                }
            }
            owned
        };
        if owned == 0 {
            return;
        }
        let busy = |s: &mut State| {
            revoked
                .iter()
                .any(|p| s.partitions.get(p).is_some_and(|slot| slot.executing > 0))
        };
        let hand_over = || {
            let state = shared.lock();
            let (mut state, _) = shared
                .finished
                .wait_timeout_while(state, shared.settings.drain_timeout, busy)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if busy(&mut state) {
                // Writes still running past the drain timeout are abandoned, and the hand-over
                // waits for them to stop: the new owner must never write a user's later event
                // while this one is still writing an earlier one.
                for partition in &revoked {
                    if let Some(slot) = state.partitions.get(partition) {
                        slot.cancel.cancel();
                    }
                }
                let (state, timeout) = shared
                    .finished
                    .wait_timeout_while(state, ABANDON_WAIT, busy)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                drop(state);
                if timeout.timed_out() {
                    tracing::error!(partitions = ?revoked, "abandoned writes did not stop; handing over anyway");
                } else {
                    tracing::warn!(partitions = ?revoked, "writes still running after the drain timeout were abandoned before the hand-over");
                }
            } else {
                drop(state);
            }
            let offsets = shared.release(Some(&revoked));
            commit(consumer, &offsets);
        };
        // Runners need the runtime while this thread waits and commits.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(hand_over)
            }
            _ => hand_over(),
        }
        shared.metrics.assigned_partitions.dec_by(owned);
        tracing::info!(partitions = ?revoked, "partitions revoked; finished work committed");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let shared = &self.shared;
                let mut state = shared.lock();
                // A partition comes in as this worker fetches now: paused while the buffer is
                // full, flowing otherwise, whatever pause it carried from an earlier ownership.
                let result = if state.paused {
                    consumer.pause(tpl)
                } else {
                    consumer.resume(tpl)
                };
                if let Err(error) = result {
                    tracing::warn!(%error, paused = state.paused, "setting the fetch state of assigned partitions failed");
                }
                let mut added = 0;
                for element in tpl.elements_for_topic(&shared.settings.topic) {
                    // A partition still held (incremental assignment) keeps its progress.
                    if state.partitions.contains_key(&element.partition()) {
                        continue;
                    }
                    let epoch = shared.next_epoch();
                    state.partitions.insert(
                        element.partition(),
                        PartitionSlot::new(epoch, &shared.abandon),
                    );
                    added += 1;
                }
                shared.metrics.assigned_partitions.inc_by(added);
                tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions assigned");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn commit<C: Consumer<X>, X: ConsumerContext>(consumer: &C, offsets: &TopicPartitionList) {
    if offsets.count() == 0 {
        return;
    }
    // Stored offsets equal to the commit, so librdkafka's own commit on close changes nothing.
    if let Err(error) = consumer.store_offsets(offsets) {
        tracing::debug!(%error, "storing final offsets failed");
    }
    if let Err(error) = consumer.commit(offsets, CommitMode::Sync) {
        tracing::warn!(%error, "committing offsets failed; the next owner redoes those events");
    }
}

/// A running worker's handles, for callers that embed it (tests, local mode).
pub struct Worker {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

impl Worker {
    pub fn new() -> Worker {
        Worker {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
        }
    }

    /// Consumes until `shutdown` fires, then drains in-flight events and commits.
    pub async fn run(
        &self,
        settings: WorkerSettings,
        sink: SharedSink,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let producer: FutureProducer = settings
            .kafka
            .client_config()?
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("message.max.bytes", wapipe_core::COPY_MAX_RECORD_BYTES)
            .create()?;
        let shared = Arc::new(Shared {
            permits: Semaphore::new(settings.concurrency.max(1)),
            settings: settings.clone(),
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
            space: Notify::new(),
            epochs: AtomicU64::new(0),
            unstored: AtomicBool::new(false),
            sink,
            producer,
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            abandon: CancellationToken::new(),
        });
        let mut config = settings.kafka.client_config()?;
        config
            .set("group.id", &settings.group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000");
        if let Some(instance) = &settings.group_instance_id {
            config.set("group.instance.id", instance);
        }
        // Raw librdkafka settings win over the worker's defaults.
        for (key, value) in &settings.kafka.options {
            config.set(key, value);
        }
        let consumer: StreamConsumer<WorkerContext> =
            config.create_with_context(WorkerContext {
                shared: shared.clone(),
            })?;
        let consumer = Arc::new(consumer);
        consumer.subscribe(&[&settings.topic])?;
        self.health.set_consuming(true);
        self.health.set_sink_available(true);
        tracing::info!(topic = %settings.topic, group = %settings.group, "consuming");

        let mut full_since: Option<tokio::time::Instant> = None;
        let mut store_tick = tokio::time::interval(STORE_INTERVAL);
        store_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            shared.store_moved(consumer.as_ref());
            // A full buffer first only stops taking records: librdkafka's own prefetch (bounded by
            // queued.max.messages.kbytes) waits, and a fast sink drains the buffer within
            // milliseconds. Pausing purges that prefetch and costs a fetch round trip to undo, so
            // a pause (which keeps the consumer polling, and so in the group, through a long
            // sink outage) comes only once the buffer has stayed full for HOLD_BEFORE_PAUSE.
            // Fetching resumes at half the limit.
            let now = tokio::time::Instant::now();
            let (buffered, was_paused) = {
                let state = shared.lock();
                (state.buffered, state.paused)
            };
            let full = buffered >= settings.max_buffered;
            match (full, full_since) {
                (false, _) => full_since = None,
                (true, None) => full_since = Some(now),
                (true, Some(_)) => {}
            }
            let pause_now = !was_paused
                && full_since.is_some_and(|since| now.duration_since(since) >= HOLD_BEFORE_PAUSE);
            let resume_now = was_paused && buffered <= settings.max_buffered / 2;
            if pause_now || resume_now {
                shared.lock().paused = pause_now;
                // The whole current assignment; a partition assigned from here on gets the
                // same state in the rebalance callback.
                if let Ok(assignment) = consumer.assignment() {
                    let result = if pause_now {
                        consumer.pause(&assignment)
                    } else {
                        consumer.resume(&assignment)
                    };
                    if let Err(error) = result {
                        tracing::warn!(%error, "pausing or resuming fetches failed");
                    }
                }
                self.metrics.fetch_paused.set(i64::from(pause_now));
            }
            let paused = (was_paused && !resume_now) || pause_now;
            // Full but not paused yet: take no record until space frees or the hold is over.
            let holding = full && !paused;
            let hold_over = full_since.map_or(now, |since| since + HOLD_BEFORE_PAUSE);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = shared.space.notified(), if paused || holding => {}
                _ = tokio::time::sleep_until(hold_over), if holding => {}
                _ = store_tick.tick() => {}
                received = consumer.recv(), if !holding => match received {
                    Ok(message) => {
                        // The records already waiting in the queue come along, as many as the
                        // buffer has room for, so the bookkeeping is done once per batch.
                        let room = settings.max_buffered.saturating_sub(buffered).clamp(1, MAX_BATCH);
                        let mut batch = Vec::with_capacity(room.min(16));
                        batch.push(Incoming::from_message(&message));
                        drop(message);
                        while batch.len() < room {
                            match consumer.recv().now_or_never() {
                                Some(Ok(message)) => batch.push(Incoming::from_message(&message)),
                                Some(Err(error)) => {
                                    tracing::warn!(%error, "receiving from Kafka failed");
                                    break;
                                }
                                None => break,
                            }
                        }
                        dispatch(&shared, batch);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "receiving from Kafka failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }

        tracing::info!("shutting down: draining in-flight events");
        self.health.set_consuming(false);
        let deadline = tokio::time::Instant::now() + settings.drain_timeout;
        loop {
            if shared.lock().buffered == 0 {
                break;
            }
            tokio::select! {
                _ = shared.space.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("drain timeout: unfinished events are left for the next owner");
                    shared.abandon.cancel();
                    break;
                }
            }
        }
        let offsets = shared.release(None);
        let consumer_for_close = consumer.clone();
        tokio::task::spawn_blocking(move || {
            commit(consumer_for_close.as_ref(), &offsets);
            consumer_for_close.unsubscribe();
        })
        .await
        .ok();
        shared.metrics.assigned_partitions.set(0);
        tracing::info!("worker stopped");
        Ok(())
    }
}

impl Default for Worker {
    fn default() -> Self {
        Worker::new()
    }
}

/// Queues a batch of records under one lock and starts a runner for each key that was idle.
fn dispatch(shared: &Arc<Shared>, batch: Vec<Incoming>) {
    let mut idle_keys = Vec::new();
    {
        let mut state = shared.lock();
        let state = &mut *state;
        for incoming in batch {
            let partition = incoming.partition;
            let slot = state.partitions.entry(partition).or_insert_with(|| {
                // A record before its assignment callback: adopt the partition.
                PartitionSlot::new(shared.next_epoch(), &shared.abandon)
            });
            slot.progress.begin(incoming.offset);
            let job = Job {
                epoch: slot.epoch,
                incoming,
            };
            state.buffered += 1;
            let key = (partition, job.incoming.key.clone());
            if state.queues.push(key.clone(), job) {
                idle_keys.push(key);
            }
        }
        shared.metrics.buffered_events.set(state.buffered as i64);
    }
    for key in idle_keys {
        tokio::spawn(run_key(shared.clone(), key));
    }
}

/// Drains one key's queue, one event at a time.
async fn run_key(shared: Arc<Shared>, key: QueueKey) {
    loop {
        // Takes the next job and, if this ownership of its partition still holds, claims it.
        let claimed = {
            let mut state = shared.lock();
            let Some(job) = state.queues.next(&key) else {
                return;
            };
            match state.partitions.get_mut(&job.incoming.partition) {
                Some(slot) if slot.epoch == job.epoch && !slot.revoking => {
                    slot.executing += 1;
                    Some((job, slot.cancel.clone()))
                }
                _ => {
                    state.buffered -= 1;
                    shared.metrics.buffered_events.set(state.buffered as i64);
                    None
                }
            }
        };
        let Some((job, cancel)) = claimed else {
            shared.finished.notify_all();
            shared.space.notify_one();
            continue;
        };
        let partition = job.incoming.partition;
        let offset = job.incoming.offset;
        let finished = match shared.permits.acquire().await {
            Ok(_permit) => process(&shared, &job, &cancel).await,
            Err(_) => false,
        };
        {
            let mut state = shared.lock();
            state.buffered -= 1;
            shared.metrics.buffered_events.set(state.buffered as i64);
            if let Some(slot) = state.partitions.get_mut(&partition) {
                if slot.epoch == job.epoch {
                    slot.executing -= 1;
                    if finished {
                        if let Some(next) = slot.progress.finish(offset) {
                            slot.unstored = Some(next);
                            shared.unstored.store(true, Ordering::Release);
                        }
                    }
                }
            }
        }
        shared.finished.notify_all();
        shared.space.notify_one();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        .min(max)
}

/// Handles one event until it is written or dead-lettered (true), or given up because the
/// partition was revoked or the drain timed out (false).
async fn process(shared: &Shared, job: &Job, cancel: &CancellationToken) -> bool {
    let incoming = &job.incoming;
    let settings = &shared.settings;
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut sink_failures = 0u32;
    let mut first_failure_at: Option<i64> = None;
    loop {
        if cancel.is_cancelled() || !shared.owns(incoming.partition, job.epoch) {
            return false;
        }
        let result = match route(incoming) {
            Ok(event) => {
                let write = tokio::time::timeout(settings.sink_timeout, shared.sink.write(&event));
                tokio::select! {
                    // Handed over, or shutting down, past the drain timeout: drop the write.
                    _ = cancel.cancelled() => return false,
                    written = write => match written {
                        Ok(result) => result.map(|()| event.event_kind()),
                        Err(_) => Err(Error::SinkUnavailable {
                            sink: shared.sink.name(),
                            reason: format!("no answer within {:?}", settings.sink_timeout),
                        }),
                    },
                }
            }
            Err(error) => Err(error),
        };
        let wait = match result {
            Ok(kind) => {
                shared.health.set_sink_available(true);
                shared
                    .metrics
                    .event(KindLabel(Some(kind)), Outcome::Written);
                observe_latency(shared, incoming, started);
                return true;
            }
            Err(error) if error.fault() == Fault::Event => {
                attempts += 1;
                let now = now_ms();
                let first = *first_failure_at.get_or_insert(now);
                if matches!(error, Error::SinkRejected { .. }) {
                    shared.health.set_sink_available(true);
                }
                if attempts >= settings.max_attempts {
                    tracing::warn!(%error, attempts, key = %incoming.key_str(), partition = incoming.partition, offset = incoming.offset, "dead-lettering the event");
                    if !dead_letter(shared, job, &error, attempts, first, now).await {
                        return false;
                    }
                    shared.metrics.dead_letters.inc();
                    shared
                        .metrics
                        .event(KindLabel(claimed_kind(incoming)), Outcome::DeadLettered);
                    observe_latency(shared, incoming, started);
                    return true;
                }
                tracing::info!(%error, attempts, key = %incoming.key_str(), partition = incoming.partition, offset = incoming.offset, "event failed; retrying");
                shared.metrics.retry(RetryReason::Event);
                backoff(settings.retry_backoff, settings.max_backoff, attempts)
            }
            Err(error) => {
                sink_failures += 1;
                shared.health.set_sink_available(false);
                shared.metrics.retry(RetryReason::Sink);
                tracing::warn!(%error, sink_failures, key = %incoming.key_str(), partition = incoming.partition, offset = incoming.offset, "sink unavailable; waiting");
                backoff(settings.retry_backoff, settings.max_backoff, sink_failures)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return false,
        }
    }
}

fn observe_latency(shared: &Shared, incoming: &Incoming, started: Instant) {
    shared
        .metrics
        .processing_seconds
        .observe(started.elapsed().as_secs_f64());
    if let Some(received_at) = incoming.received_at_ms() {
        let seconds = (now_ms() - received_at).max(0) as f64 / 1000.0;
        shared.metrics.end_to_end_seconds.observe(seconds);
    }
}

/// Headers of a dead letter: the original ones, then why, where from and how often it failed.
pub fn dead_letter_headers(
    incoming: &Incoming,
    error: &str,
    attempts: u32,
    first_failure_at: i64,
    last_failure_at: i64,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &incoming.headers {
        if key.starts_with("wapipe-dlq-") {
            continue;
        }
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let extra = [
        (HEADER_DLQ_ERROR, error.to_string()),
        (HEADER_DLQ_ATTEMPTS, attempts.to_string()),
        (HEADER_DLQ_SOURCE_TOPIC, incoming.topic.clone()),
        (HEADER_DLQ_SOURCE_PARTITION, incoming.partition.to_string()),
        (HEADER_DLQ_SOURCE_OFFSET, incoming.offset.to_string()),
        (HEADER_DLQ_FIRST_FAILURE_AT, first_failure_at.to_string()),
        (HEADER_DLQ_LAST_FAILURE_AT, last_failure_at.to_string()),
    ];
    for (key, value) in &extra {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

/// Produces the dead letter and waits for its acknowledgement, retrying while the broker
/// refuses. Returns false only when abandoned.
async fn dead_letter(
    shared: &Shared,
    job: &Job,
    error: &Error,
    attempts: u32,
    first_failure_at: i64,
    last_failure_at: i64,
) -> bool {
    let incoming = &job.incoming;
    let reason = error.to_string();
    let mut failures = 0;
    loop {
        let headers = dead_letter_headers(
            incoming,
            &reason,
            attempts,
            first_failure_at,
            last_failure_at,
        );
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&shared.settings.dead_letter_topic).headers(headers);
        if let Some(key) = incoming.key.as_deref() {
            record = record.key(key);
        }
        if let Some(payload) = incoming.payload.as_deref() {
            record = record.payload(payload);
        }
        match shared.producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => return true,
            Err((error, _)) => {
                failures += 1;
                shared.metrics.retry(RetryReason::Sink);
                let error = Error::ProduceDeadLetter {
                    topic: shared.settings.dead_letter_topic.clone(),
                    source: error,
                };
                tracing::warn!(%error, key = %incoming.key_str(), partition = incoming.partition, offset = incoming.offset, "dead-letter produce failed; retrying");
            }
        }
        let wait = backoff(
            shared.settings.retry_backoff,
            shared.settings.max_backoff,
            failures,
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.abandon.cancelled() => return false,
        }
        if !shared.owns(incoming.partition, job.epoch) {
            return false;
        }
    }
}

/// True for the error `commit` returns when there was nothing to commit.
pub fn is_nothing_to_commit(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_and_stops_at_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff(base, max, 1), Duration::from_millis(100));
        assert_eq!(backoff(base, max, 2), Duration::from_millis(200));
        assert_eq!(backoff(base, max, 3), Duration::from_millis(400));
        assert_eq!(backoff(base, max, 30), max);
    }

    #[test]
    fn dead_letter_headers_keep_the_originals_and_say_why() {
        use rdkafka::message::Headers;
        let incoming = Incoming {
            topic: "raw".into(),
            partition: 2,
            offset: 41,
            key: Some(b"u".to_vec()),
            payload: None,
            headers: vec![("wapipe-kind".into(), b"message".to_vec())],
        };
        let headers = dead_letter_headers(&incoming, "boom", 3, 1, 2);
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        assert!(pairs.contains(&("wapipe-kind".into(), "message".into())));
        assert!(pairs.contains(&(HEADER_DLQ_ATTEMPTS.into(), "3".into())));
        assert!(pairs.contains(&(HEADER_DLQ_SOURCE_OFFSET.into(), "41".into())));
        assert!(pairs.contains(&(HEADER_DLQ_ERROR.into(), "boom".into())));
    }
}
