//! Prometheus metrics of the operator, served on `/metrics` by the binary.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub namespace: String,
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub namespace: String,
    pub pipeline: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScalingLabels {
    pub namespace: String,
    pub pipeline: String,
    pub reason: String,
}

/// The operator's version, as a `build_info` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

/// Seconds one reconcile took, 5 ms to about 80 s.
#[derive(Debug)]
pub struct ReconcileSeconds(pub Histogram);

impl Default for ReconcileSeconds {
    fn default() -> Self {
        ReconcileSeconds(Histogram::new(exponential_buckets(0.005, 2.0, 15)))
    }
}

/// Label values of the series one pipeline exported that its name does not fix: what
/// [`Metrics::forget_pipeline`] must remove when the pipeline leaves.
#[derive(Clone, Debug, Default)]
pub struct ExportedSeries {
    pub partitions: std::collections::BTreeSet<i32>,
    pub scaling_reasons: std::collections::BTreeSet<&'static str>,
}

/// Every metric the operator exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// 1, labelled with the version: which build runs where.
    pub build_info: Family<BuildLabels, Gauge>,
    /// 1 while this replica holds the Lease and reconciles, 0 while it waits.
    pub leader: Gauge,
    pub reconcile_seconds: ReconcileSeconds,
    pub reconciliations: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub total_lag: Family<PipelineLabels, Gauge>,
    pub partition_lag: Family<PartitionLabels, Gauge>,
    pub desired_workers: Family<PipelineLabels, Gauge>,
    pub max_workers: Family<PipelineLabels, Gauge>,
    pub current_workers: Family<PipelineLabels, Gauge>,
    pub stalled_partitions: Family<PipelineLabels, Gauge>,
    pub time_lag_seconds: Family<PipelineLabels, Gauge>,
    pub partition_time_lag_seconds: Family<PartitionLabels, Gauge>,
    pub drain_rate: Family<PipelineLabels, Gauge>,
    pub arrival_rate: Family<PipelineLabels, Gauge>,
    pub scaling_held: Family<ScalingLabels, Gauge>,
    pub scaling_changes: Family<ScalingLabels, Counter>,
    pub cleanups_abandoned: Family<PipelineLabels, Counter>,
    pub lag_polls: Family<PipelineLabels, Counter>,
    pub last_scaling_poll: Family<PipelineLabels, Gauge>,
}

impl Metrics {
    /// Removes every series of one pipeline: the per-pipeline ones and those `series` names. `cleanups_abandoned` stays: it counts an
    /// abandoned cleanup, the last thing a pipeline does, and an alert must still see it.
    pub fn forget_pipeline(&self, labels: &PipelineLabels, series: &ExportedSeries) {
        for family in [
            &self.total_lag,
            &self.desired_workers,
            &self.max_workers,
            &self.current_workers,
            &self.stalled_partitions,
            &self.time_lag_seconds,
            &self.drain_rate,
            &self.arrival_rate,
            &self.last_scaling_poll,
        ] {
            family.remove(labels);
        }
        self.lag_polls.remove(labels);
        for partition in &series.partitions {
            let labels = PartitionLabels {
                namespace: labels.namespace.clone(),
                pipeline: labels.pipeline.clone(),
                partition: partition.to_string(),
            };
            self.partition_lag.remove(&labels);
            self.partition_time_lag_seconds.remove(&labels);
        }
        let held = [
            crate::scaler::policy::Reason::Paused.as_str(),
            crate::scaler::policy::Reason::SinkSaturated.as_str(),
        ];
        for reason in series.scaling_reasons.iter().chain(held.iter()) {
            let labels = ScalingLabels {
                namespace: labels.namespace.clone(),
                pipeline: labels.pipeline.clone(),
                reason: (*reason).to_string(),
            };
            self.scaling_changes.remove(&labels);
            self.scaling_held.remove(&labels);
        }
    }

    /// Registers every metric in `registry` under the `wapipe_operator` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("wapipe_operator");
        wapipe_core::service::register_process_metrics(registry);
        self.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version label says which build of the operator runs",
            self.build_info.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and reconciles; 0 while it waits as a \
             standby",
            self.leader.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile of a pipeline took, Kafka and API calls included",
            self.reconcile_seconds.0.clone(),
        );
        registry.register(
            "reconciliations",
            "Reconciliations started",
            self.reconciliations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by failed step",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "consumer_lag",
            "Total consumer-group lag of the pipeline at the last poll",
            self.total_lag.clone(),
        );
        registry.register(
            "partition_lag",
            "Consumer-group lag of each partition of the pipeline's raw topic at the last poll",
            self.partition_lag.clone(),
        );
        registry.register(
            "desired_workers",
            "Worker replicas the scaler wants",
            self.desired_workers.clone(),
        );
        registry.register(
            "max_workers",
            "Most worker replicas the scaler may ask for: maxReplicas capped by the partition count",
            self.max_workers.clone(),
        );
        registry.register(
            "current_workers",
            "Ready worker replicas",
            self.current_workers.clone(),
        );
        registry.register(
            "stalled_partitions",
            "Partitions whose committed offset is stuck with lag",
            self.stalled_partitions.clone(),
        );
        registry.register(
            "time_lag_seconds",
            "Age of the pipeline's oldest unconsumed record at the last poll (0 when caught up)",
            self.time_lag_seconds.clone(),
        );
        registry.register(
            "partition_time_lag_seconds",
            "Age of each partition's oldest unconsumed record at the last poll (0 without lag)",
            self.partition_time_lag_seconds.clone(),
        );
        registry.register(
            "drain_rate",
            "Records per second the consumer group committed since the previous poll",
            self.drain_rate.clone(),
        );
        registry.register(
            "arrival_rate",
            "Records per second produced to the raw topic since the previous poll",
            self.arrival_rate.clone(),
        );
        registry.register(
            "scaling_held",
            "1 while the scaler holds the workers (reason Paused or SinkSaturated), else 0",
            self.scaling_held.clone(),
        );
        registry.register(
            "scaling_changes",
            "Changes of the worker replica count, by reason",
            self.scaling_changes.clone(),
        );
        registry.register(
            "lag_polls",
            "Lag polls of the pipeline's consumer group (read or failed); at most one per poll interval",
            self.lag_polls.clone(),
        );
        registry.register(
            "last_scaling_poll",
            "The lag poll, counted as in lag_polls, that last wrote the worker replicas: how many \
             polls a lag step took to reach the Deployment",
            self.last_scaling_poll.clone(),
        );
        registry.register(
            "cleanups_abandoned",
            "Deletions under deletionPolicy: Delete released at the cleanup deadline with topics \
             possibly left on Kafka (the CleanupAbandoned Event is lost when the namespace is \
             being deleted: the API server refuses new objects in it)",
            self.cleanups_abandoned.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_reports_its_version_leadership_and_reconcile_times() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.leader.set(1);
        metrics.reconcile_seconds.0.observe(0.02);
        let text = wapipe_core::service::encode(&registry).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!(
                "wapipe_operator_build_info{{version=\"{version}\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains("wapipe_operator_leader 1"), "{text}");
        assert!(
            text.contains("wapipe_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }
}
