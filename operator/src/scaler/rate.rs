//! Drain rate and capacity, measured from successive committed offsets: pure bookkeeping that
//! the [`super::policy`] keeps in its state between polls.
//!
//! The drain rate is what the group committed per second since the previous poll; the arrival
//! rate is the drain rate plus the growth of the lag. A drain rate is a capacity only while the
//! workers had work throughout the interval (a backlog of at least [`BACKLOG_FOR_CAPACITY`] of
//! draining at both polls) at a replica count that had not changed for [`SETTLE`] before the
//! interval began (pods starting or a rebalance would make it look lower than it is). Capacities are remembered per replica
//! count for [`CAPACITY_MEMORY`]: they are what tells "more workers drain faster" from "the sink
//! is the bottleneck".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::policy::PartitionOffsets;

/// How much backlog, in seconds of draining, the group must have had at both ends of an
/// interval for its drain rate to count as its capacity.
pub const BACKLOG_FOR_CAPACITY: Duration = Duration::from_secs(1);

/// How long a capacity measurement is trusted. After it a held scale-up is tried again: the
/// sink may have been given more room.
pub const CAPACITY_MEMORY: Duration = Duration::from_secs(600);

/// How long before an interval the replica count must have been the same for the interval's
/// drain rate to count as a capacity: new pods start and the group rebalances within it.
pub const SETTLE: Duration = Duration::from_secs(30);

/// The previous poll, as the rates need it.
#[derive(Clone, Debug, PartialEq)]
pub struct PreviousPoll {
    pub at: Instant,
    pub total_lag: u64,
    pub replicas: u32,
}

/// What the rate bookkeeping remembers between polls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateMemory {
    pub previous: Option<PreviousPoll>,
    /// When the replica count last changed (the first poll counts as a change).
    pub count_since: Option<Instant>,
    /// Total drain rate (records/s) measured while backlogged, by replica count, and when.
    pub capacity: BTreeMap<u32, (Instant, f64)>,
}

/// Rates over the interval since the previous poll.
#[derive(Clone, Debug, PartialEq)]
pub struct Rates {
    /// Records/s committed, per partition that had a commit at both polls.
    pub per_partition: BTreeMap<i32, f64>,
    /// Records/s committed by the whole group.
    pub drain: f64,
    /// Records/s produced: the drain rate plus the growth of the lag.
    pub arrival: f64,
}

/// The rates since the previous poll, `None` at the first poll or when no time passed.
pub fn measure(
    previous_committed: &BTreeMap<i32, i64>,
    previous: Option<&PreviousPoll>,
    offsets: &[PartitionOffsets],
    total_lag: u64,
    now: Instant,
) -> Option<Rates> {
    let previous = previous?;
    let seconds = now.saturating_duration_since(previous.at).as_secs_f64();
    if seconds <= 0.0 {
        return None;
    }
    let per_partition: BTreeMap<i32, f64> = offsets
        .iter()
        .filter_map(|p| {
            let before = *previous_committed.get(&p.partition)?;
            let now = p.committed?;
            // An offset moved back (a replay) drained nothing.
            Some((p.partition, (now - before).max(0) as f64 / seconds))
        })
        .collect();
    let drain: f64 = per_partition.values().sum();
    let growth = (total_lag as f64 - previous.total_lag as f64) / seconds;
    Some(Rates {
        per_partition,
        drain,
        arrival: (drain + growth).max(0.0),
    })
}

