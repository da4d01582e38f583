//! The reconcile's scale step for one pipeline: at most once per poll interval, read the group's
//! offsets, let the pure [`crate::scaler::policy`] decide, export what it saw, keep a scaled-to-zero group's offsets
//! from expiring, and write the worker replicas under [`crate::SCALER_FIELD_MANAGER`] when they
//! change.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::Api;
use serde_json::json;
use tracing::{info, warn};

use crate::build::worker_name;
use crate::crd::WhatsAppWebhookPipeline;
use crate::error::{Error, Result};
use crate::kafka::{read_ages, GroupOffsets, KafkaConnection};
use crate::metrics::{ExportedSeries, PartitionLabels, PipelineLabels, ScalingLabels};
use crate::scaler::policy::{self, Decision, PartitionOffsets, PartitionStatus, PolicyState};
use crate::scaler::rate::RecordTimes;
use crate::services::{key, Services};
use crate::validate::ValidPipeline;

/// What the scaler remembers about one pipeline between reconciles.
#[derive(Debug, Default)]
pub(crate) struct ScalerMemory {
    state: PolicyState,
    last_poll: Option<Instant>,
    last: Option<Decision>,
    /// When the group's offsets were last committed again while it was scaled to zero.
    offsets_kept: Option<Instant>,
    /// Timestamps of the partitions' oldest unconsumed records.
    record_times: RecordTimes,
    /// The metric series exported beyond the per-pipeline ones.
    pub(crate) series: ExportedSeries,
}

/// How often a group scaled to zero has its offsets committed again. Kafka expires an empty
/// group's offsets `offsets.retention.minutes` (7 days by default) after their last commit; a
/// group that lost them would be read again from the earliest retained record. An hour is far
/// inside any retention a cluster would set.
pub const OFFSET_KEEPALIVE: Duration = Duration::from_secs(3600);

/// The committed offsets to commit again now, if the group is at zero workers (and stays
/// there) and the last refresh is older than [`OFFSET_KEEPALIVE`] (or never happened).
pub fn offsets_to_keep(
    running: u32,
    desired: u32,
    last_kept: Option<Instant>,
    now: Instant,
    offsets: &[PartitionOffsets],
) -> Option<Vec<(i32, i64)>> {
    if running != 0 || desired != 0 {
        return None;
    }
    if last_kept.is_some_and(|at| now.duration_since(at) < OFFSET_KEEPALIVE) {
        return None;
    }
    let keep: Vec<(i32, i64)> = offsets
        .iter()
        .filter_map(|p| p.committed.map(|offset| (p.partition, offset)))
        .collect();
    (!keep.is_empty()).then_some(keep)
}

