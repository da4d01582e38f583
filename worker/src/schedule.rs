//! Scheduling inside one worker: per-key FIFO queues so the events of one user run strictly in
//! order while different users of the same partition run concurrently, and per-partition
//! offset tracking so the offset handed to Kafka never passes an unfinished event.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;

/// FIFO queues per key; a key with a queue has exactly one runner draining it.
#[derive(Debug)]
pub struct KeyQueues<K, T> {
    queues: HashMap<K, VecDeque<T>>,
}

impl<K: Hash + Eq + Clone, T> Default for KeyQueues<K, T> {
    fn default() -> Self {
        KeyQueues {
            queues: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, T> KeyQueues<K, T> {
    /// Appends `item`; returns true when the key was idle, so the caller must start a runner.
    pub fn push(&mut self, key: K, item: T) -> bool {
        match self.queues.get_mut(&key) {
            Some(queue) => {
                queue.push_back(item);
                false
            }
            None => {
                self.queues.insert(key, VecDeque::from([item]));
                true
            }
        }
    }

    /// The runner's next item; `None` retires the runner and makes the key idle again.
    pub fn next(&mut self, key: &K) -> Option<T> {
        let queue = self.queues.get_mut(key)?;
        match queue.pop_front() {
            Some(item) => Some(item),
            None => {
                self.queues.remove(key);
                None
            }
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
    fn one_runner_per_key_drains_its_queue_in_order() {
        let mut q: KeyQueues<&str, i32> = KeyQueues::default();
        assert!(q.push("ann", 1));
        assert!(!q.push("ann", 2));
        assert!(q.push("bob", 10));
        assert!(!q.push("ann", 3));
        assert_eq!(q.next(&"ann"), Some(1));
        assert_eq!(q.next(&"ann"), Some(2));
        assert_eq!(q.next(&"bob"), Some(10));
        assert_eq!(q.next(&"ann"), Some(3));
        assert_eq!(q.next(&"ann"), None);
        assert_eq!(q.active_keys(), 1);
        // The key went idle, so the next push must start a new runner.
        assert!(q.push("ann", 4));
    }
}
