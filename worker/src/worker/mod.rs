//! The consumer loop. Records are taken off the raw topic in batches and queued per (partition,
//! key); the queued events of every ready key go to the sink in batches, each key's in order
//! and in one batch at a time, at most `concurrency` batches at a time (`process`). When to take
//! records, hold or pause fetching is `fetch`. An offset is stored for commit only once every earlier offset of its partition is finished
//! (`offsets`). On revocation the worker waits for the revoked partitions' running events,
//! commits, and drops the rest for the new owner (`rebalance`); on shutdown it drains and
//! commits. An event that keeps failing goes to the dead-letter topic (`dead_letter`).

mod dead_letter;
mod fetch;
mod offsets;
mod process;
mod rebalance;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wapipe_core::kafka::KafkaArgs;
use wapipe_core::time::doubling_backoff;

use crate::config::GroupProtocol;
use crate::error::{Error, Result};
use crate::observe::{Health, Metrics};
use crate::route::Incoming;
use crate::sink::SharedSink;

pub use self::dead_letter::dead_letter_headers;
use self::fetch::{fetch_decision, FetchChange};
pub use self::fetch::{WriteWindow, DEFAULT_BUFFER_BOUNDS};
pub use self::offsets::is_nothing_to_commit;
use self::offsets::{commit, ownership, queue_key, Job, Ownership, PartitionSlot, State};
use self::process::launch;
use self::rebalance::WorkerContext;

/// What the consumer loop needs, independent of how it was configured.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub kafka: KafkaArgs,
    pub topic: String,
    pub dead_letter_topic: String,
    pub group: String,
    pub max_attempts: u32,
    /// Sink writes in flight at a time (each a batch of up to the sink's `max_batch` events).
    pub concurrency: usize,
    /// Events received and not finished before the worker stops taking records; `None`: twice
    /// what the sink writes at once, within bounds ([`WriteWindow::default_max_buffered`]).
    pub max_buffered: Option<usize>,
    pub retry_backoff: Duration,
    pub max_backoff: Duration,
    pub drain_timeout: Duration,
    /// Longest a single sink write may take before it counts as the sink being unavailable.
    pub sink_timeout: Duration,
    /// Static group membership (`group.instance.id`): a restarted replica with the same id
    /// takes its partitions back without waiting for its old session to expire.
    pub group_instance_id: Option<String>,
    /// The consumer group protocol to ask for first.
    pub group_protocol: GroupProtocol,
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
            max_buffered: None,
            retry_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
            sink_timeout: Duration::from_secs(60),
            group_instance_id: None,
            group_protocol: GroupProtocol::Classic,
        }
    }

    /// The wait before retry number `attempt` (1 for the first): `retry_backoff`, doubled for
    /// each further attempt, never more than `max_backoff`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        doubling_backoff(self.retry_backoff, self.max_backoff, attempt)
    }
}

/// Most records taken off the consumer's queue at once (those already there, never waiting).
const MAX_BATCH: usize = 256;

/// Longest an offset waits to be stored while no record arrives (the auto-commit runs every
/// second, so this adds little to what a crash redoes).
const STORE_INTERVAL: Duration = Duration::from_millis(100);

/// What the consumer loop, the runners and the rebalance callback share.
struct Shared {
    settings: WorkerSettings,
    state: Mutex<State>,
    /// Signalled whenever an event finishes, for revocation and shutdown to wait on.
    finished: Condvar,
    space: Notify,
    epochs: AtomicU64,
    /// Rebalance callbacks run so far (revocations and assignments), to tell whose a record of
    /// a batch is when a rebalance ran while the batch was being taken.
    rebalances: AtomicU64,
    /// Set when a partition's offset moved; the consumer loop stores them all at once.
    unstored: AtomicBool,
    sink: SharedSink,
    /// What the sink writes at once, derived from it and `--concurrency` once.
    window: WriteWindow,
    producer: FutureProducer,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Fired when the drain timeout passed: running events give up without finishing.
    abandon: CancellationToken,
}

/// A running worker's handles, for callers that embed it (tests, local mode).
pub struct Worker {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// A worker running on a task of its own in this process (embedding, benchmarks, tests).
pub struct Spawned {
    /// Its health and metrics.
    pub worker: Arc<Worker>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Spawned {
    /// Stops it as a shutdown signal would (in-flight events drained, offsets committed) and
    /// returns how its run ended. A panic of the worker's task is raised again here.
    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        match self.task.await {
            Ok(ended) => ended,
            Err(failed) => std::panic::resume_unwind(failed.into_panic()),
        }
    }
}

impl Worker {
    pub fn new() -> Worker {
        Worker::with_liveness_bound(crate::observe::DEFAULT_LIVENESS_TIMEOUT)
    }

