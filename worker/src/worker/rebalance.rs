//! The rebalance callbacks: a partition comes in with the worker's current fetch state and a
//! fresh epoch; a revoked partition is handed over only after its running writes finished (or
//! were abandoned past the drain timeout and stopped), with its finished offsets committed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

use super::offsets::{commit, PartitionSlot, State};
use super::Shared;
use crate::config::ABANDON_WAIT;

/// Consumer context: assignment bookkeeping and a clean hand-over on revocation.
pub(super) struct WorkerContext {
    pub(super) shared: Arc<Shared>,
}

impl ClientContext for WorkerContext {}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let shared = &self.shared;
        shared.rebalances.fetch_add(1, Ordering::AcqRel);
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
                let since = shared.rebalances.fetch_add(1, Ordering::AcqRel) + 1;
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
                        PartitionSlot::new(epoch, since, &shared.abandon),
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
