//! Lease-based leader election against a mocked API server: create when absent, renew when
//! held, wait while another holder is fresh, take over once its Lease expired.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};
use wapipe_operator::leader::LeaderElector;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/wapipe/leases";

async fn answer(
    handle: &mut ApiHandle,
    method: &str,
    path: &str,
    status: u16,
    body: Value,
) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method().as_str(), method);
    assert!(request.uri().path().starts_with(path), "{}", request.uri());
    let bytes = request.into_body().collect_bytes().await.unwrap();
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn elector() -> (LeaderElector, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "wapipe");
    let elector = LeaderElector::new(
        client,
        "wapipe",
        "wapipe-operator-leader",
        "pod-a",
        Duration::from_secs(15),
    );
    (elector, handle)
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": "NotFound", "code": 404, "message": "not found"})
}

fn lease(holder: &str, renewed: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "wapipe-operator-leader", "namespace": "wapipe", "resourceVersion": "7"},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                    "renewTime": renewed, "acquireTime": renewed, "leaseTransitions": 2}})
}

#[tokio::test]
async fn an_absent_lease_is_created_and_held() {
    let (elector, mut handle) = elector();
    let task = tokio::spawn(async move { elector.try_acquire_or_renew().await });
    answer(&mut handle, "GET", LEASE_PATH, 404, not_found()).await;
    let created = answer(
        &mut handle,
        "POST",
        LEASE_PATH,
        201,
        lease("pod-a", "2026-01-01T00:00:00.000000Z"),
    )
    .await;
    assert_eq!(created["spec"]["holderIdentity"], "pod-a");
    assert!(task.await.unwrap().unwrap());
}

#[tokio::test]
async fn a_fresh_lease_of_another_holder_is_left_alone() {
    let (elector, mut handle) = elector();
    let task = tokio::spawn(async move { elector.try_acquire_or_renew().await });
    // Renewed far in the future relative to any clock this test runs on: never expired.
    answer(
        &mut handle,
        "GET",
        LEASE_PATH,
        200,
        lease("pod-b", "2999-01-01T00:00:00.000000Z"),
    )
    .await;
    assert!(!task.await.unwrap().unwrap());
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_the_resource_version_read() {
    let (elector, mut handle) = elector();
    let task = tokio::spawn(async move { elector.try_acquire_or_renew().await });
    answer(
        &mut handle,
        "GET",
        LEASE_PATH,
        200,
        lease("pod-b", "2000-01-01T00:00:00.000000Z"),
    )
    .await;
    let replaced = answer(
        &mut handle,
        "PUT",
        LEASE_PATH,
        200,
        lease("pod-a", "2000-01-01T00:00:00.000000Z"),
    )
    .await;
    assert_eq!(replaced["spec"]["holderIdentity"], "pod-a");
    assert_eq!(replaced["spec"]["leaseTransitions"], 3);
    assert_eq!(replaced["metadata"]["resourceVersion"], "7");
    assert!(task.await.unwrap().unwrap());
}

#[tokio::test]
async fn losing_the_write_race_means_not_leader() {
    let (elector, mut handle) = elector();
    let task = tokio::spawn(async move { elector.try_acquire_or_renew().await });
    answer(
        &mut handle,
        "GET",
        LEASE_PATH,
        200,
        lease("pod-b", "2000-01-01T00:00:00.000000Z"),
    )
    .await;
    answer(&mut handle, "PUT", LEASE_PATH, 409, json!({"kind": "Status", "apiVersion": "v1",
        "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"})).await;
    assert!(!task.await.unwrap().unwrap());
}