impl RateMemory {
    /// Records this poll: counts stable polls, keeps a capacity measured while backlogged and
    /// forgets old ones.
    pub fn record(&mut self, rates: Option<&Rates>, total_lag: u64, replicas: u32, now: Instant) {
        let same = self
            .previous
            .as_ref()
            .is_some_and(|p| p.replicas == replicas);
        if !same {
            self.count_since = Some(now);
        }
        if let (Some(rates), Some(previous), Some(since)) =
            (rates, &self.previous, self.count_since)
        {
            let backlog = rates.drain * BACKLOG_FOR_CAPACITY.as_secs_f64();
            let backlogged = rates.drain > 0.0
                && (previous.total_lag as f64) >= backlog
                && (total_lag as f64) >= backlog;
            let settled = previous.at.saturating_duration_since(since) >= SETTLE;
            if replicas > 0 && same && settled && backlogged {
                self.capacity.insert(replicas, (now, rates.drain));
            }
        }
        self.capacity
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < CAPACITY_MEMORY);
        self.previous = Some(PreviousPoll {
            at: now,
            total_lag,
            replicas,
        });
    }

    /// Records/s one replica drains: measured at `replicas` if known, else at the closest
    /// count measured.
    pub fn per_replica(&self, replicas: u32) -> Option<f64> {
        self.capacity
            .iter()
            .min_by_key(|(count, _)| count.abs_diff(replicas))
            .map(|(count, (_, rate))| rate / f64::from(*count))
    }

    /// Where more replicas stopped draining faster, if they did: the fewest replicas that
    /// drain within 10 % of the best rate measured, when a higher count was measured too and
    /// drained no more than that.
    pub fn useful_replicas(&self) -> Option<SinkLimit> {
        let best = self
            .capacity
            .values()
            .map(|(_, rate)| *rate)
            .fold(0.0, f64::max);
        let (&useful, &(_, useful_rate)) = self
            .capacity
            .iter()
            .find(|(_, (_, rate))| *rate * 1.1 >= best)?;
        let (&tried, &(_, tried_rate)) = self.capacity.iter().next_back()?;
        (tried > useful).then_some(SinkLimit {
            useful,
            useful_rate,
            tried,
            tried_rate,
        })
    }
}

/// More replicas that did not drain faster: the sink (or one hot partition) is the bottleneck.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinkLimit {
    /// The fewest replicas that drain as fast as any count measured.
    pub useful: u32,
    pub useful_rate: f64,
    /// The most replicas measured, and what they drained.
    pub tried: u32,
    pub tried_rate: f64,
}

/// How many partitions' oldest records are read per poll at most: the ones with the most lag
/// first. Reading one record costs a fetch per partition leader; a topic of thousands of
/// partitions must not cost thousands of fetches per poll.
pub const MAX_RECORD_READS: usize = 32;

/// Timestamps of the records at the partitions' read positions, kept while a position stays:
/// a stalled partition's oldest record is read once, and its age still grows every poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordTimes {
    /// Partition → (position, the record's timestamp in ms since the epoch).
    known: BTreeMap<i32, (i64, i64)>,
}

/// Where the group reads next in a partition: its committed offset, or the log start when it
/// has none or it was deleted by retention.
fn position(p: &PartitionOffsets) -> i64 {
    p.committed.unwrap_or(p.log_start).max(p.log_start)
}

impl RecordTimes {
    /// Forgets partitions whose position moved or that have no lag any more, and returns the
    /// positions still to read: partitions with lag and no known timestamp, most lag first, at
    /// most `limit`.
    pub fn to_read(&mut self, offsets: &[PartitionOffsets], limit: usize) -> Vec<(i32, i64)> {
        self.known.retain(|partition, (at, _)| {
            offsets
                .iter()
                .any(|p| p.partition == *partition && p.lag() > 0 && position(p) == *at)
        });
        let mut wanted: Vec<&PartitionOffsets> = offsets
            .iter()
            .filter(|p| p.lag() > 0 && !self.known.contains_key(&p.partition))
            .collect();
        wanted.sort_by_key(|p| std::cmp::Reverse(p.lag()));
        wanted
            .into_iter()
            .take(limit)
            .map(|p| (p.partition, position(p)))
            .collect()
    }

    /// Keeps what was read: partition → (position read, timestamp).
    pub fn learn(&mut self, read: impl IntoIterator<Item = (i32, (i64, i64))>) {
        self.known.extend(read);
    }

    /// Ages of the oldest unconsumed records at `now_ms`, for the partitions with a known
    /// timestamp (a timestamp ahead of the clock counts as 0 s).
    pub fn ages(&self, now_ms: i64) -> BTreeMap<i32, Duration> {
        self.known
            .iter()
            .map(|(&partition, &(_, timestamp))| {
                let millis = u64::try_from(now_ms.saturating_sub(timestamp)).unwrap_or(0);
                (partition, Duration::from_millis(millis))
            })
            .collect()
    }
}
