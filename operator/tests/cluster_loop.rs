//! The whole loop on the real control plane: pods run nothing under kwok, so this harness runs
//! the ingress and the workers as host processes with the command and environment the operator
//! put in the Deployments' pod templates (Secret env and mounted Secret files resolved from the
//! real Secrets), and follows the worker Deployment's replicas with that many worker processes.
//! Signed webhooks posted to the ingress must end up as rows in PostgreSQL while the operator
//! scales the Deployment from the lag the workers leave.
//!
//! Run by tests/cluster/run.sh while its operator runs (`WAPIPE_TEST_KUBECONFIG`,
//! `WAPIPE_TEST_BROKERS`, `WAPIPE_TEST_BIN_DIR` holding wapipe-ingress and wapipe-worker);
//! ignored without them (`--ignored` in tests/cluster/run.sh). PostgreSQL on 127.0.0.1:5432 (user root, database test).

mod host_pods;
mod support;

use std::time::Duration;
use support::cluster::{cluster_suite_run, host_run_pipeline_body};

use host_pods::{resolve_deployment, PodProcess};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use kube::Api;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(120);
const DATABASE_URL: &str = "postgres://root@127.0.0.1:5432/test";
const APP_SECRET: &str = "loop-secret";

fn meta_post(run: &str, n: usize, per_post: usize) -> String {
    let changes: Vec<String> = (0..per_post)
        .map(|i| {
            let user = (n * per_post + i) % 5;
            format!(
                r#"{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"messages":[{{"from":"52155990{user:04}","id":"wamid.{run}.{n}.{i}","timestamp":"1767000000","type":"text","text":{{"body":"{n}.{i}"}}}}]}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{}]}}]}}"#,
        changes.join(",")
    )
}

async fn worker_replicas(deployments: &Api<Deployment>, name: &str) -> usize {
    let deployment = deployments.get(name).await.expect("worker Deployment");
    let replicas = deployment.spec.and_then(|s| s.replicas).unwrap_or(1);
    usize::try_from(replicas).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tests/cluster/run.sh (control plane, broker, operator)"]
async fn webhooks_reach_postgres_through_host_processes_run_from_the_pod_templates() {
    let meta = [("app-secret", APP_SECRET), ("verify-token", "loop-token")];
    let (c, bin_dir, run, ns) = cluster_suite_run("loop", &meta).await;
    c.secret(&ns, "database", &[("url", DATABASE_URL)]).await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &ns);
    let mut body = host_run_pipeline_body(&ns, "loop", &c.brokers, &run, 3);
    body["spec"]["worker"]["lagPerReplica"] = json!(20);
    body["spec"]["worker"]["sink"] = json!({"type": "postgres",
        "databaseUrlSecretRef": {"name": "database", "key": "url"}});
    c.create_pipeline(&ns, body).await;
    let pipelines = c.pipelines(&ns);
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    let ingress = c.deployment(&ns, "loop-ingress").await;
    let worker = c.deployment(&ns, "loop-worker").await;

    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    let ingress_cmd = resolve_deployment(&secrets, ingress, &bin_dir, &dir.join("ingress")).await;
    let worker_cmd = resolve_deployment(&secrets, worker, &bin_dir, &dir.join("worker")).await;
    assert_eq!(
        worker_cmd
            .env
            .get("WAPIPE_DATABASE_URL")
            .map(String::as_str),
        Some(DATABASE_URL),
        "the database URL comes from the Secret"
    );
    let (_ingress, ingress_ports) = ingress_cmd.start(&files.path().join("ingress.log"));
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/webhook", ingress_ports.http);
    host_pods::wait_ready(
        &http,
        ingress_ports.admin,
        &files.path().join("ingress.log"),
        PATIENCE,
    )
    .await;

    // A burst before any worker runs: the lag the operator must scale for.
    const POSTS: usize = 30;
    const PER_POST: usize = 10;
    for n in 0..POSTS {
        let body = meta_post(&run, n, PER_POST);
        let response = wapipe_testkit::signed_meta_post(&http, &url, APP_SECRET, body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "ingress answer");
    }

    // The operator sees the lag of a group with no member and scales before any worker runs
    // (as while pods start); from then on the harness follows the Deployment.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while worker_replicas(&deployments, "loop-worker").await != 3 {
        assert!(tokio::time::Instant::now() < deadline, "never scaled to 3");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Follow the worker Deployment's replicas with that many worker processes.
    let (db, connection) = tokio_postgres::connect(DATABASE_URL, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(connection);
    let mut workers: Vec<PodProcess> = Vec::new();
    let mut most = 0;
    let mut rows = 0i64;
    let pattern = format!("wamid.{run}.%");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let wanted = worker_replicas(&deployments, "loop-worker").await;
        while workers.len() < wanted {
            let log = files.path().join(format!("worker-{}.log", workers.len()));
            workers.push(worker_cmd.start(&log).0);
        }
        workers.truncate(wanted);
        most = most.max(workers.len());
        if let Ok(row) = db
            .query_one(
                "SELECT count(*) FROM wapipe_messages WHERE wamid LIKE $1",
                &[&pattern],
            )
            .await
        {
            rows = row.get(0);
        }
        if rows == (POSTS * PER_POST) as i64 && most == 3 && wanted == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rows {rows} of {}, most workers {most}, wanted now {wanted}",
            POSTS * PER_POST
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // 300 events of lag / 20 per worker, capped by 3 partitions: three workers, then back to
    // one once they caught up; every event is one row.
    assert_eq!(most, 3);
    assert_eq!(rows, (POSTS * PER_POST) as i64);

    drop(workers);
    pipelines
        .delete("loop", &DeleteParams::default())
        .await
        .unwrap();
    db.execute(
        "DELETE FROM wapipe_messages WHERE wamid LIKE $1",
        &[&pattern],
    )
    .await
    .unwrap();
}
