//! The lag-driven scaling policy: a pure function from offsets to a replica count.
//!
//! It has no Kubernetes or Kafka dependency so that both the operator (worker Deployment) and the
//! local mode (`wapipe up`, a pool of processes) make the very same decisions. The caller reads
//! offsets (and, where it can, the age of each partition's oldest unconsumed record), passes
//! `now` in and keeps a [`PolicyState`] between polls; nothing in here reads a clock.
//!
//! Rules (docs/scaling.md explains each with figures), chosen to avoid KEDA's known failures:
//! - `desired = clamp(ceil(lag / lag_per_replica), min, min(max, partitions))`, the cap applied
//!   after the ceiling, so the count never goes one above the partitions (KEDA #4483) and is never
//!   held one short of them by a tolerance band (KEDA #2908);
//! - a partition with no committed offset counts only what it retains, `log_end − log_start`, so a
//!   new group on an idle topic shows no phantom lag (KEDA #2612, #7936);
//! - scale up at once; scale down only to the highest recommendation within the window;
//! - with scale to zero, zero replicas while total lag ≤ the activation lag, and back to at least
//!   one as soon as it is exceeded;
//! - a partition whose committed offset has not moved for `stall_polls` polls while it has lag is
//!   reported as stalled (Burrow's STALL; usually a poison event) and its lag is not scaled for;
//! - with a delay target (`max_delay`) and a measured per-replica drain rate ([`super::rate`]),
//!   the count is what drains the backlog within the target while keeping up with arrivals,
//!   `ceil((arrival + lag / max_delay) / per_replica)`, within 10 % of the running capacity
//!   counting as enough: a group catching up in time is left alone however large its offset lag,
//!   and one falling behind is scaled before its lag reaches an offset threshold. Without a rate
//!   yet, the offset rule above decides;
//! - no scale-up into a saturated sink: when a count was measured draining no more than 10 %
//!   above a lower count's rate, the recommendation is capped at the fewest workers that drain
//!   as fast as any count measured (`SinkSaturated`; the pool comes down to it after the
//!   window), and when the group committed nothing over a poll while it had lag and workers,
//!   the count is held: more consumers would only add load to a database that is already the
//!   bottleneck. Measurements expire ([`super::rate::CAPACITY_MEMORY`]), so a sink given more
//!   room is found again;
//! - a pause (an annotation on the pipeline) freezes the count at the current or a given value;
//!   everything is still measured and reported.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::rate::{self, RateMemory};

/// Offsets of one partition as read from the broker at one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    /// The group's committed offset, `None` when the group has never committed here.
    pub committed: Option<i64>,
    /// The earliest offset the broker still retains (low watermark).
    pub log_start: i64,
    /// The offset the next record will get (high watermark).
    pub log_end: i64,
}

impl PartitionOffsets {
    /// Lag in offsets: what the group still has to read of what the broker retains.
    pub fn lag(&self) -> u64 {
        let from = match self.committed {
            Some(committed) => committed.max(self.log_start),
            None => self.log_start,
        };
        u64::try_from(self.log_end.saturating_sub(from)).unwrap_or(0)
    }
}

/// Tunables of the policy; [`PolicyConfig::default`] matches the CRD defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Lowest replica count while active (raised to 1 unless `scale_to_zero`).
    pub min_replicas: u32,
    /// Highest replica count; the partition count caps it further.
    pub max_replicas: u32,
    /// Lag one replica is expected to carry.
    pub lag_per_replica: u64,
    /// How long a lower recommendation must persist before replicas go down.
    pub scale_down_window: Duration,
    /// With `scale_to_zero`, total lag above this value activates the pool.
    pub activation_lag: u64,
    /// Whether the pool may go to zero replicas while idle.
    pub scale_to_zero: bool,
    /// Polls without a commit movement, with lag, after which a partition counts as stalled.
    pub stall_polls: u32,
    /// Delay target: the age of the oldest unconsumed record the pool is sized to keep under.
    pub max_delay: Option<Duration>,
    /// A frozen replica count, when scaling is paused.
    pub pause: Option<Pause>,
}

/// Where a paused scaler holds the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// At whatever runs when the pause is seen.
    Current,
    /// At this count (0 empties the group, e.g. for a replay).
    At(u32),
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            min_replicas: 1,
            max_replicas: 12,
            lag_per_replica: 1000,
            scale_down_window: Duration::from_secs(300),
            activation_lag: 0,
            scale_to_zero: false,
            stall_polls: 6,
            max_delay: None,
            pause: None,
        }
    }
}

/// Health of one partition in Burrow's spirit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartitionStatus {
    /// No lag, or the group is moving through it.
    Ok,
    /// Lag without progress for fewer than `stall_polls` polls, or no commit yet.
    Lagging,
    /// Lag and a committed offset that has not moved for `stall_polls` polls while workers run.
    Stalled,
}

