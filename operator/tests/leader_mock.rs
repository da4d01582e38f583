//! Lease-based leader election against a mocked API server: create when absent, wait while
//! another holder's record keeps changing, take over once it has not changed for a lease
//! duration by this candidate's own clock, step down past the renew deadline, release on
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use kube::client::Body;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use wapipe_operator::leader::{LeaderElector, LeaseTiming, LostLeadership};

#[path = "support/api.rs"]
mod api;

use api::{not_found, ApiServer};

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/wapipe/leases";

/// Answers the next request, which must be `method` on `path`, with `status` and `body`;
/// returns what the request carried.
async fn answer(
    server: &mut ApiServer,
    method: &str,
    path: &str,
    status: u16,
    body: Value,
) -> Value {
    server
        .expect_status(method, path, status, |_| body)
        .await
        .body
}

/// A short lease (3 s: renew deadline 2 s, retry 1 s) so expiry can be waited out for real.
fn elector() -> (Arc<LeaderElector>, ApiServer) {
    let (client, server) = api::pair("wapipe");
    let elector = LeaderElector::new(
        client,
        "wapipe",
        "wapipe-operator-leader",
        "pod-a",
        LeaseTiming::for_duration(Duration::from_secs(3)),
    );
    (Arc::new(elector), server)
}

fn lease(holder: &str, renewed: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "wapipe-operator-leader", "namespace": "wapipe", "resourceVersion": "7"},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3,
                    "renewTime": renewed, "acquireTime": renewed, "leaseTransitions": 2}})
}

/// Answers the elector's read of the Lease with one held by `holder`, renewed at `renewed`.
async fn read_lease(server: &mut ApiServer, holder: &str, renewed: &str) {
    answer(server, "GET", LEASE_PATH, 200, lease(holder, renewed)).await;
}

/// Accepts the elector's write of the Lease (`method`, answered with `status`) as a record held
/// by `holder`; returns what the elector wrote.
async fn accept_write(server: &mut ApiServer, method: &str, status: u16, holder: &str) -> Value {
    let written = lease(holder, "2026-01-01T00:00:00.000000Z");
    answer(server, method, LEASE_PATH, status, written).await
}

/// One attempt of `elector` to acquire or renew the Lease, running while the test answers.
fn attempt(elector: &Arc<LeaderElector>) -> JoinHandle<Result<bool, kube::Error>> {
    let elector = elector.clone();
    tokio::spawn(async move { elector.try_acquire_or_renew().await })
}

#[tokio::test]
async fn an_absent_lease_is_created_and_held() {
    let (elector, mut server) = elector();
    let task = attempt(&elector);
    answer(&mut server, "GET", LEASE_PATH, 404, not_found()).await;
    let created = accept_write(&mut server, "POST", 201, "pod-a").await;
    assert_eq!(created["spec"]["holderIdentity"], "pod-a");
    assert!(task.await.unwrap().unwrap());
}

#[tokio::test]
async fn a_fresh_lease_of_another_holder_is_left_alone() {
    let (elector, mut server) = elector();
    let task = attempt(&elector);
    // Renewed long ago by the holder's clock: irrelevant, this candidate has only just seen it.
    read_lease(&mut server, "pod-b", "2000-01-01T00:00:00.000000Z").await;
    assert!(!task.await.unwrap().unwrap());
}

#[tokio::test]
async fn a_lease_unchanged_for_a_lease_duration_is_taken_over_with_the_resource_version_read() {
    let (elector, mut server) = elector();
    let first = attempt(&elector);
    read_lease(&mut server, "pod-b", "2999-01-01T00:00:00.000000Z").await;
    assert!(
        !first.await.unwrap().unwrap(),
        "a record seen for the first time is fresh"
    );
    // The same record, a lease duration later by this candidate's clock (whatever the holder's
    // renewTime says, even a time in the future).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let second = attempt(&elector);
    read_lease(&mut server, "pod-b", "2999-01-01T00:00:00.000000Z").await;
    let replaced = accept_write(&mut server, "PUT", 200, "pod-a").await;
    assert_eq!(replaced["spec"]["holderIdentity"], "pod-a");
    assert_eq!(replaced["spec"]["leaseTransitions"], 3);
    assert_eq!(replaced["metadata"]["resourceVersion"], "7");
    assert!(second.await.unwrap().unwrap());
}

#[tokio::test]
async fn a_lease_whose_holder_keeps_renewing_is_never_taken() {
    let (elector, mut server) = elector();
    for (n, renewed) in [
        "2000-01-01T00:00:00.000000Z",
        "2000-01-01T00:00:02.000000Z",
        "2000-01-01T00:00:04.000000Z",
    ]
    .into_iter()
    .enumerate()
    {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(1600)).await;
        }
        let task = attempt(&elector);
        read_lease(&mut server, "pod-b", renewed).await;
        assert!(!task.await.unwrap().unwrap(), "taken at attempt {n}");
    }
}

// The clock is tokio's, paused and advanced only when every task waits: the time asserted is
// the elector's schedule (a renew deadline of 2 s), not the machine's speed.
#[tokio::test(start_paused = true)]
async fn the_holder_steps_down_once_it_could_not_renew_for_the_renew_deadline() {
    let (elector, mut server) = elector();
    let acquired = tokio::time::Instant::now();
    let held = tokio::spawn({
        let elector = elector.clone();
        async move { elector.hold(acquired).await }
    });
    // The API server fails every renewal.
    let server = tokio::spawn(async move {
        while let Some((_, send)) = server.handle.next_request().await {
            send.send_response(Response::builder().status(500).body(Body::from(serde_json::to_vec(&json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 500, "message": "etcd is gone"})).unwrap())).unwrap());
        }
    });
    let lost = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("hold returns")
        .unwrap();
    assert_eq!(lost, LostLeadership::RenewDeadlinePassed);
    // Stepped down before the lease (3 s) could expire for anybody else.
    assert!(
        acquired.elapsed() < elector.timing().lease_duration,
        "{:?}",
        acquired.elapsed()
    );
    server.abort();
}

#[tokio::test]
async fn release_hands_the_lease_over_with_an_empty_holder() {
    let (elector, mut server) = elector();
    let task = tokio::spawn(async move { elector.release().await });
    read_lease(&mut server, "pod-a", "2026-01-01T00:00:00.000000Z").await;
    let released = accept_write(&mut server, "PUT", 200, "").await;
    assert_eq!(released["spec"]["holderIdentity"], "");
    assert_eq!(released["metadata"]["resourceVersion"], "7");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn losing_the_write_race_means_not_leader() {
    let (elector, mut server) = elector();
    // An empty holder (a released Lease) may be taken at once.
    let task = attempt(&elector);
    read_lease(&mut server, "", "2000-01-01T00:00:00.000000Z").await;
    answer(&mut server, "PUT", LEASE_PATH, 409, json!({"kind": "Status", "apiVersion": "v1",
        "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"})).await;
    assert!(!task.await.unwrap().unwrap());
}
