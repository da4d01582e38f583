//! Scheduling inside one worker: per-key FIFO queues so the events of one user run strictly in
//! order (one at a time) while different users of the same partition run concurrently, and per-partition
//! offset tracking so the offset handed to Kafka never passes an unfinished event.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};

/// FIFO queues per key. A key is active from its first item until [`KeyQueues::release`] finds
/// its queue empty; while active, its items are taken one at a time, each only after the one
/// before it was released. `S` hashes the keys (the worker's keys are hashes already).
#[derive(Debug)]
pub struct KeyQueues<K, T, S = RandomState> {
    queues: HashMap<K, VecDeque<T>, S>,
}

impl<K: Hash + Eq + Clone, T, S: BuildHasher + Default> Default for KeyQueues<K, T, S> {
    fn default() -> Self {
        KeyQueues {
            queues: HashMap::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, T, S: BuildHasher> KeyQueues<K, T, S> {
    /// Appends `item`; returns true when the key was idle, so its head is ready to be taken.
    pub fn push(&mut self, key: K, item: T) -> bool {
        match self.queues.entry(key) {
            Entry::Occupied(mut queue) => {
                queue.get_mut().push_back(item);
                false
            }
            Entry::Vacant(slot) => {
                slot.insert(VecDeque::from([item]));
                true
            }
        }
    }

    /// Takes the key's next item; the key stays active (its later items wait) until released.
    pub fn take(&mut self, key: &K) -> Option<T> {
        self.queues.get_mut(key)?.pop_front()
    }

    /// The item last taken of `key` is finished: true when more wait (take the next), false
    /// when the key went idle (the next push makes it ready again).
    pub fn release(&mut self, key: &K) -> bool {
        match self.queues.entry(key.clone()) {
            Entry::Occupied(queue) if queue.get().is_empty() => {
                queue.remove();
                false
            }
            Entry::Occupied(_) => true,
            Entry::Vacant(_) => false,
        }
    }

    pub fn active_keys(&self) -> usize {
        self.queues.len()
    }
}

/// Offsets of one assigned partition that were received but are not finished.
#[derive(Debug, Default)]
pub struct PartitionProgress {
    pending: BTreeSet<i64>,
    highest_received: Option<i64>,
    stored: Option<i64>,
}

impl PartitionProgress {
    pub fn begin(&mut self, offset: i64) {
        // The group's position is at least the first offset received; no need to store it.
        if self.stored.is_none() {
            self.stored = Some(offset);
        }
        self.pending.insert(offset);
        self.highest_received = Some(self.highest_received.map_or(offset, |h| h.max(offset)));
    }

    /// Marks `offset` finished; returns the next offset to commit if it moved forward.
    pub fn finish(&mut self, offset: i64) -> Option<i64> {
        self.pending.remove(&offset);
        let safe = self.safe_offset()?;
        if self.stored.is_some_and(|s| s >= safe) {
            return None;
        }
        self.stored = Some(safe);
        Some(safe)
    }

    /// The offset to commit: the oldest unfinished one, else one past the newest received.
    pub fn safe_offset(&self) -> Option<i64> {
        self.pending
            .first()
            .copied()
            .or_else(|| self.highest_received.map(|h| h + 1))
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_offset_never_passes_an_unfinished_event() {
        let mut p = PartitionProgress::default();
        for offset in 10..15 {
            p.begin(offset);
        }
        // 11 and 12 finish first (other keys); 10 is still running, so nothing may be committed.
        assert_eq!(p.finish(11), None);
        assert_eq!(p.finish(12), None);
        assert_eq!(p.safe_offset(), Some(10));
        assert_eq!(p.finish(10), Some(13));
        assert_eq!(p.finish(14), None);
        assert_eq!(p.finish(13), Some(15));
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn a_keys_items_are_taken_in_order_each_after_the_one_before_was_released() {
        let mut q: KeyQueues<&str, i32> = KeyQueues::default();
        assert!(q.push("ann", 1));
        assert!(!q.push("ann", 2));
        assert!(q.push("bob", 10));
        assert_eq!(q.take(&"ann"), Some(1));
        // Pushed while ann's first item runs: queued behind it, not ready on its own.
        assert!(!q.push("ann", 3));
        assert_eq!(q.take(&"bob"), Some(10));
        assert!(!q.release(&"bob"));
        assert!(q.release(&"ann"));
        assert_eq!(q.take(&"ann"), Some(2));
        assert!(q.release(&"ann"));
        assert_eq!(q.take(&"ann"), Some(3));
        assert_eq!(q.active_keys(), 1);
        assert!(!q.release(&"ann"));
        assert_eq!(q.active_keys(), 0);
        // The key went idle, so the next push makes it ready again.
        assert!(q.push("ann", 4));
    }
}
