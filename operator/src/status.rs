//! The pipeline's status, assembled from what one reconcile observed: pure (the time of a
//! transition is passed in), with typed condition types and reasons.
//!
//! Three outcomes write a status: a reconcile that got through ([`assemble`]), one that failed
//! on something a person must see ([`failed`]: a Secret, Kafka), and a spec that cannot be
//! reconciled as written ([`invalid`]).

use crate::crd::{Condition, PartitionLagStatus, PipelineStatus};
use crate::scaler::policy::{self, Decision, PartitionStatus};

/// The conditions the status carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    Ready,
    TopicReady,
    IngressReady,
    WorkersReady,
    Scaling,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::TopicReady => "TopicReady",
            ConditionType::IngressReady => "IngressReady",
            ConditionType::WorkersReady => "WorkersReady",
            ConditionType::Scaling => "Scaling",
        }
    }
}

/// Why a condition is what it is: one CamelCase word in the status and in Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    // Spec errors (validation).
    InvalidSpec,
    ResourceConflict,
    ImageNotAllowed,
    /// The API server refused a child built from the spec as invalid.
    ChildRefused,
    // Topics.
    Created,
    Adopted,
    PartitionsIncreased,
    NotSupported,
    TopicConfigRefused,
    // Failures a person must see.
    KafkaUnavailable,
    SecretNotFound,
    Forbidden,
    // Pods.
    Available,
    Unavailable,
    Progressing,
    Unknown,
    // Scaling.
    Scaler(policy::Reason),
    PartitionStalled,
    LagUnavailable,
    NoLagReading,
    // Ready.
    Ready,
    TopicNotReady,
    IngressNotReady,
    WorkersNotReady,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::ResourceConflict => "ResourceConflict",
            Reason::ImageNotAllowed => "ImageNotAllowed",
            Reason::ChildRefused => "ChildRefused",
            Reason::Created => "Created",
            Reason::Adopted => "Adopted",
            Reason::PartitionsIncreased => "PartitionsIncreased",
            Reason::NotSupported => "NotSupported",
            Reason::TopicConfigRefused => "TopicConfigRefused",
            Reason::KafkaUnavailable => "KafkaUnavailable",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::Forbidden => "Forbidden",
            Reason::Available => "Available",
            Reason::Unavailable => "Unavailable",
            Reason::Progressing => "Progressing",
            Reason::Unknown => "Unknown",
            Reason::Scaler(reason) => reason.as_str(),
            Reason::PartitionStalled => "PartitionStalled",
            Reason::LagUnavailable => "LagUnavailable",
            Reason::NoLagReading => "NoLagReading",
            Reason::Ready => "Ready",
            Reason::TopicNotReady => "TopicNotReady",
            Reason::IngressNotReady => "IngressNotReady",
            Reason::WorkersNotReady => "WorkersNotReady",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Where one topic stands after its reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicOutcome {
    pub ready: bool,
    pub reason: Reason,
    pub message: String,
    pub partitions: Option<i32>,
    pub created: bool,
}

/// Everything a reconcile that got through observed.
pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub topic: &'a TopicOutcome,
    pub dead_letter: &'a TopicOutcome,
    pub ingress_available: i32,
    pub ingress_replicas: i32,
    pub workers_ready: i32,
    /// The scaler's latest decision; `None` when lag could not be read.
    pub decision: Option<&'a Decision>,
    /// Why lag could not be read, when it could not.
    pub lag_error: Option<&'a str>,
    pub consumer_group: &'a str,
    /// The ingress Service's webhook address.
    pub webhook_address: &'a str,
    /// The public webhook URL, when exposed.
    pub url: Option<String>,
    /// The raw topic's name.
    pub topic_name: &'a str,
    /// The dead-letter topic's name.
    pub dead_letter_topic_name: &'a str,
    /// Every topic the operator created for the pipeline, this reconcile's included.
    pub created_topics: &'a [String],
    /// The Kafka cluster's id, when Kafka reported one.
    pub kafka_cluster_id: Option<&'a str>,
}

