//! Two `wapipe-operator` processes against the real API server, both with the chart
//! ServiceAccount's token: one holds the Lease and reconciles, the other waits; kill the holder
//! and the other takes over and reconciles. Run by tests/cluster/run.sh once its own operator
//! has stopped (`WAPIPE_TEST_OPERATOR_KUBECONFIG`, `WAPIPE_TEST_KUBECONFIG`,
//! `WAPIPE_TEST_BROKERS`, `WAPIPE_TEST_OPERATOR_NAMESPACE`); ignored without them (`--ignored` in tests/cluster/run.sh).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::cluster::cluster_suite;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use wapipe_operator::crd::WhatsAppWebhookPipeline;

const PATIENCE: Duration = Duration::from_secs(90);
const LEASE: &str = "wapipe-operator-leader";

/// An operator process, killed when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(identity: &str, kubeconfig: &str, namespace: &str, dir: &Path) -> Operator {
        let log = dir.join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wapipe-operator"))
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", namespace)
            .env("POD_NAME", identity)
            .env("WAPIPE_LEASE_NAME", LEASE)
            .env("WAPIPE_LEASE_DURATION_SECONDS", "6")
            .env("WAPIPE_OPERATOR_LISTEN", "127.0.0.1:0")
            .env("WAPIPE_IMAGE", "ghcr.io/wapipe/wapipe:cluster-suite")
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("starting wapipe-operator");
        Operator { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn holder(leases: &Api<Lease>) -> Option<(String, Option<Timestamp>, i32)> {
    let lease = leases.get_opt(LEASE).await.ok()??;
    let spec = lease.spec?;
    Some((
        spec.holder_identity?,
        spec.acquire_time.map(|t| t.0),
        spec.lease_transitions.unwrap_or(0),
    ))
}

async fn wait_holder(leases: &Api<Lease>, identity: &str) -> (Option<Timestamp>, i32) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some((holder, acquired, transitions)) = holder(leases).await {
            if holder == identity {
                return (acquired, transitions);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{identity} never held the Lease: {:?}",
            holder(leases).await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the pipeline's status observed `generation`; the last status if it never did.
async fn wait_observed(
    pipelines: &Api<WhatsAppWebhookPipeline>,
    generation: i64,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let p = pipelines.get("leased").await.unwrap();
        let observed = p.status.as_ref().and_then(|s| s.observed_generation);
        if p.metadata.generation == Some(generation) && observed == Some(generation) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "generation {generation} not observed: {:?}",
                p.status
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
#[ignore = "needs tests/cluster/run.sh (control plane, broker, operator)"]
async fn the_lease_holder_reconciles_and_the_other_takes_over_when_it_dies() {
    let vars = [
        "WAPIPE_TEST_OPERATOR_KUBECONFIG",
        "WAPIPE_TEST_OPERATOR_NAMESPACE",
    ]
    .map(std::env::var);
    let [Ok(operator_kubeconfig), Ok(operator_ns)] = vars else {
        panic!("WAPIPE_TEST_*: run by tests/cluster/run.sh");
    };
    let c = cluster_suite().await;
    let (client, brokers) = (c.client.clone(), &c.brokers);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &operator_ns);
    let dir = tempfile::tempdir().unwrap();

    let a = Operator::start("operator-a", &operator_kubeconfig, &operator_ns, dir.path());
    wait_holder(&leases, "operator-a").await;
    let b = Operator::start("operator-b", &operator_kubeconfig, &operator_ns, dir.path());

    let ns = c.namespace_with_meta_secret("ct-lease").await;
    let pipelines: Api<WhatsAppWebhookPipeline> = Api::namespaced(client.clone(), &ns);
    let raw = wapipe_testkit::unique_name("ct-lease");
    let pipeline: WhatsAppWebhookPipeline = serde_json::from_value(json!({
        "apiVersion": "wapipe.dev/v1alpha1",
        "kind": "WhatsAppWebhookPipeline",
        "metadata": {"name": "leased", "namespace": ns},
        "spec": {
            "kafka": {"bootstrapServers": brokers},
            "topic": {"name": raw, "partitions": 1, "replicationFactor": 1},
            "deadLetterTopic": {"name": format!("{raw}.failed"), "partitions": 1, "replicationFactor": 1},
            "ingress": {"appSecretRef": {"name": "meta", "key": "app-secret"},
                        "verifyTokenRef": {"name": "meta", "key": "verify-token"}},
            "worker": {"pollIntervalSeconds": 2}
        }
    }))
    .unwrap();
    let created = pipelines
        .create(&PostParams::default(), &pipeline)
        .await
        .unwrap();
    if let Err(problem) = wait_observed(&pipelines, created.metadata.generation.unwrap()).await {
        panic!(
            "{problem}\noperator-a:\n{}\noperator-b:\n{}",
            a.log(),
            b.log()
        );
    }
    assert!(
        !b.log().contains("became leader"),
        "operator-b led while operator-a held the Lease:\n{}",
        b.log()
    );
    assert!(a.log().contains("became leader"));

    let (_, transitions_before) = wait_holder(&leases, "operator-a").await;
    let killed_at = Timestamp::now();
    drop(a);
    let (acquired, transitions) = wait_holder(&leases, "operator-b").await;
    assert!(
        acquired.is_some_and(|t| t >= killed_at),
        "operator-b acquired the Lease at {acquired:?}, before operator-a died at {killed_at}"
    );
    assert_eq!(transitions, transitions_before + 1);

    // The new leader reconciles: an edit is observed.
    pipelines
        .patch(
            "leased",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ingress": {"replicas": 3}}})),
        )
        .await
        .unwrap();
    if let Err(problem) = wait_observed(&pipelines, created.metadata.generation.unwrap() + 1).await
    {
        panic!("{problem}\noperator-b:\n{}", b.log());
    }
    assert!(b.log().contains("became leader"));
    pipelines
        .delete("leased", &DeleteParams::default())
        .await
        .unwrap();
    drop(b);
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Waits for `child` to exit; its exit code, or None if it is still running at the deadline.
async fn exit_code(child: &mut Child) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test]
#[ignore = "needs tests/cluster/run.sh (control plane, broker, operator)"]
async fn a_frozen_leader_steps_down_before_the_other_takes_over_and_sigterm_hands_over_at_once() {
    let vars = [
        "WAPIPE_TEST_KUBECONFIG",
        "WAPIPE_TEST_OPERATOR_KUBECONFIG",
        "WAPIPE_TEST_OPERATOR_NAMESPACE",
    ]
    .map(std::env::var);
    let [Ok(admin), Ok(operator_kubeconfig), Ok(operator_ns)] = vars else {
        panic!("WAPIPE_TEST_*: run by tests/cluster/run.sh");
    };
    let client = support::client_from(&admin).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &operator_ns);
    let dir = tempfile::tempdir().unwrap();

    // 1. kill -STOP the leader past its renew deadline (4 s of a 6 s lease): the other takes
    //    over only once the Lease stayed unchanged for a lease duration by its own clock, and
    //    the frozen one, resumed, steps down without acting (it exits on the deadline it missed).
    let mut a = Operator::start("operator-c", &operator_kubeconfig, &operator_ns, dir.path());
    let (_, transitions) = wait_holder(&leases, "operator-c").await;
    let b = Operator::start("operator-d", &operator_kubeconfig, &operator_ns, dir.path());
    signal(&a.child, "STOP");
    let frozen_at = Timestamp::now();
    let (acquired, after) = wait_holder(&leases, "operator-d").await;
    assert_eq!(after, transitions + 1);
    assert!(
        acquired.is_some_and(|t| t > frozen_at),
        "{acquired:?} {frozen_at}"
    );
    signal(&a.child, "CONT");
    let code = exit_code(&mut a.child).await;
    assert_eq!(
        code,
        Some(1),
        "the resumed leader kept running:\n{}",
        a.log()
    );
    let log = a.log();
    assert!(log.contains("RenewDeadlinePassed"), "{log}");
    assert_eq!(
        holder(&leases).await.map(|(h, _, _)| h).as_deref(),
        Some("operator-d"),
        "the resumed leader wrote the Lease again"
    );

    // 2. SIGTERM to the leader: it releases the Lease (empty holder), exits 0, and the standby
    //    takes it at its next try instead of waiting a lease duration.
    let mut b = b;
    let c = Operator::start("operator-e", &operator_kubeconfig, &operator_ns, dir.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!c.log().contains("became leader"), "{}", c.log());
    signal(&b.child, "TERM");
    assert_eq!(exit_code(&mut b.child).await, Some(0), "{}", b.log());
    assert!(b.log().contains("releasing the Lease"), "{}", b.log());
    // Released before it exited: the record no longer names it.
    assert_ne!(
        holder(&leases).await.map(|(h, _, _)| h).as_deref(),
        Some("operator-d"),
        "the stopped leader still holds the Lease"
    );
    let (_, handed) = wait_holder(&leases, "operator-e").await;
    assert_eq!(handed, after + 1);
    // The Lease operator-e took was the released one: its log shows no wait for expiry, and the
    // record it replaced had an empty holder (a takeover of a live holder needs a lease
    // duration of silence, which the test did not leave).
    assert!(c.log().contains("became leader"), "{}", c.log());
    drop(c);
}