impl PartitionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionStatus::Ok => "Ok",
            PartitionStatus::Lagging => "Lagging",
            PartitionStatus::Stalled => "Stalled",
        }
    }
}

/// Lag and status of one partition at this poll.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartitionLag {
    pub partition: i32,
    pub lag: u64,
    pub status: PartitionStatus,
    /// Age of the oldest unconsumed record: zero without lag, `None` when not read.
    pub time_lag: Option<Duration>,
    /// Records/s the group committed here since the previous poll.
    pub drain_rate: Option<f64>,
}

/// Why the decision is what it is: one CamelCase word for conditions and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Replicas stay as they are.
    Steady,
    /// More lag than the current replicas carry: up at once.
    ScaledUp,
    /// The window held only lower recommendations: down to the highest of them.
    ScaledDown,
    /// A lower recommendation is waiting for the scale-down window.
    ScaleDownDelayed,
    /// Idle with scale to zero: no replicas.
    ScaledToZero,
    /// Total lag exceeded the activation lag while at zero.
    Activated,
    /// The topic reported no partitions: nothing to decide on, replicas kept.
    NoPartitions,
    /// More replicas would not drain faster (or the sink is failing): scale-up held.
    SinkSaturated,
    /// Scaling is paused by annotation: replicas frozen.
    Paused,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Steady => "Steady",
            Reason::ScaledUp => "ScaledUp",
            Reason::ScaledDown => "ScaledDown",
            Reason::ScaleDownDelayed => "ScaleDownDelayed",
            Reason::ScaledToZero => "ScaledToZero",
            Reason::Activated => "Activated",
            Reason::NoPartitions => "NoPartitions",
            Reason::SinkSaturated => "SinkSaturated",
            Reason::Paused => "Paused",
        }
    }
}

/// The outcome of one poll.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Replicas to run now.
    pub desired: u32,
    /// What this poll alone recommends, before the scale-down window.
    pub recommendation: u32,
    /// Lag over every partition, stalled ones included.
    pub total_lag: u64,
    /// Lag the recommendation was computed from (stalled partitions excluded).
    pub scaling_lag: u64,
    pub partitions: Vec<PartitionLag>,
    /// Records/s the group committed since the previous poll.
    pub drain_rate: Option<f64>,
    /// Records/s produced since the previous poll (drain rate plus lag growth).
    pub arrival_rate: Option<f64>,
    /// Records/s one replica drains, as measured while backlogged.
    pub per_replica_rate: Option<f64>,
    /// The partition whose oldest unconsumed record is oldest, and that record's age.
    pub worst: Option<(i32, Duration)>,
    pub reason: Reason,
    pub message: String,
}

impl Decision {
    /// Whether scaling is held back (paused, or a saturated sink): `Scaling=False`.
    pub fn held(&self) -> bool {
        matches!(self.reason, Reason::Paused | Reason::SinkSaturated)
    }
}

/// What the policy remembers between polls. Plain data: keep one per consumer group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyState {
    /// Recommendations within the scale-down window, oldest first.
    pub history: VecDeque<(Instant, u32)>,
    /// Committed offsets seen at the previous poll.
    pub previous_committed: BTreeMap<i32, i64>,
    /// Consecutive polls each partition's committed offset stayed put while it had lag.
    pub unchanged_polls: BTreeMap<i32, u32>,
    /// Drain rates and capacities measured so far.
    pub rates: RateMemory,
    /// The count the previous poll decided: a hold for a failing sink keeps it even when
    /// someone scaled the Deployment below it by hand.
    pub last_desired: Option<u32>,
}

/// Decides the replica count for this poll and updates `state` for the next one, from offsets
/// alone (no record ages known).
pub fn decide(
    config: &PolicyConfig,
    state: &mut PolicyState,
    offsets: &[PartitionOffsets],
    current_replicas: u32,
    now: Instant,
) -> Decision {
    decide_timed(
        config,
        state,
        offsets,
        &BTreeMap::new(),
        current_replicas,
        now,
    )
}