    /// A worker whose `/healthz` fails once its consumer loop has not turned for `bound`.
    pub fn with_liveness_bound(bound: Duration) -> Worker {
        Worker {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::new(bound)),
        }
    }

    /// A new worker running `settings` into `sink` on a task of its own, until
    /// [`Spawned::stop`].
    pub fn spawn(settings: WorkerSettings, sink: SharedSink) -> Spawned {
        let worker = Arc::new(Worker::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (worker, stop) = (worker.clone(), stop.clone());
            async move { worker.run(settings, sink, stop).await }
        });
        Spawned { worker, stop, task }
    }

    /// Consumes until `shutdown` fires, then drains in-flight events and commits. A group
    /// asked to use `group.protocol=consumer` on brokers without it falls back to `classic`.
    pub async fn run(
        &self,
        settings: WorkerSettings,
        sink: SharedSink,
        shutdown: CancellationToken,
    ) -> Result<()> {
        match self
            .consume(settings.clone(), sink.clone(), shutdown.clone())
            .await
        {
            Err(Error::GroupProtocolUnsupported(reason))
                if settings.group_protocol == GroupProtocol::Consumer =>
            {
                tracing::warn!(%reason, "the brokers do not support group.protocol=consumer (KIP-848): falling back to the classic protocol");
                let classic = WorkerSettings {
                    group_protocol: GroupProtocol::Classic,
                    ..settings
                };
                self.consume(classic, sink, shutdown).await
            }
            other => other,
        }
    }

    async fn consume(
        &self,
        settings: WorkerSettings,
        sink: SharedSink,
        shutdown: CancellationToken,
    ) -> Result<()> {
        // The dead-letter producer: the user's options win over its defaults.
        let mut defaults = wapipe_core::kafka::COPY_PRODUCER_DEFAULTS.to_vec();
        defaults.push(("message.timeout.ms", "30000"));
        let producer: FutureProducer = settings.kafka.client_config_with(&defaults)?.create()?;
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
            space: Notify::new(),
            epochs: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            unstored: AtomicBool::new(false),
            window: WriteWindow::of(sink.as_ref(), settings.concurrency),
            sink,
            producer,
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            abandon: CancellationToken::new(),
        });
        // The group and how offsets are committed (stored by the worker once written, then
        // committed in the background) are the worker's own; raw librdkafka options win over
        // the rest of its defaults.
        let mut defaults = vec![
            ("auto.commit.interval.ms", "1000"),
            ("auto.offset.reset", "earliest"),
            // librdkafka stops fetching a partition whose prefetch queue is full and, by
            // default, looks again only after a second. A worker draining a backlog larger
            // than that queue empties it well within the second and then sat idle: a third of
            // the drain rate with the log sink (docs/benchmarks.md).
            ("fetch.queue.backoff.ms", "20"),
        ];
        let max_buffered = settings
            .max_buffered
            .unwrap_or_else(|| shared.window.default_max_buffered());
        let prefetch = fetch::prefetch(max_buffered);
        let (messages, kbytes) = (prefetch.messages.to_string(), prefetch.kbytes.to_string());
        defaults.push(("queued.min.messages", &messages));
        defaults.push(("queued.max.messages.kbytes", &kbytes));
        // Under KIP-848 the broker owns session timeouts and assignment: librdkafka refuses
        // the classic protocol's settings there.
        if settings.group_protocol == GroupProtocol::Classic {
            defaults.push(("session.timeout.ms", "10000"));
        }
        let mut config = settings.kafka.client_config_with(&defaults)?;
        config
            .set("group.protocol", settings.group_protocol.as_str())
            .set("group.id", &settings.group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        if let Some(instance) = &settings.group_instance_id {
            config.set("group.instance.id", instance);
        }
        let consumer: StreamConsumer<WorkerContext> =
            config.create_with_context(WorkerContext {
                shared: shared.clone(),
            })?;
        let consumer = Arc::new(consumer);
        consumer.subscribe(&[&settings.topic])?;
        self.health.set_consuming(true);
        self.health.set_sink_available(true);
        tracing::info!(topic = %settings.topic, group = %settings.group, max_buffered, "consuming");

        let topic: Arc<str> = Arc::from(settings.topic.as_str());
        let mut full_since: Option<tokio::time::Instant> = None;
        let mut store_tick = tokio::time::interval(STORE_INTERVAL);
        store_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Liveness: each turn of this loop is a return from its wait (a record, an error,
            // the store tick), so the marker goes stale only when the loop is stuck.
            self.health.mark_polled();
            // The group protocol is refused at the first heartbeat, before any assignment, as
            // a fatal error of the client.
            if settings.group_protocol == GroupProtocol::Consumer
                && shared.rebalances.load(Ordering::Acquire) == 0
            {
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    if matches!(
                        code,
                        RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::UnsupportedFeature
                    ) {
                        return Err(Error::GroupProtocolUnsupported(reason));
                    }
                }
            }
            shared.store_moved(consumer.as_ref());
            let (buffered, was_paused) = {
                let state = shared.lock();
                (state.buffered, state.paused)
            };
            let decision = fetch_decision(
                buffered,
                max_buffered,
                was_paused,
                full_since,
                tokio::time::Instant::now(),
            );
            full_since = decision.full_since;
            if let Some(change) = decision.change {
                let pause = change == FetchChange::Pause;
                shared.lock().paused = pause;
                // The whole current assignment; a partition assigned from here on gets the
                // same state in the rebalance callback.
                if let Ok(assignment) = consumer.assignment() {
                    let result = if pause {
                        consumer.pause(&assignment)
                    } else {
                        consumer.resume(&assignment)
                    };
                    if let Err(error) = result {
                        tracing::warn!(%error, "pausing or resuming fetches failed");
                    }
                }
                self.metrics.fetch_paused.set(i64::from(pause));
            }
            let (paused, holding, hold_over) =
                (decision.paused, decision.holding, decision.hold_over);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = shared.space.notified(), if paused || holding => {}
                _ = tokio::time::sleep_until(hold_over), if holding => {}
                _ = store_tick.tick() => {}
                received = consumer.recv(), if !holding => match received {
                    Ok(message) => {
                        // The records already waiting in the queue come along, as many as the
                        // buffer has room for, so the bookkeeping is done once per batch.
                        let room = max_buffered.saturating_sub(buffered).clamp(1, MAX_BATCH);
                        let mut received_at = shared.rebalances.load(Ordering::Acquire);
                        // Sized for all of them (at most MAX_BATCH): growing it copied each record.
                        let mut batch = Vec::with_capacity(room);
                        batch.push(Incoming::from_message(&message, &topic));
                        drop(message);
                        while batch.len() < room {
                            match consumer.recv().now_or_never() {
                                Some(Ok(message)) => {
                                    // A rebalance ran inside this receive: what came before it
                                    // is queued as owned before it, this record after it.
                                    let now = shared.rebalances.load(Ordering::Acquire);
                                    if now != received_at {
                                        dispatch(&shared, std::mem::take(&mut batch), received_at);
                                        received_at = now;
                                    }
                                    batch.push(Incoming::from_message(&message, &topic));
                                }
                                Some(Err(error)) => {
                                    tracing::warn!(%error, "receiving from Kafka failed");
                                    break;
                                }
                                None => break,
                            }
                        }
                        dispatch(&shared, batch, received_at);
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
            self.health.mark_polled();
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

/// Queues a batch of records, taken after `received_at` rebalances, under one lock; keys that
/// were idle become ready, and batches start for them while fewer than `concurrency` run.
fn dispatch(shared: &Arc<Shared>, batch: Vec<Incoming>, received_at: u64) {
    let launched = {
        let mut guard = shared.lock();
        let state = &mut *guard;
        let now = shared.rebalances.load(Ordering::Acquire);
        for incoming in batch {
            let partition = incoming.partition;
            let since = state.partitions.get(&partition).map(|slot| slot.since);
            let slot = match ownership(since, received_at, now) {
                Ownership::Held => state.partitions.get_mut(&partition),
                Ownership::Adopt => Some(state.partitions.entry(partition).or_insert(
                    PartitionSlot::new(shared.next_epoch(), now, &shared.abandon),
                )),
                Ownership::Lost => None,
            };
            let Some(slot) = slot else {
                continue;
            };
            slot.progress.begin(incoming.offset);
            let job = Job {
                epoch: slot.epoch,
                incoming,
            };
            state.buffered += 1;
            let key = queue_key(partition, job.incoming.key.as_deref());
            if state.queues.push(key, job) {
                state.ready.push_back(key);
            }
        }
        shared.metrics.buffered_events.set(state.buffered as i64);
        launch(shared, guard)
    };
    launched.spawn(shared);
}
