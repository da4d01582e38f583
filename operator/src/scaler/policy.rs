//! The lag-driven scaling policy: a pure function from offsets to a replica count.
//!
//! It has no Kubernetes or Kafka dependency so that both the operator (worker Deployment) and the
//! local mode (`wapipe up`, a pool of processes) make the very same decisions. The caller reads
//! offsets, passes `now` in and keeps a [`PolicyState`] between polls; nothing in here reads a
//! clock.
//!
//! Rules (DESIGN.md, "Scaling"), chosen to avoid KEDA's known failures:
//! - `desired = clamp(ceil(lag / lag_per_replica), min, min(max, partitions))`, the cap applied
//!   after the ceiling, so the count never goes one above the partitions (KEDA #4483) and is never
//!   held one short of them by a tolerance band (KEDA #2908);
//! - a partition with no committed offset counts only what it retains, `log_end − log_start`, so a
//!   new group on an idle topic shows no phantom lag (KEDA #2612, #7936);
//! - scale up at once; scale down only to the highest recommendation within the window;
//! - with scale to zero, zero replicas while total lag ≤ the activation lag, and back to at least
//!   one as soon as it is exceeded;
//! - a partition whose committed offset has not moved for `stall_polls` polls while it has lag is
//!   reported as stalled (Burrow's STALL; usually a poison event) and its lag is not scaled for.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    pub lag: u64,
    pub status: PartitionStatus,
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
        }
    }
}

/// The outcome of one poll.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub reason: Reason,
    pub message: String,
}

/// What the policy remembers between polls. Plain data: keep one per consumer group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// Recommendations within the scale-down window, oldest first.
    pub history: VecDeque<(Instant, u32)>,
    /// Committed offsets seen at the previous poll.
    pub previous_committed: BTreeMap<i32, i64>,
    /// Consecutive polls each partition's committed offset stayed put while it had lag.
    pub unchanged_polls: BTreeMap<i32, u32>,
}

/// Decides the replica count for this poll and updates `state` for the next one.
pub fn decide(
    config: &PolicyConfig,
    state: &mut PolicyState,
    offsets: &[PartitionOffsets],
    current_replicas: u32,
    now: Instant,
) -> Decision {
    let partitions = classify(config, state, offsets, current_replicas);
    let total_lag: u64 = partitions.iter().map(|p| p.lag).sum();
    let scaling_lag: u64 = partitions
        .iter()
        .filter(|p| p.status != PartitionStatus::Stalled)
        .map(|p| p.lag)
        .sum();

    if offsets.is_empty() {
        return Decision {
            desired: current_replicas,
            recommendation: current_replicas,
            total_lag,
            scaling_lag,
            partitions,
            reason: Reason::NoPartitions,
            message: "no partitions reported for the topic; replicas unchanged".into(),
        };
    }

    let cap = config
        .max_replicas
        .min(u32::try_from(offsets.len()).unwrap_or(u32::MAX));
    let active = total_lag > config.activation_lag;
    let floor = if config.scale_to_zero && !active {
        0
    } else {
        config.min_replicas.max(1)
    };
    let per_replica = config.lag_per_replica.max(1);
    let wanted = u32::try_from(scaling_lag.div_ceil(per_replica)).unwrap_or(u32::MAX);
    let wanted = if config.scale_to_zero && !active {
        0
    } else {
        wanted
    };
    // The cap comes last: a floor above the partition count would only add idle consumers.
    let recommendation = wanted.max(floor).min(cap);

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

    let (desired, reason) = if recommendation > current_replicas {
        let reason = if current_replicas == 0 {
            Reason::Activated
        } else {
            Reason::ScaledUp
        };
        (recommendation, reason)
    } else if recommendation == current_replicas {
        (current_replicas, Reason::Steady)
    } else {
        let stabilized = highest_in_window.min(current_replicas).min(cap);
        if stabilized == current_replicas {
            (current_replicas, Reason::ScaleDownDelayed)
        } else if stabilized == 0 {
            (0, Reason::ScaledToZero)
        } else {
            (stabilized, Reason::ScaledDown)
        }
    };

    let stalled = partitions
        .iter()
        .filter(|p| p.status == PartitionStatus::Stalled)
        .count();
    let mut message = format!(
        "lag {total_lag} over {} partitions ({scaling_lag} counted for scaling), \
         {per_replica} per replica: recommend {recommendation}, run {desired} (cap {cap})",
        offsets.len()
    );
    if stalled > 0 {
        message.push_str(&format!(
            "; {stalled} partition(s) stalled, likely a poison event"
        ));
    }
    Decision {
        desired,
        recommendation,
        total_lag,
        scaling_lag,
        partitions,
        reason,
        message,
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
            }
        })
        .collect();
    state.previous_committed = previous;
    state.unchanged_polls = unchanged;
    result
}
