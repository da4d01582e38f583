//! Offset bookkeeping: which ownership (epoch) of a partition an event belongs to, which of its
//! offsets are still running, what may be stored for the auto-commit (never past an unfinished
//! event) and what is committed when partitions are handed over or the worker stops.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::sync::OnceLock;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::route::Incoming;
use crate::schedule::{KeyQueues, PartitionProgress};

/// Events are queued per (partition, key): one user's events in one partition run in order.
/// The key is held as its hash (no copy of the key per event): two users whose keys collide
/// share a queue, which keeps each one's order and only serializes the two.
pub(super) type QueueKey = (i32, u64);

/// The queue of a record of `partition` with Kafka key `key`.
pub(super) fn queue_key(partition: i32, key: Option<&[u8]>) -> QueueKey {
    // Keyed at random once per process: the same key always lands in the same queue, and which
    // keys share a queue (or a bucket of the queues' map, see `PreHashed`) cannot be foreseen
    // from outside.
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    (partition, KEYS.get_or_init(RandomState::new).hash_one(key))
}

/// The hasher of the per-event maps: a [`QueueKey`] is already a keyed hash of the user key
/// and a partition is an id the broker assigns, so neither is hashed again with SipHash (each
/// event looked them up about ten times).
#[derive(Default)]
pub(super) struct PreHashed(u64);

impl PreHashed {
    fn mix(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.mix(u64::from(b));
        }
    }

    fn write_i32(&mut self, n: i32) {
        self.mix(u64::from(n as u32));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
}

pub(super) type PreHashedState = BuildHasherDefault<PreHashed>;

/// One record waiting for its key's runner, tagged with the ownership it was received under.
pub(super) struct Job {
    pub(super) incoming: Incoming,
    pub(super) epoch: u64,
}

/// One ownership of an assigned partition: its epoch, its offsets in flight, and its hand-over
/// state.
pub(super) struct PartitionSlot {
    pub(super) epoch: u64,
    /// How many rebalances had run when this ownership began (see [`ownership`]).
    pub(super) since: u64,
    pub(super) progress: PartitionProgress,
    pub(super) executing: usize,
    pub(super) revoking: bool,
    /// The next offset to store for the auto-commit, when it moved since the last store.
    pub(super) unstored: Option<i64>,
    /// Cancelled when the partition is handed over with writes still running after the drain
    /// timeout: they are abandoned (their futures dropped) before the new owner starts. A child
    /// of the worker's `abandon` token, so shutdown cancels it too.
    pub(super) cancel: CancellationToken,
}

impl PartitionSlot {
    pub(super) fn new(epoch: u64, since: u64, abandon: &CancellationToken) -> PartitionSlot {
        PartitionSlot {
            epoch,
            since,
            progress: PartitionProgress::default(),
            executing: 0,
            revoking: false,
            unstored: None,
            cancel: abandon.child_token(),
        }
    }
}

/// Whose a record taken off the consumer is by the time it is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ownership {
    /// Its partition is held as it was when the record arrived.
    Held,
    /// Its partition has no slot yet and no rebalance ran since: a record before its assignment
    /// callback; the partition is adopted.
    Adopt,
    /// A rebalance since it arrived revoked its partition (and maybe assigned it again): it is
    /// dropped unbegun, so the commit never covers it and it is read again from there.
    Lost,
}

/// Whose a record is that arrived after `received_at` rebalances, when `now` have run and its
/// partition's slot (if any) began after `slot_since`. A batch is taken off the consumer before
/// it is queued, and a rebalance can run inside the receive of a later record of it.
pub(super) fn ownership(slot_since: Option<u64>, received_at: u64, now: u64) -> Ownership {
    match slot_since {
        Some(since) if since <= received_at => Ownership::Held,
        Some(_) => Ownership::Lost,
        None if now == received_at => Ownership::Adopt,
        None => Ownership::Lost,
    }
}

/// What the consumer loop, the runners and the rebalance callback share, under one lock.
#[derive(Default)]
pub(super) struct State {
    pub(super) queues: KeyQueues<QueueKey, Job, PreHashedState>,
    /// Active keys with no event in flight, whose next event may start, oldest first.
    pub(super) ready: VecDeque<QueueKey>,
    /// Sink writes (batches) in flight, at most `concurrency`.
    pub(super) batches: usize,
    pub(super) partitions: HashMap<i32, PartitionSlot, PreHashedState>,
    pub(super) buffered: usize,
    /// Whether fetching is paused because the buffer is full. Every partition this worker is
    /// assigned follows it, including one assigned while paused: librdkafka keeps an
    /// application's pause on a partition across revoke and re-assign, so the worker sets each
    /// newly assigned partition's state itself.
    pub(super) paused: bool,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, not invariants, behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn owns(&self, partition: i32, epoch: u64) -> bool {
        self.lock()
            .partitions
            .get(&partition)
            .is_some_and(|slot| slot.epoch == epoch && !slot.revoking)
    }

    pub(super) fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Stores, in one call, the offsets that moved since the last store. Called from the
    /// consumer loop only, so never while a rebalance callback runs.
    pub(super) fn store_moved<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C) {
        if !self.unstored.swap(false, Ordering::AcqRel) {
            return;
        }
        // What the sink holds in a buffer is written out before its offsets may be committed.
        self.sink.flush();
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
    pub(super) fn release(&self, partitions: Option<&[i32]>) -> TopicPartitionList {
        // The offsets released here are committed next.
        self.sink.flush();
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

pub(super) fn commit<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    offsets: &TopicPartitionList,
) {
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
    fn a_users_records_share_one_queue_per_partition_and_other_users_get_their_own() {
        let user = queue_key(3, Some(b"15550001"));
        assert_eq!(user, queue_key(3, Some(b"15550001")));
        assert_ne!(user, queue_key(4, Some(b"15550001")));
        assert_ne!(user, queue_key(3, Some(b"15550002")));
        // No key and an empty key are different keys, as they are to Kafka.
        assert_ne!(queue_key(3, None), queue_key(3, Some(b"")));
    }

    #[test]
    fn a_record_queued_after_a_rebalance_is_only_kept_by_the_ownership_it_arrived_in() {
        // Held since before it arrived, no rebalance in between or one that kept the partition.
        assert_eq!(ownership(Some(3), 3, 3), Ownership::Held);
        assert_eq!(ownership(Some(3), 4, 5), Ownership::Held);
        // Revoked since, not assigned again: its commit did not cover this record.
        assert_eq!(ownership(None, 4, 5), Ownership::Lost);
        // Revoked and assigned again: the new ownership reads it again from the commit.
        assert_eq!(ownership(Some(5), 4, 5), Ownership::Lost);
        // No slot and no rebalance since it arrived: before its assignment callback.
        assert_eq!(ownership(None, 4, 4), Ownership::Adopt);
    }
}
