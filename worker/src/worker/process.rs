//! Running events: one runner per busy key drains its queue in order, each event routed and
//! written with retries (the event's own fault a few times, then a dead letter; the sink's
//! forever), given up only when its partition is handed over or the drain timed out.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use wapipe_core::time::{doubling_backoff, now_ms};

use super::dead_letter::dead_letter;
use super::offsets::{Job, QueueKey};
use super::Shared;
use crate::error::{Error, Fault};
use crate::observe::{KindLabel, Outcome, RetryReason};
use crate::route::{claimed_kind, route, Incoming};

/// Drains one key's queue, one event at a time.
pub(super) async fn run_key(shared: Arc<Shared>, key: QueueKey) {
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
                doubling_backoff(settings.retry_backoff, settings.max_backoff, attempts)
            }
            Err(error) => {
                sink_failures += 1;
                shared.health.set_sink_available(false);
                shared.metrics.retry(RetryReason::Sink);
                tracing::warn!(%error, sink_failures, key = %incoming.key_str(), partition = incoming.partition, offset = incoming.offset, "sink unavailable; waiting");
                doubling_backoff(settings.retry_backoff, settings.max_backoff, sink_failures)
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