/// [`decide`], with `ages`: per partition with lag, the age of the record at its committed
/// offset (the oldest unconsumed one). Partitions without lag are 0 s whatever `ages` says.
pub fn decide_timed(
    config: &PolicyConfig,
    state: &mut PolicyState,
    offsets: &[PartitionOffsets],
    ages: &BTreeMap<i32, Duration>,
    current_replicas: u32,
    now: Instant,
) -> Decision {
    let total_lag: u64 = offsets.iter().map(PartitionOffsets::lag).sum();
    let rates = rate::measure(
        &state.previous_committed,
        state.rates.previous.as_ref(),
        offsets,
        total_lag,
        now,
    );
    let had_lag = state
        .rates
        .previous
        .as_ref()
        .is_some_and(|p| p.total_lag > 0);
    state
        .rates
        .record(rates.as_ref(), total_lag, current_replicas, now);
    let mut partitions = classify(config, state, offsets, current_replicas);
    for partition in &mut partitions {
        partition.time_lag = if partition.lag == 0 {
            Some(Duration::ZERO)
        } else {
            ages.get(&partition.partition).copied()
        };
        partition.drain_rate = rates
            .as_ref()
            .and_then(|r| r.per_partition.get(&partition.partition).copied());
    }
    let worst = partitions
        .iter()
        .filter_map(|p| Some((p.partition, p.time_lag?)))
        .max_by_key(|&(_, age)| age)
        .filter(|&(_, age)| age > Duration::ZERO);
    let scaling_lag: u64 = partitions
        .iter()
        .filter(|p| p.status != PartitionStatus::Stalled)
        .map(|p| p.lag)
        .sum();
    let per_replica_rate = state.rates.per_replica(current_replicas);
    let mut decision = Decision {
        desired: current_replicas,
        recommendation: current_replicas,
        total_lag,
        scaling_lag,
        partitions,
        drain_rate: rates.as_ref().map(|r| r.drain),
        arrival_rate: rates.as_ref().map(|r| r.arrival),
        per_replica_rate,
        worst,
        reason: Reason::NoPartitions,
        message: "no partitions reported for the topic; replicas unchanged".into(),
    };
    if offsets.is_empty() {
        return decision;
    }

    let cap = config
        .max_replicas
        .min(u32::try_from(offsets.len()).unwrap_or(u32::MAX));
    let active = total_lag > config.activation_lag;
    let idle_at_zero = config.scale_to_zero && !active;
    let floor = if idle_at_zero {
        0
    } else {
        config.min_replicas.max(1)
    };
    let per_replica = config.lag_per_replica.max(1);
    let by_delay = match (config.max_delay, &rates, per_replica_rate) {
        (Some(target), Some(rates), Some(rate)) if rate > 0.0 && !idle_at_zero => Some(
            replicas_for_delay(target, rates.arrival, scaling_lag, rate, current_replicas),
        ),
        _ => None,
    };
    let wanted = match by_delay {
        Some(wanted) => wanted,
        None if idle_at_zero => 0,
        None => u32::try_from(scaling_lag.div_ceil(per_replica)).unwrap_or(u32::MAX),
    };
    // The cap comes last: a floor above the partition count would only add idle consumers.
    let wanted = wanted.max(floor).min(cap);
    // More workers than drain faster would only add load to the bottleneck.
    let sink_limit = state.rates.useful_replicas();
    let recommendation = match sink_limit {
        Some(limit) if wanted > limit.useful => limit.useful.max(floor).min(cap),
        _ => wanted,
    };
    let capped_by_sink = recommendation < wanted;

    // Seed the window with what runs now, so a restart of the caller does not scale down at once.
    if state.history.is_empty() {
        state.history.push_back((now, current_replicas.min(cap)));
    }
    state.history.push_back((now, recommendation));
    while let Some(&(at, _)) = state.history.front() {
        if now.saturating_duration_since(at) >= config.scale_down_window {
            state.history.pop_front();
        } else {
            break;
        }
    }
    let highest_in_window = state
        .history
        .iter()
        .map(|&(_, r)| r)
        .max()
        .unwrap_or(recommendation);

    // Workers that committed nothing over a whole poll with lag: more would not help either.
    let sink_failing = current_replicas > 0
        && had_lag
        && total_lag > 0
        && decision.drain_rate == Some(0.0)
        && recommendation > current_replicas;
    let (desired, reason) = if let Some(pause) = config.pause {
        let held = match pause {
            Pause::Current => current_replicas,
            Pause::At(count) => count.min(cap),
        };
        (held, Reason::Paused)
    } else if sink_failing {
        // Held, not added to: but what the scaler itself ran before (a person may have scaled
        // the Deployment down by hand) is put back, as the scaler owns the replicas.
        let held = state
            .last_desired
            .unwrap_or(0)
            .clamp(current_replicas, recommendation.max(current_replicas));
        (held, Reason::SinkSaturated)
    } else if recommendation > current_replicas {
        let reason = if current_replicas == 0 {
            Reason::Activated
        } else {
            Reason::ScaledUp
        };
        (recommendation, reason)
    } else if recommendation == current_replicas {
        let reason = if capped_by_sink {
            Reason::SinkSaturated
        } else {
            Reason::Steady
        };
        (current_replicas, reason)
    } else {
        let stabilized = highest_in_window.min(current_replicas).min(cap);
        if stabilized == current_replicas && capped_by_sink {
            (current_replicas, Reason::SinkSaturated)
        } else if stabilized == current_replicas {
            (current_replicas, Reason::ScaleDownDelayed)
        } else if stabilized == 0 {
            (0, Reason::ScaledToZero)
        } else {
            (stabilized, Reason::ScaledDown)
        }
    };

    let stalled = decision
        .partitions
        .iter()
        .filter(|p| p.status == PartitionStatus::Stalled)
        .count();
    let mut message = match (by_delay, config.max_delay, per_replica_rate) {
        (Some(_), Some(target), Some(rate)) => format!(
            "lag {total_lag} over {} partitions ({scaling_lag} counted for scaling), \
             arriving {:.0}/s, {rate:.0}/s per replica: {} s delay target needs {recommendation}, \
             run {desired} (cap {cap})",
            offsets.len(),
            decision.arrival_rate.unwrap_or(0.0),
            target.as_secs()
        ),
        _ => format!(
            "lag {total_lag} over {} partitions ({scaling_lag} counted for scaling), \
             {per_replica} per replica: recommend {recommendation}, run {desired} (cap {cap})",
            offsets.len()
        ),
    };
    if config.max_delay.is_some() && by_delay.is_none() && !idle_at_zero {
        message.push_str("; no drain rate measured yet, offset lag decides");
    }
    if let Some((partition, age)) = decision.worst {
        message.push_str(&format!(
            "; oldest unconsumed record {}s old (partition {partition})",
            age.as_secs()
        ));
    }
    if stalled > 0 {
        message.push_str(&format!(
            "; {stalled} partition(s) stalled, likely a poison event"
        ));
    }
    if sink_failing {
        message.push_str(&format!(
            "; scale-up held: {current_replicas} worker(s) committed nothing over the last poll \
             with lag {total_lag}, the sink is failing or saturated"
        ));
    } else if let (true, Some(limit)) = (capped_by_sink, sink_limit) {
        message.push_str(&format!(
            "; {wanted} wanted, held at {recommendation}: {} workers drained {:.0}/s, {} \
             drained {:.0}/s, the sink (or a hot partition) is the bottleneck",
            limit.tried, limit.tried_rate, limit.useful, limit.useful_rate
        ));
    }
    if reason == Reason::Paused {
        message.push_str(&format!(
            "; scaling paused: held at {desired} (would run {recommendation})"
        ));
    }
    state.last_desired = Some(desired);
    decision.desired = desired;
    decision.recommendation = recommendation;
    decision.reason = reason;
    decision.message = message;
    decision
}