/// One scaler step: at most once per poll interval, read lag, decide, and write replicas under
/// the scaler's field manager when they change. Returns the latest decision, if any.
pub(crate) async fn scale(
    services: &Services,
    memory: &mut ScalerMemory,
    pipeline: &WhatsAppWebhookPipeline,
    valid: &ValidPipeline,
    kafka: &KafkaConnection,
    running: u32,
) -> Result<Option<Decision>> {
    let poll_interval =
        Duration::from_secs(u64::try_from(valid.spec.worker.poll_interval_seconds).unwrap_or(10));
    let pipeline_key = key(pipeline);
    let now = Instant::now();
    // Child events re-trigger reconciles; the policy counts polls, so poll on schedule.
    if memory
        .last_poll
        .is_some_and(|at| now.duration_since(at) < poll_interval)
    {
        return Ok(memory.last.clone());
    }
    let labels = PipelineLabels {
        namespace: valid.namespace.clone(),
        pipeline: valid.name.clone(),
    };
    let metrics = &services.metrics;
    // Counted before the read, so a poll that fails counts too; this poll's number.
    let poll = metrics.lag_polls.get_or_create(&labels).inc() + 1;
    let offsets = services
        .admin
        .read_offsets(kafka, &valid.spec.topic.name, &valid.consumer_group)
        .await
        .map_err(Error::ReadLag)?;
    let ages = read_ages(
        services.admin.as_ref(),
        kafka,
        &valid.spec.topic.name,
        &offsets,
        &mut memory.record_times,
    )
    .await;
    let decision = policy::decide_timed(
        &valid.policy,
        &mut memory.state,
        &offsets,
        &ages,
        running,
        now,
    );
    memory.last_poll = Some(now);
    memory.last = Some(decision.clone());
    // A paused group may be rewound by a replay at any moment: committing what this poll
    // read could undo it.
    let keep = offsets_to_keep(
        running,
        decision.desired,
        memory.offsets_kept,
        now,
        &offsets,
    )
    .filter(|_| valid.policy.pause.is_none());
    if let Some(keep) = keep {
        match services
            .admin
            .keep_offsets(
                kafka,
                GroupOffsets {
                    topic: &valid.spec.topic.name,
                    group: &valid.consumer_group,
                    offsets: &keep,
                },
            )
            .await
        {
            Ok(()) => {
                memory.offsets_kept = Some(now);
                info!(pipeline = %pipeline_key, partitions = keep.len(), "scaled to zero: committed the group's offsets again so they do not expire");
            }
            // Members still leaving, or Kafka unavailable: tried again at the next poll.
            Err(error) => {
                warn!(pipeline = %pipeline_key, %error, "could not commit a scaled-to-zero group's offsets again")
            }
        }
    }
    metrics
        .total_lag
        .get_or_create(&labels)
        .set(i64::try_from(decision.total_lag).unwrap_or(i64::MAX));
    metrics
        .desired_workers
        .get_or_create(&labels)
        .set(i64::from(decision.desired));
    let partitions = u32::try_from(offsets.len()).unwrap_or(u32::MAX);
    metrics
        .max_workers
        .get_or_create(&labels)
        .set(i64::from(valid.policy.max_replicas.min(partitions)));
    for partition in &decision.partitions {
        memory.series.partitions.insert(partition.partition);
        metrics
            .partition_lag
            .get_or_create(&PartitionLabels {
                namespace: valid.namespace.clone(),
                pipeline: valid.name.clone(),
                partition: partition.partition.to_string(),
            })
            .set(i64::try_from(partition.lag).unwrap_or(i64::MAX));
    }
    export_rates(metrics, valid, &decision);
    let stalled = decision
        .partitions
        .iter()
        .filter(|p| p.status == PartitionStatus::Stalled)
        .count();
    metrics
        .stalled_partitions
        .get_or_create(&labels)
        .set(i64::try_from(stalled).unwrap_or(0));

    if decision.desired != running {
        let api: Api<Deployment> = Api::namespaced(services.client.clone(), &valid.namespace);
        let patch = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": worker_name(&valid.name), "namespace": valid.namespace},
            "spec": {"replicas": decision.desired},
        });
        api.patch(
            &worker_name(&valid.name),
            &PatchParams::apply(crate::SCALER_FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::PatchReplicas)?;
        info!(pipeline = %key(pipeline), from = running, to = decision.desired, reason = decision.reason.as_str(), poll, "scaled workers");
        metrics
            .last_scaling_poll
            .get_or_create(&labels)
            .set(i64::try_from(poll).unwrap_or(i64::MAX));
        memory
            .series
            .scaling_reasons
            .insert(decision.reason.as_str());
        metrics
            .scaling_changes
            .get_or_create(&ScalingLabels {
                namespace: valid.namespace.clone(),
                pipeline: valid.name.clone(),
                reason: decision.reason.as_str().into(),
            })
            .inc();
        services
            .publish(
                pipeline,
                EventType::Normal,
                decision.reason.as_str(),
                format!(
                    "workers {running} → {}: {}",
                    decision.desired, decision.message
                ),
            )
            .await;
    }
    Ok(Some(decision))
}

/// The time lag, the rates and whether scaling is held, as metrics.
fn export_rates(metrics: &crate::metrics::Metrics, valid: &ValidPipeline, decision: &Decision) {
    let labels = PipelineLabels {
        namespace: valid.namespace.clone(),
        pipeline: valid.name.clone(),
    };
    let rounded = |rate: f64| rate.round() as i64;
    let worst = decision.worst.map_or(0, |(_, age)| age.as_secs());
    metrics
        .time_lag_seconds
        .get_or_create(&labels)
        .set(i64::try_from(worst).unwrap_or(i64::MAX));
    if let Some(rate) = decision.drain_rate {
        metrics.drain_rate.get_or_create(&labels).set(rounded(rate));
    }
    if let Some(rate) = decision.arrival_rate {
        metrics
            .arrival_rate
            .get_or_create(&labels)
            .set(rounded(rate));
    }
    for partition in &decision.partitions {
        if let Some(age) = partition.time_lag {
            metrics
                .partition_time_lag_seconds
                .get_or_create(&PartitionLabels {
                    namespace: valid.namespace.clone(),
                    pipeline: valid.name.clone(),
                    partition: partition.partition.to_string(),
                })
                .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
        }
    }
    for reason in [policy::Reason::Paused, policy::Reason::SinkSaturated] {
        metrics
            .scaling_held
            .get_or_create(&ScalingLabels {
                namespace: valid.namespace.clone(),
                pipeline: valid.name.clone(),
                reason: reason.as_str().into(),
            })
            .set(i64::from(decision.reason == reason));
    }
}