/// The status after a reconcile that got through; `now` (RFC 3339) stamps transitions.
pub fn assemble(previous: &PipelineStatus, observed: &Observed<'_>, now: &str) -> PipelineStatus {
    let generation = observed.generation;
    let (topic, dead_letter) = (observed.topic, observed.dead_letter);
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.partitions = topic.partitions;
    status.topic_created = Some(topic.created);
    status.dead_letter_topic_created = Some(dead_letter.created);
    status.created_topics = Some(observed.created_topics.to_vec());
    status.topic = Some(observed.topic_name.to_string());
    status.webhook_address = Some(observed.webhook_address.to_string());
    status.url = observed.url.clone();
    status.dead_letter_topic = Some(observed.dead_letter_topic_name.to_string());
    status.consumer_group = Some(observed.consumer_group.to_string());
    if let Some(id) = observed.kafka_cluster_id {
        status.kafka_cluster_id = Some(id.to_string());
    }
    status.current_workers = Some(observed.workers_ready);
    let mut conditions = Conditions::new(
        &mut status.conditions,
        &previous.conditions,
        generation,
        now,
    );

    let (topic_ready, topic_reason, topic_message) = if !topic.ready {
        (false, topic.reason, topic.message.clone())
    } else if !dead_letter.ready {
        (
            false,
            dead_letter.reason,
            format!("dead-letter topic: {}", dead_letter.message),
        )
    } else if let Some(warning) = kept_partition_warning(&previous.conditions, generation) {
        // Keep the key-remap warning visible for the generation that asked for the increase.
        (true, Reason::PartitionsIncreased, warning)
    } else {
        (true, topic.reason, topic.message.clone())
    };
    conditions.set(
        ConditionType::TopicReady,
        topic_ready,
        topic_reason,
        topic_message,
    );

    let ingress_ready = observed.ingress_available >= 1;
    conditions.set(
        ConditionType::IngressReady,
        ingress_ready,
        if ingress_ready {
            Reason::Available
        } else {
            Reason::Unavailable
        },
        format!(
            "{} of {} ingress pods available",
            observed.ingress_available, observed.ingress_replicas
        ),
    );

    let workers_ready = observed.workers_ready;
    let workers_ok = match observed.decision {
        Some(decision) => {
            let desired = i32::try_from(decision.desired).unwrap_or(i32::MAX);
            let workers_ok = workers_ready >= desired;
            conditions.set(
                ConditionType::WorkersReady,
                workers_ok,
                if workers_ok {
                    Reason::Available
                } else {
                    Reason::Progressing
                },
                format!("{workers_ready} of {desired} workers ready"),
            );
            let stalled = decision
                .partitions
                .iter()
                .any(|p| p.status == PartitionStatus::Stalled);
            // A pause or a saturated sink says more than a stall: it is why nothing moves.
            let reason = if decision.held() || !stalled {
                Reason::Scaler(decision.reason)
            } else {
                Reason::PartitionStalled
            };
            conditions.set(
                ConditionType::Scaling,
                !stalled && !decision.held(),
                reason,
                decision.message.clone(),
            );
            workers_ok
        }
        None => {
            let workers_ok = workers_ready >= 1;
            conditions.set(
                ConditionType::WorkersReady,
                workers_ok,
                Reason::Unknown,
                format!("{workers_ready} workers ready; no lag reading to size the pool"),
            );
            match observed.lag_error {
                Some(error) => conditions.set(
                    ConditionType::Scaling,
                    false,
                    Reason::LagUnavailable,
                    format!(
                        "cannot read the lag of group {}: {error}",
                        observed.consumer_group
                    ),
                ),
                None => conditions.set(
                    ConditionType::Scaling,
                    false,
                    Reason::NoLagReading,
                    "lag could not be read yet",
                ),
            }
            workers_ok
        }
    };

    let all_ready = topic_ready && ingress_ready && workers_ok;
    let (ready_reason, ready_message) = if all_ready {
        (Reason::Ready, "topic, ingress and workers are ready")
    } else if !topic_ready {
        (
            Reason::TopicNotReady,
            "the topic is not ready; see TopicReady",
        )
    } else if !ingress_ready {
        (Reason::IngressNotReady, "no ingress pod is available yet")
    } else {
        (Reason::WorkersNotReady, "the workers are not ready yet")
    };
    conditions.set(ConditionType::Ready, all_ready, ready_reason, ready_message);

    if let Some(decision) = observed.decision {
        status.desired_workers = Some(i32::try_from(decision.desired).unwrap_or(i32::MAX));
        status.total_lag = Some(i64::try_from(decision.total_lag).unwrap_or(i64::MAX));
        status.time_lag_seconds = time_lag_seconds(decision);
        status.worst_partition = decision.worst.map(|(partition, _)| partition);
        status.drain_rate = decision.drain_rate.map(per_second);
        status.arrival_rate = decision.arrival_rate.map(per_second);
        status.drain_rate_per_worker = decision.per_replica_rate.map(per_second);
        status.partition_lag = partition_states(&previous.partition_lag, decision);
    }
    status
}

