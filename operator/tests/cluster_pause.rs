//! Pausing the scaler on the real control plane (scripts/cluster.sh) and a real broker: the
//! annotation `wapipe.dev/pause-scaling` holds the worker Deployment at the given count, the
//! status says `Scaling=False, Paused` with the delay still measured (Argo CD shows
//! `Suspended`), a `wapipe-worker replay` runs against the emptied group, and removing the
//! annotation hands the workers back to the scaler.
//!
//! Run by tests/cluster/run.sh while its operator runs, with `WAPIPE_TEST_KUBECONFIG`,
//! `WAPIPE_TEST_BROKERS` and `WAPIPE_TEST_BIN_DIR` (holding wapipe-worker); ignored otherwise.

mod support;

use std::time::Duration;
use support::cluster::{bin_dir, cluster_suite, pipeline_body};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use wapipe_operator::crd::WhatsAppWebhookPipeline;

const PATIENCE: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 4;

async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    probe: impl Fn() -> F,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let value = probe().await;
        if check(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not reached within {PATIENCE:?}; last: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn worker_replicas(client: &Client, ns: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt("paused-worker")
        .await
        .expect("reading the worker Deployment")?
        .spec?
        .replicas
}

fn scaling(pipeline: &WhatsAppWebhookPipeline) -> Option<(String, String)> {
    let condition = pipeline
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Scaling")?;
    Some((condition.status.clone(), condition.reason.clone()))
}

#[tokio::test]
#[ignore = "needs the control plane, a broker and the operator: tests/cluster/run.sh runs it"]
async fn a_paused_pipeline_holds_its_workers_is_suspended_takes_a_replay_and_resumes() {
    let c = cluster_suite().await;
    let (client, brokers, bin_dir) = (c.client.clone(), c.brokers.clone(), bin_dir());
    let ns = c.namespace_with_meta_secret("ct-pause").await;
    let raw = wapipe_testkit::unique_name("ct-pause");
    let group = format!("wapipe-{ns}.paused");
    let group = group.as_str();
    let pipelines: Api<WhatsAppWebhookPipeline> = Api::namespaced(client.clone(), &ns);
    c.create_pipeline(
        &ns,
        pipeline_body(&ns, "paused", &c.brokers, &raw, PARTITIONS),
    )
    .await;
    let get = || async { pipelines.get("paused").await.expect("reading the pipeline") };
    eventually("the first lag poll", get, |p| {
        p.status.as_ref().is_some_and(|s| s.total_lag == Some(0))
    })
    .await;

    // Paused at 0: the scaler empties the group and keeps it empty while records arrive.
    let annotate = |value: serde_json::Value| {
        let pipelines = pipelines.clone();
        async move {
            pipelines
                .patch(
                    "paused",
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"wapipe.dev/pause-scaling": value}}}),
                    ),
                )
                .await
                .expect("annotating the pipeline");
        }
    };
    annotate(json!("0")).await;
    eventually(
        "the worker Deployment at 0",
        || worker_replicas(&client, &ns),
        |r| *r == Some(0),
    )
    .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for n in 0..200 {
        producer
            .send(
                FutureRecord::to(&raw)
                    .key(&format!("user-{}", n % 7))
                    .payload("{}"),
                Duration::from_secs(10),
            )
            .await
            .expect("producing");
    }
    let paused = eventually(
        "Scaling=False Paused with the lag and its delay",
        get,
        |p| {
            scaling(p) == Some(("False".into(), "Paused".into()))
                && p.status.as_ref().is_some_and(|s| {
                    s.total_lag == Some(200) && s.time_lag_seconds.is_some_and(|d| d >= 1)
                })
        },
    )
    .await;
    let first_delay = paused.status.as_ref().unwrap().time_lag_seconds.unwrap();
    // Nobody consumes: the oldest record's age keeps growing, and 20 wanted workers stay at 0.
    let later = eventually("the delay growing while paused", get, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.time_lag_seconds)
            .is_some_and(|d| d >= first_delay + 3)
    })
    .await;
    let status = later.status.as_ref().unwrap();
    assert_eq!(status.desired_workers, Some(0));
    assert!(status.worst_partition.is_some());
    assert_eq!(worker_replicas(&client, &ns).await, Some(0));
    support::capture(
        "95-captured-paused.yaml",
        &later,
        "Suspended",
        "Scaling=False (Paused)",
    );

    // The group "consumed" everything, then a replay of the last hour runs against it: refused
    // while a group has members, accepted now that the pause emptied it.
    support::catch_up(&brokers, &raw, group, PARTITIONS);
    eventually("lag 0 while paused", get, |p| {
        p.status.as_ref().is_some_and(|s| s.total_lag == Some(0))
    })
    .await;
    let replay = std::process::Command::new(bin_dir.join("wapipe-worker"))
        .args([
            "replay",
            "--since",
            "1h",
            "--kafka-brokers",
            &brokers,
            "--topic",
            &raw,
            "--group",
            group,
        ])
        .output()
        .expect("running wapipe-worker replay");
    assert!(
        replay.status.success(),
        "replay against the paused group: {}{}",
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&replay.stderr)
    );
    eventually(
        "the replayed lag in the status, workers still 0",
        get,
        |p| p.status.as_ref().is_some_and(|s| s.total_lag == Some(200)),
    )
    .await;
    assert_eq!(worker_replicas(&client, &ns).await, Some(0));

    // The annotation goes: the scaler takes over and sizes the pool for the replay's lag.
    annotate(serde_json::Value::Null).await;
    eventually(
        "the scaler back, 3 workers for 200 records of lag",
        || worker_replicas(&client, &ns),
        |r| *r == Some(3),
    )
    .await;
    let resumed = eventually("Scaling no longer Paused", get, |p| {
        scaling(p).is_some_and(|(_, reason)| reason != "Paused")
    })
    .await;
    assert_eq!(
        resumed.status.as_ref().and_then(|s| s.desired_workers),
        Some(3)
    );
    pipelines
        .delete("paused", &DeleteParams::default())
        .await
        .unwrap();
    c.delete_namespace(&ns).await;
}
