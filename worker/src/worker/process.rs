//! Running events. The queued events of every ready key, in order, are claimed into a batch (at
//! most the sink's `max_batch` events, at most `concurrency` batches in flight) and handed to
//! the sink in one `write_batch` call, which writes a batch in order. A batch the sink is unavailable for is waited out and
//! written again whole; one the sink rejects is split, each of its events written alone with
//! the event's own retries and dead letter ([`after_batch_error`]). An event is given up only
//! when its partition is handed over or the drain timed out. A key's next events are claimed
//! only once those before them finished, and a split batch's events of one key are written one
//! after another, so each user's events reach the sink strictly in order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use wapipe_core::error::Causes;
use wapipe_core::time::now_ms;

use super::dead_letter::dead_letter;
use super::offsets::{Job, QueueKey, State};
use super::{Shared, WriteWindow};
use crate::error::{Error, Fault, Result};
use crate::observe::{KindLabel, Outcome, RetryReason};
use crate::route::{claimed_kind, route, Event, Incoming};

/// One event taken off its key's queue and claimed for the ownership of its partition it was
/// received in (counted in the partition's `executing`).
pub(super) struct Claimed {
    key: QueueKey,
    job: Job,
    /// The partition's: cancelled when its writes are abandoned.
    cancel: CancellationToken,
    /// The last of its key's events claimed into the batch: once it is finished, the key's
    /// next event may start.
    releases_key: bool,
}

/// Batches claimed under the lock, started once it is released.
#[must_use]
pub(super) struct Launched {
    batches: Vec<Vec<Claimed>>,
    /// Whether queued events of partitions handed over were dropped on the way.
    dropped: bool,
}

impl Launched {
    pub(super) fn spawn(self, shared: &Arc<Shared>) {
        if self.dropped {
            shared.finished.notify_all();
            shared.space.notify_one();
        }
        for batch in self.batches {
            tokio::spawn(run_batch(shared.clone(), batch));
        }
    }
}