/// Most partitions listed in `status.partitionLag`; the rest are counted in the metrics only.
pub const MAX_PARTITIONS_IN_STATUS: usize = 20;

/// The partitions that are behind (`Lagging` or `Stalled`), worst first, at most
/// [`MAX_PARTITIONS_IN_STATUS`]. Written afresh only when that list of partitions and states
/// changes; otherwise the entries written at the last change stay, so a partition's figures in
/// the status are those of its latest change of state and a steady backlog does not rewrite the
/// status every poll (the current figures are in the metrics).
fn partition_states(
    previous: &[PartitionLagStatus],
    decision: &Decision,
) -> Vec<PartitionLagStatus> {
    let mut behind: Vec<_> = decision
        .partitions
        .iter()
        .filter(|p| p.status != PartitionStatus::Ok)
        .collect();
    behind.sort_by(|a, b| b.lag.cmp(&a.lag).then(a.partition.cmp(&b.partition)));
    behind.truncate(MAX_PARTITIONS_IN_STATUS);
    let mut states: Vec<_> = behind
        .iter()
        .map(|p| (p.partition, p.status.as_str()))
        .collect();
    let mut before: Vec<_> = previous
        .iter()
        .map(|p| (p.partition, p.status.as_str()))
        .collect();
    states.sort_unstable();
    before.sort_unstable();
    if states == before {
        return previous.to_vec();
    }
    behind
        .into_iter()
        .map(|p| PartitionLagStatus {
            partition: p.partition,
            lag: i64::try_from(p.lag).unwrap_or(i64::MAX),
            status: p.status.as_str().into(),
            time_lag_seconds: p.time_lag.map(seconds),
            drain_rate: p.drain_rate.map(per_second),
        })
        .collect()
}

/// The pipeline's delay: the worst partition's, 0 when every partition is caught up, absent when
/// a partition with lag had no age read.
fn time_lag_seconds(decision: &Decision) -> Option<i64> {
    match decision.worst {
        Some((_, age)) => Some(seconds(age)),
        None if decision.partitions.iter().all(|p| p.time_lag.is_some()) => Some(0),
        None => None,
    }
}

fn seconds(age: std::time::Duration) -> i64 {
    i64::try_from(age.as_secs()).unwrap_or(i64::MAX)
}

/// A rate rounded to whole records per second.
fn per_second(rate: f64) -> i64 {
    if rate.is_finite() {
        rate.round() as i64
    } else {
        0
    }
}

/// The status after a failure a person must see: `condition` turns False with `reason` and
/// the error as message, and Ready follows; the rest stays as it was.
pub fn failed(
    previous: &PipelineStatus,
    generation: Option<i64>,
    condition: ConditionType,
    reason: Reason,
    message: &str,
    now: &str,
) -> PipelineStatus {
    let ready_reason = match condition {
        _ if reason == Reason::ResourceConflict => Reason::ResourceConflict,
        ConditionType::TopicReady => Reason::TopicNotReady,
        ConditionType::IngressReady => Reason::IngressNotReady,
        _ => Reason::WorkersNotReady,
    };
    conditions_only(previous, generation, now, |conditions| {
        conditions.set(condition, false, reason, message);
        conditions.set(
            ConditionType::Ready,
            false,
            ready_reason,
            format!("{}: {message}", condition.as_str()),
        );
    })
}

/// The status of a spec that cannot be reconciled as written: Ready=False with the reason; a
/// topic claimed by another pipeline also turns TopicReady False.
pub fn invalid(
    previous: &PipelineStatus,
    generation: Option<i64>,
    reason: Reason,
    message: &str,
    now: &str,
) -> PipelineStatus {
    conditions_only(previous, generation, now, |conditions| {
        conditions.set(ConditionType::Ready, false, reason, message);
        if reason == Reason::ResourceConflict {
            conditions.set(ConditionType::TopicReady, false, reason, message);
        }
    })
}