/// Replicas whose measured drain rate keeps up with arrivals and drains the backlog within
/// `target`; the running count when it is within 10 % of enough (a rate measured at one
/// moment is noisy, and a replica more or less around it would flap).
pub fn replicas_for_delay(
    target: Duration,
    arrival: f64,
    lag: u64,
    per_replica: f64,
    current: u32,
) -> u32 {
    let needed = arrival + lag as f64 / target.as_secs_f64().max(1.0);
    let replicas = needed / per_replica;
    if current > 0 && replicas <= f64::from(current) * 1.1 && replicas > f64::from(current) - 1.0 {
        return current;
    }
    let wanted = replicas.ceil();
    if wanted >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        wanted.max(0.0) as u32
    }
}

fn classify(
    config: &PolicyConfig,
    state: &mut PolicyState,
    offsets: &[PartitionOffsets],
    current_replicas: u32,
) -> Vec<PartitionLag> {
    let mut previous = BTreeMap::new();
    let mut unchanged = BTreeMap::new();
    let result = offsets
        .iter()
        .map(|offsets| {
            let lag = offsets.lag();
            let partition = offsets.partition;
            let status = match offsets.committed {
                _ if lag == 0 => PartitionStatus::Ok,
                None => PartitionStatus::Lagging,
                Some(committed) => {
                    let stayed = state.previous_committed.get(&partition) == Some(&committed);
                    // With no workers nobody can commit: that is idleness, not a stall.
                    let polls = if stayed && current_replicas > 0 {
                        state.unchanged_polls.get(&partition).copied().unwrap_or(0) + 1
                    } else {
                        0
                    };
                    unchanged.insert(partition, polls);
                    if polls >= config.stall_polls.max(1) {
                        PartitionStatus::Stalled
                    } else if stayed {
                        PartitionStatus::Lagging
                    } else {
                        PartitionStatus::Ok
                    }
                }
            };
            if let Some(committed) = offsets.committed {
                previous.insert(partition, committed);
            }
            PartitionLag {
                partition,
                lag,
                status,
                time_lag: None,
                drain_rate: None,
            }
        })
        .collect();
    state.previous_committed = previous;
    state.unchanged_polls = unchanged;
    result
}