/// Claims batches from the ready keys while fewer than `concurrency` are in flight. A key's
/// queued events of an ownership that ended are dropped here (the next owner reads them again).
pub(super) fn launch(shared: &Shared, mut state: MutexGuard<'_, State>) -> Launched {
    let state = &mut *state;
    let WriteWindow {
        max_batch,
        batches: concurrency,
    } = shared.window;
    let mut launched = Launched {
        batches: Vec::new(),
        dropped: false,
    };
    while state.batches < concurrency && !state.ready.is_empty() {
        // Room for every event that may be claimed (a ready key may have several queued), so
        // the batch is not grown (and copied) claim by claim.
        let mut batch = Vec::with_capacity(state.buffered.clamp(1, max_batch));
        while batch.len() < max_batch {
            let Some(key) = state.ready.pop_front() else {
                break;
            };
            // The key's queued events, in order, as many as the batch has room for.
            let mut claimed_any = false;
            while batch.len() < max_batch {
                let Some(job) = state.queues.take(&key) else {
                    break;
                };
                match state.partitions.get_mut(&job.incoming.partition) {
                    Some(slot) if slot.epoch == job.epoch && !slot.revoking => {
                        slot.executing += 1;
                        let cancel = slot.cancel.clone();
                        batch.push(Claimed {
                            key,
                            job,
                            cancel,
                            releases_key: false,
                        });
                        claimed_any = true;
                    }
                    _ => {
                        state.buffered -= 1;
                        launched.dropped = true;
                    }
                }
            }
            match batch.last_mut() {
                Some(last) if claimed_any => last.releases_key = true,
                // Nothing of it left: the key goes idle.
                _ => {
                    state.queues.release(&key);
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        state.batches += 1;
        launched.batches.push(batch);
    }
    if launched.dropped {
        shared.metrics.buffered_events.set(state.buffered as i64);
    }
    launched
}

/// What follows a failed batch write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterBatchError {
    /// The sink is unavailable, which is no event's fault: wait, then write the whole batch
    /// again.
    WaitAndWriteAgain,
    /// Its only event is at fault: that was the event's first attempt; it goes on alone.
    FirstAttemptFailed,
    /// One or more of its events is at fault, unknown which: each is written alone, from its
    /// first attempt, so only the faulty ones are retried and dead-lettered.
    WriteEachAlone,
}

/// The rule for a batch of `events` whose write failed with an error of this `fault`.
pub(super) fn after_batch_error(fault: Fault, events: usize) -> AfterBatchError {
    match fault {
        Fault::Infrastructure => AfterBatchError::WaitAndWriteAgain,
        Fault::Event if events <= 1 => AfterBatchError::FirstAttemptFailed,
        Fault::Event => AfterBatchError::WriteEachAlone,
    }
}

/// Routes and writes one batch until it is written, split, or given up (partitions handed
/// over), then finishes its events and frees its place for the next batch.
async fn run_batch(shared: Arc<Shared>, batch: Vec<Claimed>) {
    let started = Instant::now();
    let mut claims = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    let mut alone: Vec<(Claimed, Option<Error>)> = Vec::new();
    for claimed in batch {
        // After an event of its key that goes alone, the key's later events follow it alone.
        if alone.iter().any(|(other, _)| other.key == claimed.key) {
            alone.push((claimed, None));
            continue;
        }
        match route(&claimed.job.incoming) {
            Ok(event) => {
                claims.push(claimed);
                events.push(event);
            }
            Err(error) => alone.push((claimed, Some(error))),
        }
    }
    let mut done: Vec<(Claimed, bool)> = Vec::with_capacity(claims.len());
    let mut sink_failures = 0u32;
    // Held while this batch waits out a sink failure: the worker is not ready meanwhile.
    let mut failing = None;
    while !claims.is_empty() {
        // Events of a partition handed over (or abandoned past the drain timeout) are given up.
        {
            let state = shared.lock();
            let mut index = 0;
            while index < claims.len() {
                let claimed = &claims[index];
                let owned = !claimed.cancel.is_cancelled()
                    && state
                        .partitions
                        .get(&claimed.job.incoming.partition)
                        .is_some_and(|slot| slot.epoch == claimed.job.epoch && !slot.revoking);
                if owned {
                    index += 1;
                } else {
                    done.push((claims.remove(index), false));
                    events.remove(index);
                }
            }
        }
        if claims.is_empty() {
            break;
        }
        let Some(result) = write_batch(&shared, &claims, &events).await else {
            continue;
        };
        let error = match result {
            Ok(()) => {
                shared.health.set_sink_available(true);
                drop(failing.take());
                shared.metrics.written(&events);
                let (processing, now) = (started.elapsed().as_secs_f64(), now_ms());
                for event in &events {
                    shared.metrics.processing_seconds.observe(processing);
                    if let Some(received_at) = event.received_at_ms {
                        shared
                            .metrics
                            .end_to_end_seconds
                            .observe(seconds_since(received_at, now));
                    }
                }
                done.extend(claims.drain(..).map(|claimed| (claimed, true)));
                break;
            }
            Err(error) => error,
        };
        match after_batch_error(error.fault(), claims.len()) {
            AfterBatchError::FirstAttemptFailed => {
                let mut error = Some(error);
                alone.extend(claims.drain(..).map(|claimed| (claimed, error.take())));
                break;
            }
            AfterBatchError::WriteEachAlone => {
                tracing::info!(error = %Causes(&error), events = claims.len(), "a batch was rejected; writing its events one by one");
                alone.extend(claims.drain(..).map(|claimed| (claimed, None)));
                break;
            }
            AfterBatchError::WaitAndWriteAgain => {
                sink_failures += 1;
                failing.get_or_insert_with(|| shared.health.failing_write());
                shared.metrics.retry(RetryReason::Sink);
                tracing::warn!(error = %Causes(&error), sink_failures, events = claims.len(), "sink unavailable; waiting");
                let wait = shared.settings.backoff(sink_failures);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = any_cancelled(&claims) => {}
                }
            }
        }
    }
    // One task per key, its events one after another.
    let mut chains: Vec<Vec<(Claimed, Option<Error>)>> = Vec::new();
    let mut chain_of: HashMap<QueueKey, usize> = HashMap::new();
    for (claimed, error) in alone {
        match chain_of.get(&claimed.key) {
            Some(&index) => chains[index].push((claimed, error)),
            None => {
                chain_of.insert(claimed.key, chains.len());
                chains.push(vec![(claimed, error)]);
            }
        }
    }
    for mut chain in chains {
        // A key's events left at routing come before those split off the batch: back in queue
        // (offset) order.
        chain.sort_by_key(|(claimed, _)| claimed.job.incoming.offset);
        tokio::spawn(run_alone(shared.clone(), chain));
    }
    finish(&shared, done, true);
}

/// Writes a batch, within the sink timeout; `None` when one of its partitions' writes was
/// abandoned meanwhile (the write is dropped).
async fn write_batch(shared: &Shared, claims: &[Claimed], events: &[Event]) -> Option<Result<()>> {
    let timeout = shared.settings.sink_timeout;
    let write = tokio::time::timeout(timeout, shared.sink.write_batch(events));
    tokio::select! {
        _ = any_cancelled(claims) => None,
        written = write => Some(match written {
            Ok(result) => result,
            Err(_) => Err(Error::SinkUnavailable {
                sink: shared.sink.name(),
                reason: format!("no answer within {timeout:?}"),
            }),
        }),
    }
}

/// Resolves once the writes of any partition of `claims` are abandoned.
async fn any_cancelled(claims: &[Claimed]) {
    let mut tokens: Vec<(i32, &CancellationToken)> = Vec::new();
    for claimed in claims {
        let partition = claimed.job.incoming.partition;
        if !tokens.iter().any(|(p, _)| *p == partition) {
            tokens.push((partition, &claimed.cancel));
        }
    }
    if tokens.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(
        tokens
            .into_iter()
            .map(|(_, token)| Box::pin(token.cancelled())),
    )
    .await;
}

/// One key's events of a batch on their own, in order, after a failure (`first`) or a split:
/// each written, retried, dead-lettered or given up by [`process`], then finished.
async fn run_alone(shared: Arc<Shared>, chain: Vec<(Claimed, Option<Error>)>) {
    for (claimed, first) in chain {
        let finished = process(&shared, &claimed.job, &claimed.cancel, first).await;
        finish(&shared, vec![(claimed, finished)], false);
    }
}

/// Finishes events under one lock: an offset may move (`true`: written or dead-lettered), the
/// key's next event becomes ready, and more batches start if there is room (one fewer in
/// flight when `batch_ended`).
fn finish(shared: &Arc<Shared>, done: Vec<(Claimed, bool)>, batch_ended: bool) {
    let launched = {
        let mut guard = shared.lock();
        let state = &mut *guard;
        if batch_ended {
            state.batches -= 1;
        }
        for (claimed, finished) in done {
            state.buffered -= 1;
            let job = &claimed.job;
            if let Some(slot) = state.partitions.get_mut(&job.incoming.partition) {
                if slot.epoch == job.epoch {
                    slot.executing -= 1;
                    if finished {
                        if let Some(next) = slot.progress.finish(job.incoming.offset) {
                            slot.unstored = Some(next);
                            shared.unstored.store(true, Ordering::Release);
                        }
                    }
                }
            }
            if claimed.releases_key && state.queues.release(&claimed.key) {
                state.ready.push_back(claimed.key);
            }
        }
        shared.metrics.buffered_events.set(state.buffered as i64);
        launch(shared, guard)
    };
    shared.finished.notify_all();
    shared.space.notify_one();
    launched.spawn(shared);
}

/// Handles one event until it is written or dead-lettered (true), or given up because the
/// partition was revoked or the drain timed out (false). `first` is a failure it already had,
/// counted as its first attempt.
async fn process(
    shared: &Shared,
    job: &Job,
    cancel: &CancellationToken,
    mut first: Option<Error>,
) -> bool {
    let incoming = &job.incoming;
    let settings = &shared.settings;
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut sink_failures = 0u32;
    // Held while this event waits out a sink failure: the worker is not ready meanwhile.
    let mut failing = None;
    let mut first_failure_at: Option<i64> = None;
    loop {
        if cancel.is_cancelled() || !shared.owns(incoming.partition, job.epoch) {
            return false;
        }
        let result = match first.take().map_or_else(|| route(incoming), Err) {
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
                    drop(failing.take());
                }
                if attempts >= settings.max_attempts {
                    tracing::warn!(error = %Causes(&error), attempts, key = %incoming.key_str(), partition = incoming.partition, offset = incoming.offset, "dead-lettering the event");
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
                tracing::info!(error = %Causes(&error), attempts, key = %incoming.key_str(), partition = incoming.partition, offset = incoming.offset, "event failed; retrying");
                shared.metrics.retry(RetryReason::Event);
                settings.backoff(attempts)
            }
            Err(error) => {
                sink_failures += 1;
                failing.get_or_insert_with(|| shared.health.failing_write());
                shared.metrics.retry(RetryReason::Sink);
                tracing::warn!(error = %Causes(&error), sink_failures, key = %incoming.key_str(), partition = incoming.partition, offset = incoming.offset, "sink unavailable; waiting");
                settings.backoff(sink_failures)
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
        let seconds = seconds_since(received_at, now_ms());
        shared.metrics.end_to_end_seconds.observe(seconds);
    }
}

/// Seconds from `then` to `now` (unix milliseconds), never negative (clocks of two hosts).
fn seconds_since(then: i64, now: i64) -> f64 {
    (now - then).max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_batch_is_split_so_only_the_faulty_event_is_retried_and_an_outage_retries_it_whole(
    ) {
        use AfterBatchError::*;
        for (fault, events, after) in [
            (Fault::Event, 40, WriteEachAlone),
            (Fault::Event, 1, FirstAttemptFailed),
            (Fault::Infrastructure, 40, WaitAndWriteAgain),
            (Fault::Infrastructure, 1, WaitAndWriteAgain),
        ] {
            assert_eq!(
                after_batch_error(fault, events),
                after,
                "{fault:?}, {events} events"
            );
        }
    }
}