/// The previous status at `generation`, with only the conditions `set` changes.
fn conditions_only(
    previous: &PipelineStatus,
    generation: Option<i64>,
    now: &str,
    set: impl FnOnce(&mut Conditions<'_>),
) -> PipelineStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    set(&mut Conditions::new(
        &mut status.conditions,
        &previous.conditions,
        generation,
        now,
    ));
    status
}

/// The warning of a partition increase made for this generation, if the previous status has it.
fn kept_partition_warning(previous: &[Condition], generation: Option<i64>) -> Option<String> {
    previous
        .iter()
        .find(|c| {
            c.type_ == ConditionType::TopicReady.as_str()
                && c.reason == Reason::PartitionsIncreased.as_str()
                && c.observed_generation == generation
        })
        .map(|c| c.message.clone())
}

/// The conditions being written, against the ones read.
struct Conditions<'a> {
    conditions: &'a mut Vec<Condition>,
    previous: &'a [Condition],
    generation: Option<i64>,
    now: &'a str,
}

impl<'a> Conditions<'a> {
    fn new(
        conditions: &'a mut Vec<Condition>,
        previous: &'a [Condition],
        generation: Option<i64>,
        now: &'a str,
    ) -> Self {
        Conditions {
            conditions,
            previous,
            generation,
            now,
        }
    }

    /// Sets one condition, keeping its transition time when its status did not change.
    fn set(
        &mut self,
        type_: ConditionType,
        ready: bool,
        reason: Reason,
        message: impl Into<String>,
    ) {
        let type_ = type_.as_str();
        let status = if ready { "True" } else { "False" };
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .or_else(|| Some(self.now.to_string()));
        self.conditions.retain(|c| c.type_ != type_);
        self.conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.as_str().into(),
            message: message.into(),
            last_transition_time,
            observed_generation: self.generation,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaler::policy::{PartitionLag, Reason as PolicyReason};

    fn decision(partitions: &[(i32, u64, PartitionStatus)]) -> Decision {
        Decision {
            desired: 1,
            recommendation: 1,
            total_lag: partitions.iter().map(|p| p.1).sum(),
            scaling_lag: 0,
            partitions: partitions
                .iter()
                .map(|&(partition, lag, status)| PartitionLag {
                    partition,
                    lag,
                    status,
                    time_lag: Some(std::time::Duration::from_secs(lag)),
                    drain_rate: None,
                })
                .collect(),
            drain_rate: None,
            arrival_rate: None,
            per_replica_rate: None,
            worst: None,
            reason: PolicyReason::Steady,
            message: String::new(),
        }
    }

    fn listed(entries: &[PartitionLagStatus]) -> Vec<(i32, i64, &str)> {
        entries
            .iter()
            .map(|p| (p.partition, p.lag, p.status.as_str()))
            .collect()
    }

    #[test]
    fn only_partitions_behind_are_listed_worst_first() {
        use PartitionStatus::*;
        let now = decision(&[(0, 0, Ok), (1, 50, Lagging), (2, 900, Stalled), (3, 70, Ok)]);
        assert_eq!(
            listed(&partition_states(&[], &now)),
            [(2, 900, "Stalled"), (1, 50, "Lagging")]
        );
    }

    #[test]
    fn the_list_is_bounded() {
        let many: Vec<_> = (0..64)
            .map(|p| (p, 10 + p as u64, PartitionStatus::Lagging))
            .collect();
        let entries = partition_states(&[], &decision(&many));
        assert_eq!(entries.len(), MAX_PARTITIONS_IN_STATUS);
        assert_eq!(entries[0].partition, 63, "the worst partition comes first");
    }

    #[test]
    fn figures_are_rewritten_only_when_a_state_changes() {
        use PartitionStatus::*;
        let first = partition_states(&[], &decision(&[(1, 50, Lagging), (2, 900, Stalled)]));
        // More lag, same states: what was written stays, so the status needs no write.
        let steady = partition_states(&first, &decision(&[(1, 80, Lagging), (2, 950, Stalled)]));
        assert_eq!(steady, first);
        // Partition 1 stalls: the list is written afresh with this poll's figures.
        let changed = partition_states(&steady, &decision(&[(1, 90, Stalled), (2, 990, Stalled)]));
        assert_eq!(listed(&changed), [(2, 990, "Stalled"), (1, 90, "Stalled")]);
        // Everything caught up: nothing listed.
        let caught_up = partition_states(&changed, &decision(&[(1, 0, Ok), (2, 0, Ok)]));
        assert!(caught_up.is_empty());
    }
}
