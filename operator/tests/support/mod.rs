//! Shared by the cluster test files: a client from the kubeconfig `tests/cluster/run.sh` wrote,
//! and the metrics of the operator it runs.

pub mod cluster;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

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
