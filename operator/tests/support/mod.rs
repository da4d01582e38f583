//! Shared by the cluster test files: a client from the kubeconfig `tests/cluster/run.sh` wrote,
//! and the metrics of the operator it runs.

pub mod cluster;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rdkafka::consumer::Consumer;

/// A client for the cluster described by the kubeconfig at `path`.
pub async fn client_from(path: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("reading the kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

/// The value of the operator's metric `series` (name and labels exactly as exported, e.g.
/// `wapipe_operator_lag_polls_total{namespace="a",pipeline="b"}`), read from the `/metrics` of
/// the operator tests/cluster/run.sh started (`WAPIPE_TEST_OPERATOR_METRICS`). `None` when the
/// series is not exported (yet); panics when the variable is unset or the operator does not
/// answer.
#[allow(dead_code)] // not every test file that includes this module reads metrics
pub async fn operator_metric(series: &str) -> Option<f64> {
    let url = std::env::var("WAPIPE_TEST_OPERATOR_METRICS")
        .expect("WAPIPE_TEST_OPERATOR_METRICS names the operator's /metrics");
    let text = reqwest::get(&url)
        .await
        .and_then(|response| response.error_for_status())
        .expect("the operator serves /metrics")
        .text()
        .await
        .expect("reading /metrics");
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Saves `pipeline` as an Argo CD health-check fixture expecting `status` and `message` in
/// `WAPIPE_TEST_CAPTURE_DIR`, when set (tests/cluster/run.sh runs the health check over them).
#[allow(dead_code)] // not every test file that includes this module captures statuses
pub fn capture(
    file: &str,
    pipeline: &wapipe_operator::crd::WhatsAppWebhookPipeline,
    status: &str,
    message: &str,
) {
    use kube::ResourceExt;
    let Ok(dir) = std::env::var("WAPIPE_TEST_CAPTURE_DIR") else {
        return;
    };
    let object = serde_json::json!({
        "apiVersion": "wapipe.dev/v1alpha1",
        "kind": "WhatsAppWebhookPipeline",
        "metadata": {
            "name": pipeline.name_any(),
            "namespace": pipeline.namespace(),
            "generation": pipeline.metadata.generation,
        },
        "spec": serde_json::to_value(&pipeline.spec).unwrap(),
        "status": serde_json::to_value(&pipeline.status).unwrap(),
    });
    let fixture =
        serde_json::json!({"expect": {"status": status, "message": message}, "object": object});
    std::fs::create_dir_all(&dir).unwrap();
    // JSON is YAML whose strings stay strings (a YAML loader would turn unquoted timestamps
    // into dates).
    let text = format!(
        "# Captured from the cluster suite (operator/tests).\n{}\n",
        serde_json::to_string_pretty(&fixture).unwrap()
    );
    std::fs::write(std::path::PathBuf::from(dir).join(file), text).unwrap();
}

#[allow(dead_code)] // not every test file that includes this module commits offsets
/// Commits `group`'s offsets at the log end of every partition: the group has caught up.
pub fn catch_up(brokers: &str, topic: &str, group: &str, partitions: i32) {
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut offsets = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, std::time::Duration::from_secs(5))
            .unwrap();
        offsets
            .add_partition_offset(topic, partition, rdkafka::Offset::Offset(high))
            .unwrap();
    }
    consumer
        .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
        .expect("committing offsets");
}
