//! The reconciler against a mocked API server (kube-rs `ApiServerVerifier` pattern) and the
//! in-memory topic admin. Each test is one scenario: the exact sequence of API calls the
//! reconcile must make, what each call carries, and what ends up in the status. Events are
//! answered and recorded on the side, since the recorder may POST or PATCH them.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};
use wapipe_operator::controller::{
    backoff, error_policy, jittered, reconcile, retry_delay, Context,
};
use wapipe_operator::kafka::InMemoryAdmin;
use wapipe_operator::metrics::{Metrics, PipelineLabels};
use wapipe_operator::scaler::policy::PartitionOffsets;
use wapipe_operator::WhatsAppWebhookPipeline;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// The mocked API server's side of one scenario.
struct ApiServer {
    handle: ApiHandle,
    events: Vec<String>,
}

/// One request as the server saw it.
struct Seen {
    method: String,
    uri: String,
    body: Value,
}

impl ApiServer {
    /// Answers the next non-event request with `respond(request body)`.
    async fn expect(
        &mut self,
        method: &str,
        path: &str,
        respond: impl FnOnce(&Value) -> Value,
    ) -> Seen {
        self.expect_status(method, path, 200, respond).await
    }

    /// Like [`ApiServer::expect`], answering with `status`.
    async fn expect_status(
        &mut self,
        method: &str,
        path: &str,
        status: u16,
        respond: impl FnOnce(&Value) -> Value,
    ) -> Seen {
        loop {
            let (request, send) =
                tokio::time::timeout(Duration::from_secs(10), self.handle.next_request())
                    .await
                    .unwrap_or_else(|_| panic!("no request arrived; expected {method} {path}"))
                    .unwrap_or_else(|| panic!("client gone; expected {method} {path}"));
            let method_seen = request.method().to_string();
            let uri = request.uri().to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if uri.contains("/events") {
                if let Some(reason) = body.get("reason").and_then(Value::as_str) {
                    self.events.push(reason.to_string());
                }
                send.send_response(
                    Response::builder()
                        .status(201)
                        .body(Body::from(bytes.to_vec()))
                        .unwrap(),
                );
                continue;
            }
            assert_eq!(
                method_seen, method,
                "unexpected request {method_seen} {uri}"
            );
            assert!(uri.starts_with(path), "expected {method} {path}, got {uri}");
            let answer = respond(&body);
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
            return Seen {
                method: method_seen,
                uri,
                body,
            };
        }
    }

    /// Answers any events still queued, then checks no other request comes.
    async fn finish(&mut self) {
        while let Ok(Some((request, send))) =
            tokio::time::timeout(Duration::from_millis(200), self.handle.next_request()).await
        {
            let uri = request.uri().to_string();
            assert!(
                uri.contains("/events"),
                "unexpected extra request {} {uri}",
                request.method()
            );
            let bytes = request.into_body().collect_bytes().await.unwrap();
            if let Some(reason) = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|b| b.get("reason").and_then(Value::as_str).map(String::from))
            {
                self.events.push(reason);
            }
            send.send_response(
                Response::builder()
                    .status(201)
                    .body(Body::from(bytes.to_vec()))
                    .unwrap(),
            );
        }
    }
}

fn setup(admin: Arc<InMemoryAdmin>) -> (Arc<Context>, ApiServer) {
    setup_with(admin, |ctx| ctx)
}

/// [`setup`], with the context changed by `configure`.
fn setup_with(
    admin: Arc<InMemoryAdmin>,
    configure: impl FnOnce(Context) -> Context,
) -> (Arc<Context>, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context::new(
        client,
        admin,
        "ghcr.io/wapipe/wapipe:0.1.0",
        Arc::new(Metrics::default()),
    );
    (
        Arc::new(configure(ctx)),
        ApiServer {
            handle,
            events: Vec::new(),
        },
    )
}

fn pipeline(extra: Value) -> WhatsAppWebhookPipeline {
    let mut base = json!({
        "apiVersion": "wapipe.dev/v1alpha1",
        "kind": "WhatsAppWebhookPipeline",
        "metadata": {
            "name": "orders", "namespace": "shop", "uid": "0b7c4a52-1d3e-4c8e-9a57-2f4b1c2d3e4f",
            "generation": 2, "resourceVersion": "100", "creationTimestamp": "2026-01-01T00:00:00Z"
        },
        "spec": {
            "kafka": {"bootstrapServers": "kafka:9092"},
            "ingress": {"provider": "wasender", "appSecretRef": {"name": "wasender", "key": "secret"}},
            "worker": {"minReplicas": 1, "maxReplicas": 12, "lagPerReplica": 1000}
        }
    });
    merge(&mut base, extra);
    serde_json::from_value(base).expect("test pipeline parses")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

fn list_of(pipelines: &[&WhatsAppWebhookPipeline]) -> Value {
    json!({
        "apiVersion": "wapipe.dev/v1alpha1", "kind": "WhatsAppWebhookPipelineList",
        "metadata": {"resourceVersion": "1"}, "items": pipelines,
    })
}

/// Expects the list of every pipeline (for the topic-claims check), answered with `pipeline` alone.
async fn expect_pipeline_list(server: &mut ApiServer, pipeline: &WhatsAppWebhookPipeline) {
    expect_list(server, &[pipeline]).await;
}

/// Expects the list of every pipeline, answered with `pipelines`.
async fn expect_list(server: &mut ApiServer, pipelines: &[&WhatsAppWebhookPipeline]) {
    server
        .expect(
            "GET",
            "/apis/wapipe.dev/v1alpha1/whatsappwebhookpipelines?",
            |_| list_of(pipelines),
        )
        .await;
}

/// Expects the finalizer patch of the orders pipeline, answered with `pipeline` patched.
async fn expect_finalizers_patch(
    server: &mut ApiServer,
    pipeline: &WhatsAppWebhookPipeline,
) -> Seen {
    server
        .expect(
            "PATCH",
            "/apis/wapipe.dev/v1alpha1/namespaces/shop/whatsappwebhookpipelines/orders?",
            |b| applied(&serde_json::to_value(pipeline).unwrap(), b.clone()),
        )
        .await
}

/// Expects the status write of `pipeline`, answered with the pipeline carrying it.
async fn expect_status_write(server: &mut ApiServer, pipeline: &WhatsAppWebhookPipeline) -> Seen {
    server
        .expect(
            "PATCH",
            "/apis/wapipe.dev/v1alpha1/namespaces/shop/whatsappwebhookpipelines/orders/status?",
            |b| applied(&serde_json::to_value(pipeline).unwrap(), b.clone()),
        )
        .await
}

/// The API server's answer to an apply: the object, with the fields the server would add.
fn applied(body: &Value, extra: Value) -> Value {
    let mut answer = body.clone();
    merge(&mut answer, extra);
    answer
}

fn lagging(partitions: i32, lag_each: i64) -> Vec<PartitionOffsets> {
    (0..partitions)
        .map(|partition| PartitionOffsets {
            partition,
            committed: Some(1000),
            log_start: 0,
            log_end: 1000 + lag_each,
        })
        .collect()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// Expects the read of the ingress app Secret, which exists.
async fn expect_ingress_secret(server: &mut ApiServer) {
    server
        .expect("GET", "/api/v1/namespaces/shop/secrets/wasender", |_| {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wasender", "namespace": "shop"}, "data": {"secret": "c2VjcmV0"}})
        })
        .await;
}

/// Expects the check of the ingress Secret, then the four child applies, answering as a cluster
/// whose pods are up and whose worker Deployment runs `worker_replicas`. Returns the worker
/// template apply.
async fn expect_children(server: &mut ApiServer, worker_replicas: i64) -> Seen {
    expect_ingress_secret(server).await;
    expect_child_applies(server, worker_replicas).await
}

/// The paths of the four children, in the order the reconcile reads and applies them.
const CHILDREN: [&str; 4] = [
    "/apis/apps/v1/namespaces/shop/deployments/orders-ingress",
    "/api/v1/namespaces/shop/services/orders-ingress",
    "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/orders-ingress",
    "/apis/apps/v1/namespaces/shop/deployments/orders-worker",
];

/// Expects the read of every child before any apply, answered as not there yet.
async fn expect_child_reads(server: &mut ApiServer) {
    for path in CHILDREN {
        server
            .expect_status("GET", path, 404, |_| not_found())
            .await;
    }
}

/// The four child applies of [`expect_children`], without the Secret read (kept from before),
/// after the reads that check no one else holds those names.
async fn expect_child_applies(server: &mut ApiServer, worker_replicas: i64) -> Seen {
    expect_child_reads(server).await;
    let ingress = server
        .expect(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-ingress?",
            |b| applied(b, json!({"status": {"availableReplicas": 2}})),
        )
        .await;
    assert!(ingress.uri.contains("fieldManager=wapipe-operator"));
    assert!(ingress.uri.contains("force=true"));
    server
        .expect(
            "PATCH",
            "/api/v1/namespaces/shop/services/orders-ingress?",
            |b| b.clone(),
        )
        .await;
    server
        .expect(
            "PATCH",
            "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/orders-ingress?",
            |b| b.clone(),
        )
        .await;
    let worker = server
        .expect("PATCH", "/apis/apps/v1/namespaces/shop/deployments/orders-worker?", |b| {
            applied(
                b,
                json!({"spec": {"replicas": worker_replicas}, "status": {"readyReplicas": worker_replicas}}),
            )
        })
        .await;
    assert!(worker.uri.contains("fieldManager=wapipe-operator"));
    assert!(
        worker.body["spec"].get("replicas").is_none(),
        "the template apply must leave replicas to the scaler"
    );
    worker
}

async fn run_reconcile(
    pipeline: WhatsAppWebhookPipeline,
    ctx: Arc<Context>,
) -> tokio::task::JoinHandle<Result<Action, wapipe_operator::Error>> {
    tokio::spawn(reconcile(Arc::new(pipeline), ctx))
}

#[tokio::test]
async fn a_new_pipeline_gets_topics_children_scaled_workers_and_a_status() {
    let admin = Arc::new(InMemoryAdmin::default());
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = pipeline(json!({}));
    // Topics are created by the reconcile before the lag read; offsets are set up front.
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 250),
    );
    let task = run_reconcile(pipeline.clone(), ctx.clone()).await;

    expect_pipeline_list(&mut server, &pipeline).await;
    expect_children(&mut server, 1).await;
    let scale = server
        .expect(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-worker?",
            |b| b.clone(),
        )
        .await;
    assert!(
        scale.uri.contains("fieldManager=wapipe-scaler"),
        "{}",
        scale.uri
    );
    assert_eq!(
        scale.body["spec"],
        json!({"replicas": 3}),
        "ceil(3000 / 1000) workers"
    );
    let status = expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    let action = task.await.unwrap().expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));

    assert_eq!(
        admin.calls(),
        [
            "create whatsapp_webhooks_raw 12",
            "create whatsapp_webhooks_failed 3"
        ]
    );
    let status = &status.body["status"];
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(status["partitions"], 12);
    assert_eq!(status["topicCreated"], true);
    assert_eq!(
        status["createdTopics"],
        json!(["whatsapp_webhooks_raw", "whatsapp_webhooks_failed"])
    );
    assert_eq!(status["totalLag"], 3000);
    assert_eq!(status["desiredWorkers"], 3);
    assert_eq!(
        status["consumerGroup"], "wapipe-shop.orders",
        "the group chosen is recorded, so the pipeline keeps it"
    );
    assert_eq!(
        status.get("partitionLag"),
        None,
        "on a first reading every partition with lag counts as moving: none is listed as behind"
    );
    assert_eq!(condition(status, "TopicReady")["reason"], "Created");
    assert_eq!(condition(status, "IngressReady")["status"], "True");
    assert_eq!(condition(status, "Scaling")["reason"], "ScaledUp");
    // One worker of the three wanted is ready: not Ready yet.
    assert_eq!(condition(status, "WorkersReady")["status"], "False");
    assert_eq!(condition(status, "Ready")["reason"], "WorkersNotReady");
    assert!(
        server.events.contains(&"TopicCreated".to_string()),
        "{:?}",
        server.events
    );
    assert!(
        server.events.contains(&"ScaledUp".to_string()),
        "{:?}",
        server.events
    );
    let labels = PipelineLabels {
        namespace: "shop".into(),
        pipeline: "orders".into(),
    };
    assert_eq!(ctx.metrics().lag_polls.get_or_create(&labels).get(), 1);
    assert_eq!(
        ctx.metrics().last_scaling_poll.get_or_create(&labels).get(),
        1,
        "the first poll that saw the lag wrote the replicas"
    );
}

/// The real API server showed it: a reconcile triggered by the operator's own finalizer or
/// status write can start from a cached copy read before its status write arrived. The topics it
/// created must still count as created, or `deletionPolicy: Delete` would leave them behind.
#[tokio::test]
async fn a_reconcile_from_a_copy_older_than_its_own_status_write_keeps_its_topics_created() {
    let admin = Arc::new(InMemoryAdmin::default());
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 0),
    );
    let (ctx, mut server) = setup(admin.clone());
    let stale = pipeline(json!({}));
    for round in 0..2 {
        let task = run_reconcile(stale.clone(), ctx.clone()).await;
        expect_pipeline_list(&mut server, &stale).await;
        if round == 0 {
            expect_children(&mut server, 1).await;
        } else {
            // The Secret read of the first round is kept.
            expect_child_applies(&mut server, 1).await;
        }
        let status = expect_status_write(&mut server, &stale).await;
        server.finish().await;
        task.await.unwrap().expect("reconcile succeeds");
        let status = &status.body["status"];
        assert_eq!(status["topicCreated"], true, "round {round}");
        assert_eq!(status["deadLetterTopicCreated"], true, "round {round}");
        assert_eq!(
            condition(status, "TopicReady")["reason"],
            "Created",
            "round {round}"
        );
    }
    assert_eq!(admin.calls().len(), 2, "created once: {:?}", admin.calls());
}

#[tokio::test]
async fn an_update_adopts_existing_topics_changing_only_the_config_keys_the_spec_names() {
    let admin = Arc::new(
        InMemoryAdmin::default()
            .with_topic("whatsapp_webhooks_raw", 12, 1)
            .with_topic("whatsapp_webhooks_failed", 3, 1),
    );
    // Set by another tool: it stays.
    admin.set_config(
        "whatsapp_webhooks_raw",
        [("segment.bytes".to_string(), "1048576".to_string())].into(),
    );
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 100),
    );
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = pipeline(json!({"spec": {"ingress": {"replicas": 4},
        "topic": {"config": {"retention.ms": "86400000"}}}}));
    let task = run_reconcile(pipeline.clone(), ctx).await;

    expect_pipeline_list(&mut server, &pipeline).await;
    expect_ingress_secret(&mut server).await;
    expect_child_reads(&mut server).await;
    let ingress = server
        .expect(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-ingress?",
            |b| applied(b, json!({"status": {"availableReplicas": 4}})),
        )
        .await;
    assert_eq!(ingress.body["spec"]["replicas"], 4);
    server
        .expect(
            "PATCH",
            "/api/v1/namespaces/shop/services/orders-ingress?",
            |b| b.clone(),
        )
        .await;
    server
        .expect(
            "PATCH",
            "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/orders-ingress?",
            |b| b.clone(),
        )
        .await;
    server
        .expect(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-worker?",
            |b| {
                applied(
                    b,
                    json!({"spec": {"replicas": 2}, "status": {"readyReplicas": 2}}),
                )
            },
        )
        .await;
    // ceil(1200 / 1000) = 2 = running: no scaler write, straight to the status.
    let status = expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    task.await.unwrap().expect("reconcile succeeds");

    // Adopting creates nothing and sets only what the spec names: not wapipe's own defaults
    // (the record limit), not on the dead-letter topic whose spec names no key.
    assert_eq!(
        admin.calls(),
        [
            r#"set config whatsapp_webhooks_raw {"retention.ms": "86400000", "segment.bytes": "1048576"}"#
        ]
    );
    let status = &status.body["status"];
    assert_eq!(status["topicCreated"], false);
    assert_eq!(condition(status, "TopicReady")["reason"], "Adopted");
    assert!(
        condition(status, "TopicReady")["message"]
            .as_str()
            .unwrap()
            .contains("applied to topic whatsapp_webhooks_raw: retention.ms=86400000"),
        "{}",
        condition(status, "TopicReady")["message"]
    );
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(condition(status, "Scaling")["reason"], "Steady");
}

#[tokio::test]
async fn a_partition_increase_is_applied_with_a_key_remap_warning() {
    let admin = Arc::new(
        InMemoryAdmin::default()
            .with_topic("whatsapp_webhooks_raw", 6, 1)
            .with_topic("whatsapp_webhooks_failed", 3, 1),
    );
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = pipeline(json!({"spec": {"topic": {"partitions": 12}}}));
    let task = run_reconcile(pipeline.clone(), ctx).await;

    expect_pipeline_list(&mut server, &pipeline).await;
    expect_children(&mut server, 1).await;
    let status = expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    task.await.unwrap().expect("reconcile succeeds");

    assert_eq!(
        admin.calls(),
        ["create-partitions whatsapp_webhooks_raw 12"],
        "adopted topics: no configuration the spec does not name"
    );
    assert_eq!(admin.topic("whatsapp_webhooks_raw").unwrap().partitions, 12);
    let status = &status.body["status"];
    let topic_ready = condition(status, "TopicReady");
    assert_eq!(topic_ready["status"], "True");
    assert_eq!(topic_ready["reason"], "PartitionsIncreased");
    assert!(topic_ready["message"]
        .as_str()
        .unwrap()
        .contains("per-user order"));
    assert_eq!(status["partitions"], 12);
    assert!(server.events.contains(&"PartitionsIncreased".to_string()));
}

#[tokio::test]
async fn a_partition_decrease_or_replication_change_is_not_supported() {
    let admin = Arc::new(
        InMemoryAdmin::default()
            .with_topic("whatsapp_webhooks_raw", 24, 1)
            .with_topic("whatsapp_webhooks_failed", 3, 1),
    );
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = pipeline(json!({"spec": {"topic": {"partitions": 12, "replicationFactor": 3}}}));
    let task = run_reconcile(pipeline.clone(), ctx).await;

    expect_pipeline_list(&mut server, &pipeline).await;
    expect_children(&mut server, 1).await;
    let status = expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    task.await.unwrap().expect("reconcile succeeds");

    // The raw topic is left as it is; the adopted dead-letter topic gets no configuration
    // its spec does not name.
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
    let status = &status.body["status"];
    let topic_ready = condition(status, "TopicReady");
    assert_eq!(topic_ready["status"], "False");
    assert_eq!(topic_ready["reason"], "NotSupported");
    let message = topic_ready["message"].as_str().unwrap();
    assert!(message.contains("decreasing partitions") && message.contains("replication factor"));
    assert_eq!(condition(status, "Ready")["reason"], "TopicNotReady");
    assert!(server.events.contains(&"NotSupported".to_string()));
}

#[tokio::test]
async fn a_second_pipeline_claiming_the_topic_gets_a_resource_conflict() {
    let admin = Arc::new(InMemoryAdmin::default());
    let (ctx, mut server) = setup(admin.clone());
    let older = pipeline(
        json!({"metadata": {"name": "first", "uid": "aaaaaaaa-0000-4000-8000-000000000000",
        "creationTimestamp": "2025-06-01T00:00:00Z"}}),
    );
    let younger = pipeline(json!({}));
    let task = run_reconcile(younger.clone(), ctx).await;

    expect_list(&mut server, &[&older, &younger]).await;
    let status = expect_status_write(&mut server, &younger).await;
    server.finish().await;
    let action = task
        .await
        .unwrap()
        .expect("a conflict is reported, not an error");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(30)),
        "the holder's deletion changes nothing in this pipeline: it looks again"
    );

    assert!(admin.calls().is_empty(), "the loser touches no topic");
    let status = &status.body["status"];
    assert_eq!(condition(status, "Ready")["reason"], "ResourceConflict");
    assert_eq!(
        condition(status, "TopicReady")["reason"],
        "ResourceConflict"
    );
    assert!(condition(status, "Ready")["message"]
        .as_str()
        .unwrap()
        .contains("shop/first"));
    assert!(server.events.contains(&"ResourceConflict".to_string()));
}

#[tokio::test]
async fn delete_policy_adds_the_finalizer_once_the_pipeline_is_valid() {
    let admin = Arc::new(InMemoryAdmin::default());
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = pipeline(json!({"spec": {"deletionPolicy": "Delete"}}));
    let task = run_reconcile(pipeline.clone(), ctx).await;
    expect_pipeline_list(&mut server, &pipeline).await;

    let finalizer = server
        .expect(
            "PATCH",
            "/apis/wapipe.dev/v1alpha1/namespaces/shop/whatsappwebhookpipelines/orders?",
            |_| {
                let mut with = serde_json::to_value(&pipeline).unwrap();
                with["metadata"]["finalizers"] = json!(["wapipe.dev/topic"]);
                with
            },
        )
        .await;
    assert_eq!(finalizer.method, "PATCH");
    assert_eq!(
        finalizer.body["metadata"]["finalizers"],
        json!(["wapipe.dev/topic"])
    );
    assert_eq!(finalizer.body["metadata"]["resourceVersion"], "100");
    expect_children(&mut server, 1).await;
    expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    task.await.unwrap().expect("reconcile succeeds");
}

/// A pipeline being deleted, its deletionTimestamp `age` ago.
fn deleted_since(policy: &str, topic_created: bool, age: Duration) -> WhatsAppWebhookPipeline {
    let at = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(age.as_secs() as i64);
    pipeline(json!({
        "metadata": {"deletionTimestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "finalizers": ["wapipe.dev/topic"]},
        "spec": {"deletionPolicy": policy},
        "status": {"topicCreated": topic_created, "deadLetterTopicCreated": false}
    }))
}

/// A Deployment named `name` whose controller is the test pipeline.
fn owned_deployment(name: &str, uid: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "shop", "uid": uid,
                        "ownerReferences": [{"apiVersion": "wapipe.dev/v1alpha1",
                            "kind": "WhatsAppWebhookPipeline", "name": "orders",
                            "uid": "0b7c4a52-1d3e-4c8e-9a57-2f4b1c2d3e4f", "controller": true}]}})
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": "NotFound", "code": 404, "message": "not found"})
}

/// The pods are gone: both Deployments answer 404; then the pipelines are listed, for claims
/// on the topics, answered with `pipeline` alone.
async fn expect_pods_stopped(server: &mut ApiServer, pipeline: &WhatsAppWebhookPipeline) {
    for child in ["orders-ingress", "orders-worker"] {
        server
            .expect_status(
                "GET",
                &format!("/apis/apps/v1/namespaces/shop/deployments/{child}"),
                404,
                |_| not_found(),
            )
            .await;
    }
    expect_pipeline_list(server, pipeline).await;
}

fn deleted(policy: &str, topic_created: bool) -> WhatsAppWebhookPipeline {
    pipeline(json!({
        "metadata": {"deletionTimestamp": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "finalizers": ["wapipe.dev/topic"]},
        "spec": {"deletionPolicy": policy},
        "status": {"topicCreated": topic_created, "deadLetterTopicCreated": false}
    }))
}

#[tokio::test]
async fn deletion_under_delete_removes_only_the_topics_the_operator_created() {
    let admin = Arc::new(
        InMemoryAdmin::default()
            .with_topic("whatsapp_webhooks_raw", 12, 1)
            .with_topic("whatsapp_webhooks_failed", 3, 1),
    );
    let (ctx, mut server) = setup(admin.clone());
    let task = run_reconcile(deleted("Delete", true), ctx).await;

    expect_pods_stopped(&mut server, &deleted("Delete", true)).await;
    let release = expect_finalizers_patch(&mut server, &deleted("Delete", true)).await;
    assert_eq!(release.body["metadata"]["finalizers"], json!([]));
    server.finish().await;
    task.await.unwrap().expect("cleanup succeeds");

    // The dead-letter topic was adopted (deadLetterTopicCreated false): it stays.
    assert_eq!(admin.calls(), ["delete whatsapp_webhooks_raw"]);
    assert!(admin.topic("whatsapp_webhooks_failed").is_some());
    assert!(server.events.contains(&"TopicDeleted".to_string()));
    assert!(server.events.contains(&"TopicRetained".to_string()));
}

#[tokio::test]
async fn deletion_under_delete_keeps_an_adopted_topic() {
    let admin = Arc::new(InMemoryAdmin::default().with_topic("whatsapp_webhooks_raw", 12, 1));
    let (ctx, mut server) = setup(admin.clone());
    let task = run_reconcile(deleted("Delete", false), ctx).await;
    expect_pods_stopped(&mut server, &deleted("Delete", false)).await;
    expect_finalizers_patch(&mut server, &deleted("Delete", false)).await;
    server.finish().await;
    task.await.unwrap().expect("cleanup succeeds");
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
}

#[tokio::test]
async fn deletion_under_retain_keeps_every_topic_and_releases_the_finalizer() {
    let admin = Arc::new(InMemoryAdmin::default().with_topic("whatsapp_webhooks_raw", 12, 1));
    let (ctx, mut server) = setup(admin.clone());
    let task = run_reconcile(deleted("Retain", true), ctx).await;
    let release = expect_finalizers_patch(&mut server, &deleted("Retain", true)).await;
    assert_eq!(release.body["metadata"]["finalizers"], json!([]));
    server.finish().await;
    task.await.unwrap().expect("cleanup succeeds");
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
    assert!(admin.topic("whatsapp_webhooks_raw").is_some());
}

#[tokio::test]
async fn deletion_without_our_finalizer_makes_no_call() {
    let admin = Arc::new(InMemoryAdmin::default());
    let (ctx, mut server) = setup(admin.clone());
    let mut pipeline = deleted("Retain", false);
    pipeline.metadata.finalizers = Some(vec!["someone.else/finalizer".into()]);
    let task = run_reconcile(pipeline, ctx).await;
    server.finish().await;
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(admin.calls().is_empty());
}

#[tokio::test]
async fn deletion_stops_the_pods_before_it_touches_the_topics() {
    let admin = Arc::new(InMemoryAdmin::default().with_topic("whatsapp_webhooks_raw", 12, 1));
    let (ctx, mut server) = setup(admin.clone());
    let task = run_reconcile(deleted("Delete", true), ctx).await;
    // Both Deployments still exist: deleted in the foreground (gone only with their pods),
    // each on the condition that it is still the object read.
    for child in ["orders-ingress", "orders-worker"] {
        let path = format!("/apis/apps/v1/namespaces/shop/deployments/{child}");
        server
            .expect("GET", &path, |_| owned_deployment(child, "d-uid"))
            .await;
        let delete = server
            .expect("DELETE", &path, |_| {
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
            })
            .await;
        assert_eq!(delete.body["propagationPolicy"], "Foreground");
        assert_eq!(delete.body["preconditions"]["uid"], "d-uid");
    }
    server.finish().await;
    let action = task.await.unwrap().expect("cleanup waits");
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    assert!(
        admin.calls().is_empty(),
        "topics touched while pods run: {:?}",
        admin.calls()
    );
}

#[tokio::test]
async fn the_skip_cleanup_annotation_releases_the_finalizer_without_touching_kafka() {
    let admin = Arc::new(InMemoryAdmin::default().with_topic("whatsapp_webhooks_raw", 12, 1));
    let (ctx, mut server) = setup(admin.clone());
    let mut pipeline = deleted("Delete", true);
    pipeline
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("wapipe.dev/skip-cleanup".into(), "true".into());
    let task = run_reconcile(pipeline.clone(), ctx).await;
    let release = expect_finalizers_patch(&mut server, &pipeline).await;
    assert_eq!(release.body["metadata"]["finalizers"], json!([]));
    server.finish().await;
    task.await.unwrap().expect("released");
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
    assert!(
        server.events.contains(&"CleanupSkipped".to_string()),
        "{:?}",
        server.events
    );
}

/// A pipeline whose Kafka needs a SASL password from a Secret, being deleted `age` ago.
fn deleted_with_sasl(age: Duration) -> WhatsAppWebhookPipeline {
    let mut pipeline = deleted_since("Delete", true, age);
    pipeline.spec.kafka = serde_json::from_value(json!({
        "bootstrapServers": "kafka:9093",
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": "wapipe",
                 "passwordSecretRef": {"name": "kafka-user", "key": "password"}},
        "tls": {}
    }))
    .unwrap();
    pipeline
}

#[tokio::test]
async fn a_cleanup_that_cannot_reach_kafka_retries_then_gives_up_at_the_deadline_and_says_what_was_left(
) {
    // The namespace is being deleted: its Secrets are gone, so Kafka cannot be reached.
    for (age, gives_up) in [
        (Duration::from_secs(60), false),
        (Duration::from_secs(3600), true),
    ] {
        let admin = Arc::new(InMemoryAdmin::default().with_topic("whatsapp_webhooks_raw", 12, 1));
        let (ctx, mut server) = setup(admin.clone());
        let pipeline = deleted_with_sasl(age);
        let task = run_reconcile(pipeline.clone(), ctx).await;
        expect_pods_stopped(&mut server, &pipeline).await;
        server
            .expect_status(
                "GET",
                "/api/v1/namespaces/shop/secrets/kafka-user",
                404,
                |_| not_found(),
            )
            .await;
        if gives_up {
            let release = expect_finalizers_patch(&mut server, &pipeline).await;
            assert_eq!(release.body["metadata"]["finalizers"], json!([]));
            server.finish().await;
            task.await.unwrap().expect("released after the deadline");
            assert!(
                server.events.contains(&"CleanupAbandoned".to_string()),
                "{:?}",
                server.events
            );
        } else {
            server.finish().await;
            assert!(
                task.await.unwrap().is_err(),
                "within the deadline the error is retried"
            );
        }
        assert!(admin.calls().is_empty(), "{:?}", admin.calls());
    }
}

#[tokio::test]
async fn lag_that_cannot_be_read_still_writes_the_status_with_scaling_lag_unavailable() {
    let admin = Arc::new(
        InMemoryAdmin::default()
            .with_topic("whatsapp_webhooks_raw", 12, 1)
            .with_topic("whatsapp_webhooks_failed", 3, 1),
    );
    admin
        .fail_lag_reads
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = pipeline(json!({}));
    let task = run_reconcile(pipeline.clone(), ctx).await;
    expect_pipeline_list(&mut server, &pipeline).await;
    expect_children(&mut server, 2).await;
    // No replicas written without a lag reading; the status still is.
    let status = expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    task.await.unwrap().expect("the reconcile itself succeeds");
    let status = &status.body["status"];
    let scaling = condition(status, "Scaling");
    assert_eq!(scaling["status"], "False");
    assert_eq!(scaling["reason"], "LagUnavailable");
    assert!(
        scaling["message"]
            .as_str()
            .unwrap()
            .contains("wapipe-shop.orders"),
        "{scaling}"
    );
    assert_eq!(
        status["observedGeneration"],
        pipeline.metadata.generation.unwrap()
    );
    assert_eq!(condition(status, "Ready")["status"], "True");
}

/// A pipeline whose Kafka needs a SASL password from the Secret `kafka-user`, at `generation`.
fn with_sasl(generation: i64) -> WhatsAppWebhookPipeline {
    pipeline(json!({
        "metadata": {"generation": generation},
        "spec": {"kafka": {
            "bootstrapServers": "kafka:9093",
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "wapipe",
                     "passwordSecretRef": {"name": "kafka-user", "key": "password"}},
            "tls": {}
        }}
    }))
}

/// Expects the read of the Secret `kafka-user`, which holds the SASL password.
async fn expect_kafka_secret(server: &mut ApiServer) {
    server
        .expect("GET", "/api/v1/namespaces/shop/secrets/kafka-user", |_| {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-user", "namespace": "shop"}, "data": {"password": "aHVudGVyMg=="}})
        })
        .await;
}

/// One successful reconcile of `pipeline` on topics that exist and a caught-up group; the
/// Secrets are read only when `reads_secrets`.
async fn reconcile_reading_secrets(
    ctx: &Arc<Context>,
    server: &mut ApiServer,
    pipeline: &WhatsAppWebhookPipeline,
    reads_secrets: bool,
) {
    let task = run_reconcile(pipeline.clone(), ctx.clone()).await;
    expect_pipeline_list(server, pipeline).await;
    if reads_secrets {
        expect_kafka_secret(server).await;
        expect_ingress_secret(server).await;
    }
    expect_child_applies(server, 1).await;
    expect_status_write(server, pipeline).await;
    server.finish().await;
    task.await.unwrap().expect("reconcile succeeds");
}

fn existing_topics() -> Arc<InMemoryAdmin> {
    let admin = Arc::new(
        InMemoryAdmin::default()
            .with_topic("whatsapp_webhooks_raw", 12, 1)
            .with_topic("whatsapp_webhooks_failed", 3, 1),
    );
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 0),
    );
    admin
}

/// The chart grants Secrets `get` only: no watch tells the operator of a change, and a read per
/// reconcile per pipeline was most of its API traffic.
#[tokio::test]
async fn a_second_reconcile_does_not_read_the_secrets_again_until_the_spec_changes() {
    let (ctx, mut server) = setup(existing_topics());
    reconcile_reading_secrets(&ctx, &mut server, &with_sasl(2), true).await;
    reconcile_reading_secrets(&ctx, &mut server, &with_sasl(2), false).await;
    // A new generation may name other Secrets or keys: read again.
    reconcile_reading_secrets(&ctx, &mut server, &with_sasl(3), true).await;
    reconcile_reading_secrets(&ctx, &mut server, &with_sasl(3), false).await;
}

#[tokio::test]
async fn secrets_are_read_again_once_older_than_the_refresh_interval() {
    // An interval of zero: every read is already too old, so a rotated password is seen at once.
    let (ctx, mut server) = setup_with(existing_topics(), |ctx| {
        ctx.with_secret_refresh(Duration::ZERO)
    });
    reconcile_reading_secrets(&ctx, &mut server, &with_sasl(2), true).await;
    reconcile_reading_secrets(&ctx, &mut server, &with_sasl(2), true).await;
}

#[tokio::test]
async fn kafka_refusing_the_credentials_reads_the_password_again_at_the_next_reconcile() {
    let admin = existing_topics();
    admin
        .refuse_credentials
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (ctx, mut server) = setup(admin);
    let pipeline = with_sasl(2);
    for round in 0..2 {
        let task = run_reconcile(pipeline.clone(), ctx.clone()).await;
        expect_pipeline_list(&mut server, &pipeline).await;
        // The password is read each time; the ingress Secret, which Kafka did not refuse, once.
        expect_kafka_secret(&mut server).await;
        if round == 0 {
            expect_ingress_secret(&mut server).await;
        }
        let status = expect_status_write(&mut server, &pipeline).await;
        server.finish().await;
        let error = task.await.unwrap().expect_err("Kafka refuses the password");
        assert!(error.is_kafka_auth(), "round {round}: {error}");
        assert_eq!(
            condition(&status.body["status"], "TopicReady")["reason"],
            "KafkaUnavailable",
            "round {round}"
        );
    }
}

/// `kubectl delete namespace`: for a moment the pipeline is not deleted yet while its namespace
/// already refuses new objects. Not a failure (no retry storm, no refusal in the log): the
/// pipeline's own deletion comes next.
#[tokio::test]
async fn a_namespace_being_deleted_refusing_the_children_is_not_a_failure() {
    let (ctx, mut server) = setup(existing_topics());
    let pipeline = pipeline(json!({}));
    let task = run_reconcile(pipeline.clone(), ctx).await;
    expect_pipeline_list(&mut server, &pipeline).await;
    expect_ingress_secret(&mut server).await;
    expect_child_reads(&mut server).await;
    server
        .expect_status(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-ingress?",
            403,
            |_| {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                       "message": "deployments.apps \"orders-ingress\" is forbidden: unable to create new content in namespace shop because it is being terminated"})
            },
        )
        .await;
    server.finish().await;
    let action = task.await.unwrap().expect("not a failure");
    assert_eq!(action, Action::await_change());
}

/// Failures before the deletion build up a backoff of minutes; a pipeline being deleted is
/// still tried again right after its cleanup deadline, so the namespace is not held past it.
#[test]
fn a_deleted_pipeline_is_retried_by_its_cleanup_deadline_whatever_the_backoff() {
    assert_eq!(backoff(1), Duration::from_secs(5));
    assert_eq!(backoff(5), Duration::from_secs(80));
    // The highest draw of the jitter: the whole backoff.
    let most = 1.0;
    assert_eq!(retry_delay(5, None, most), Duration::from_secs(80));
    assert_eq!(
        retry_delay(5, Some(Duration::from_secs(4)), most),
        Duration::from_secs(5),
        "4 s to the deadline: tried again 1 s after it"
    );
    assert_eq!(
        retry_delay(5, Some(Duration::ZERO), 0.0),
        Duration::from_secs(1),
        "past the deadline: at once, to give up and release"
    );
    assert_eq!(
        retry_delay(1, Some(Duration::from_secs(500)), most),
        Duration::from_secs(5),
        "a deadline far away changes nothing"
    );
}

/// A Deployment named `name` that some other controller (or nobody) made.
fn foreign_deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "shop", "uid": "someone-elses",
                        "labels": {"app": "billing"}}})
}

/// Force-applying over a same-named object would take its fields, and the owner reference
/// would then have it garbage-collected with the pipeline.
#[tokio::test]
async fn a_same_named_deployment_the_pipeline_does_not_control_is_a_conflict_and_never_applied() {
    let (ctx, mut server) = setup(existing_topics());
    let pipeline = pipeline(json!({}));
    let task = run_reconcile(pipeline.clone(), ctx).await;
    expect_pipeline_list(&mut server, &pipeline).await;
    expect_ingress_secret(&mut server).await;
    server
        .expect(
            "GET",
            "/apis/apps/v1/namespaces/shop/deployments/orders-ingress",
            |_| foreign_deployment("orders-ingress"),
        )
        .await;
    // No apply follows: the failure is written to the status at once.
    let status = expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    let error = task.await.unwrap().expect_err("a conflict is retried");
    assert!(error.to_string().contains("orders-ingress"), "{error}");
    let status = &status.body["status"];
    let ingress = condition(status, "IngressReady");
    assert_eq!(ingress["status"], "False");
    assert_eq!(ingress["reason"], "ResourceConflict");
    assert_eq!(condition(status, "Ready")["reason"], "ResourceConflict");
    assert!(
        server.events.contains(&"ResourceConflict".to_string()),
        "{:?}",
        server.events
    );
}

#[tokio::test]
async fn a_cleanup_never_deletes_a_same_named_deployment_the_pipeline_does_not_control() {
    let admin = Arc::new(InMemoryAdmin::default().with_topic("whatsapp_webhooks_raw", 12, 1));
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = deleted("Delete", true);
    let task = run_reconcile(pipeline.clone(), ctx).await;
    for child in ["orders-ingress", "orders-worker"] {
        server
            .expect(
                "GET",
                &format!("/apis/apps/v1/namespaces/shop/deployments/{child}"),
                |_| foreign_deployment(child),
            )
            .await;
    }
    // No DELETE: straight on to the claims and the topics.
    expect_pipeline_list(&mut server, &pipeline).await;
    expect_finalizers_patch(&mut server, &pipeline).await;
    server.finish().await;
    task.await.unwrap().expect("cleanup succeeds");
    assert_eq!(admin.calls(), ["delete whatsapp_webhooks_raw"]);
}

#[tokio::test]
async fn an_invalid_pipeline_under_delete_gets_no_finalizer() {
    let admin = Arc::new(InMemoryAdmin::default());
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = pipeline(json!({"spec": {"deletionPolicy": "Delete",
        "deadLetterTopic": {"name": "whatsapp_webhooks_raw"}}}));
    let task = run_reconcile(pipeline.clone(), ctx).await;
    expect_pipeline_list(&mut server, &pipeline).await;
    // The status says why; no finalizer patch comes before or after it.
    let status = expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    task.await
        .unwrap()
        .expect("a spec error is reported, not retried");
    assert_eq!(
        condition(&status.body["status"], "Ready")["reason"],
        "InvalidSpec"
    );
    assert!(admin.calls().is_empty());
}

/// A pod stuck Terminating on a lost node keeps its Deployment (deleted in the foreground)
/// forever: the deadline must hold on that path too.
#[tokio::test]
async fn a_cleanup_waiting_for_pods_that_never_stop_gives_up_at_the_deadline() {
    let admin = Arc::new(InMemoryAdmin::default().with_topic("whatsapp_webhooks_raw", 12, 1));
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = deleted_since("Delete", true, Duration::from_secs(3600));
    let task = run_reconcile(pipeline.clone(), ctx).await;
    for child in ["orders-ingress", "orders-worker"] {
        let path = format!("/apis/apps/v1/namespaces/shop/deployments/{child}");
        server
            .expect("GET", &path, |_| owned_deployment(child, "d-uid"))
            .await;
        server
            .expect("DELETE", &path, |_| {
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
            })
            .await;
    }
    let release = expect_finalizers_patch(&mut server, &pipeline).await;
    assert_eq!(release.body["metadata"]["finalizers"], json!([]));
    server.finish().await;
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(
        admin.calls().is_empty(),
        "no topic deleted under running pods"
    );
    assert!(
        server.events.contains(&"CleanupAbandoned".to_string()),
        "{:?}",
        server.events
    );
}

/// The old pipeline is being deleted (its cleanup waits for its pods) while a replacement
/// names the same topic.
fn replacement() -> WhatsAppWebhookPipeline {
    pipeline(
        json!({"metadata": {"name": "orders-v2", "uid": "bbbbbbbb-0000-4000-8000-000000000000",
        "creationTimestamp": "2026-03-01T00:00:00Z"}}),
    )
}

#[tokio::test]
async fn a_replacement_pipeline_cannot_adopt_a_topic_whose_owner_is_being_deleted() {
    let admin = Arc::new(InMemoryAdmin::default().with_topic("whatsapp_webhooks_raw", 12, 1));
    let (ctx, mut server) = setup(admin.clone());
    let old = deleted("Delete", true);
    let new = replacement();
    let task = run_reconcile(new.clone(), ctx).await;
    expect_list(&mut server, &[&old, &new]).await;
    let status = server
        .expect(
            "PATCH",
            "/apis/wapipe.dev/v1alpha1/namespaces/shop/whatsappwebhookpipelines/orders-v2/status?",
            |b| applied(&serde_json::to_value(&new).unwrap(), b.clone()),
        )
        .await;
    server.finish().await;
    task.await.unwrap().expect("a conflict is reported");
    assert_eq!(
        condition(&status.body["status"], "TopicReady")["reason"],
        "ResourceConflict"
    );
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
}

#[tokio::test]
async fn a_cleanup_keeps_a_created_topic_another_pipeline_claims() {
    let admin = Arc::new(InMemoryAdmin::default().with_topic("whatsapp_webhooks_raw", 12, 1));
    let (ctx, mut server) = setup(admin.clone());
    let old = deleted("Delete", true);
    let new = replacement();
    let task = run_reconcile(old.clone(), ctx).await;
    for child in ["orders-ingress", "orders-worker"] {
        server
            .expect_status(
                "GET",
                &format!("/apis/apps/v1/namespaces/shop/deployments/{child}"),
                404,
                |_| not_found(),
            )
            .await;
    }
    expect_list(&mut server, &[&old, &new]).await;
    expect_finalizers_patch(&mut server, &old).await;
    server.finish().await;
    task.await.unwrap().expect("cleanup succeeds");
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
    assert!(admin.topic("whatsapp_webhooks_raw").is_some());
    assert!(server.events.contains(&"TopicRetained".to_string()));
}

/// `topicCreated` was one flag carried across a rename of `spec.topic.name`: renamed onto an
/// existing topic, the old cleanup deleted the topic it adopted and left the one it created.
#[tokio::test]
async fn after_a_rename_the_cleanup_deletes_the_topic_it_created_not_the_one_it_adopted() {
    let admin = Arc::new(
        InMemoryAdmin::default()
            .with_topic("original", 12, 1)
            .with_topic("adopted", 12, 1),
    );
    let (ctx, mut server) = setup(admin.clone());
    let mut renamed = deleted("Delete", true);
    renamed.spec.topic.name = "adopted".into();
    renamed.status.as_mut().unwrap().created_topics = Some(vec!["original".into()]);
    let task = run_reconcile(renamed.clone(), ctx).await;
    expect_pods_stopped(&mut server, &renamed).await;
    expect_finalizers_patch(&mut server, &renamed).await;
    server.finish().await;
    task.await.unwrap().expect("cleanup succeeds");
    assert_eq!(admin.calls(), ["delete original"]);
    assert!(admin.topic("adopted").is_some());
}

#[tokio::test]
async fn a_second_bootstrap_name_of_the_same_kafka_cluster_is_a_resource_conflict() {
    let admin = Arc::new(InMemoryAdmin::default().with_cluster_id("cluster-1"));
    let (ctx, mut server) = setup(admin.clone());
    let mut first = pipeline(
        json!({"metadata": {"name": "first", "namespace": "payments",
        "uid": "aaaaaaaa-0000-4000-8000-000000000000", "creationTimestamp": "2025-06-01T00:00:00Z"},
        "spec": {"kafka": {"bootstrapServers": "kafka.kafka.svc:9092"}}}),
    );
    first.status = Some(serde_json::from_value(json!({"kafkaClusterId": "cluster-1"})).unwrap());
    let second = pipeline(json!({"spec": {
        "kafka": {"bootstrapServers": "kafka.kafka.svc.cluster.local:9092"},
        "worker": {"consumerGroup": "orders-workers"}}}));
    let task = run_reconcile(second.clone(), ctx).await;
    expect_list(&mut server, &[&first, &second]).await;
    expect_ingress_secret(&mut server).await;
    let status = expect_status_write(&mut server, &second).await;
    server.finish().await;
    task.await.unwrap().expect("a conflict is reported");
    let ready = condition(&status.body["status"], "Ready");
    assert_eq!(ready["reason"], "ResourceConflict");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("payments/first"),
        "{ready}"
    );
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
}

#[tokio::test]
async fn a_consumer_group_another_pipeline_uses_is_a_resource_conflict() {
    let admin = Arc::new(InMemoryAdmin::default());
    let (ctx, mut server) = setup(admin.clone());
    let first = pipeline(json!({"metadata": {"name": "first",
        "uid": "aaaaaaaa-0000-4000-8000-000000000000", "creationTimestamp": "2025-06-01T00:00:00Z"},
        "spec": {"worker": {"consumerGroup": "shared"}}}));
    let second = pipeline(json!({"spec": {"topic": {"name": "other"},
        "deadLetterTopic": {"name": "other-failed"}, "worker": {"consumerGroup": "shared"}}}));
    let task = run_reconcile(second.clone(), ctx).await;
    expect_list(&mut server, &[&first, &second]).await;
    let status = expect_status_write(&mut server, &second).await;
    server.finish().await;
    task.await.unwrap().expect("a conflict is reported");
    assert!(condition(&status.body["status"], "Ready")["message"]
        .as_str()
        .unwrap()
        .contains("consumer group shared"));
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
}

#[tokio::test]
async fn a_pipeline_paused_at_zero_empties_its_group_and_still_reports_how_late_it_is() {
    let admin = Arc::new(InMemoryAdmin::default());
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = pipeline(json!({
        "metadata": {"annotations": {"wapipe.dev/pause-scaling": "0"}}
    }));
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 250),
    );
    // Partition 4's oldest unconsumed record was written 95 s ago; the others' a second ago.
    let now_ms = chrono::Utc::now().timestamp_millis();
    admin.set_record_times(
        "whatsapp_webhooks_raw",
        (0..12)
            .map(|p| (p, now_ms - if p == 4 { 95_000 } else { 1_000 }))
            .collect(),
    );
    let task = run_reconcile(pipeline.clone(), ctx.clone()).await;

    expect_pipeline_list(&mut server, &pipeline).await;
    expect_children(&mut server, 2).await;
    let scale = server
        .expect(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-worker?",
            |b| b.clone(),
        )
        .await;
    assert_eq!(scale.body["spec"], json!({"replicas": 0}), "paused at 0");
    let status = expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    task.await.unwrap().expect("reconcile succeeds");

    let status = &status.body["status"];
    let scaling = condition(status, "Scaling");
    assert_eq!(scaling["status"], "False");
    assert_eq!(scaling["reason"], "Paused");
    assert_eq!(status["desiredWorkers"], 0);
    assert_eq!(status["worstPartition"], 4);
    let delay = status["timeLagSeconds"].as_i64().unwrap();
    assert!((95..100).contains(&delay), "{status}");
    let partition_delay: i64 = series_of_orders(&ctx)
        .iter()
        .find(|s| {
            s.starts_with("wapipe_operator_partition_time_lag_seconds")
                && s.contains("partition=\"0\"")
        })
        .and_then(|s| s.rsplit(' ').next()?.parse().ok())
        .expect("partition 0's delay in the metrics");
    assert!((1..5).contains(&partition_delay), "{partition_delay}");
}

/// The operator's metrics as Prometheus text, lines naming the test pipeline only.
fn series_of_orders(ctx: &Context) -> Vec<String> {
    let mut registry = prometheus_client::registry::Registry::default();
    ctx.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && line.contains("pipeline=\"orders\""))
        .map(String::from)
        .collect()
}

/// One reconcile of a new pipeline with lag on every partition, scaled to 3 workers.
async fn reconcile_lagging_pipeline(
    ctx: &Arc<Context>,
    server: &mut ApiServer,
    pipeline: &WhatsAppWebhookPipeline,
) -> Value {
    let task = run_reconcile(pipeline.clone(), ctx.clone()).await;
    expect_pipeline_list(server, pipeline).await;
    expect_children(server, 1).await;
    server
        .expect(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-worker?",
            |b| b.clone(),
        )
        .await;
    let status = expect_status_write(server, pipeline).await;
    server.finish().await;
    task.await.unwrap().expect("reconcile succeeds");
    status.body["status"].clone()
}

/// Names are reused: a pipeline deleted and created again under the same name is another
/// object (another uid) and must not inherit the old one's scaler history (its last poll, its
/// scale-down window, its last decision).
#[tokio::test]
async fn a_pipeline_recreated_under_the_same_name_starts_without_the_old_ones_history() {
    let admin = Arc::new(InMemoryAdmin::default());
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 250),
    );
    let (ctx, mut server) = setup(admin.clone());
    let old = pipeline(json!({}));
    let status = reconcile_lagging_pipeline(&ctx, &mut server, &old).await;
    assert_eq!(status["totalLag"], 3000);

    // Deleted (Retain: no finalizer, no cleanup) and created again at once, with no lag now.
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 0),
    );
    let new = pipeline(
        json!({"metadata": {"uid": "5d1e0f4a-7777-4c8e-9a57-000000000002", "generation": 1}}),
    );
    let task = run_reconcile(new.clone(), ctx.clone()).await;
    expect_pipeline_list(&mut server, &new).await;
    expect_children(&mut server, 1).await;
    // The new pipeline polls at once: no lag, one worker, nothing to scale.
    let status = expect_status_write(&mut server, &new).await;
    server.finish().await;
    task.await.unwrap().expect("reconcile succeeds");
    let status = &status.body["status"];
    assert_eq!(status["totalLag"], 0, "{status}");
    assert_eq!(status["desiredWorkers"], 1, "{status}");
    assert_eq!(ctx.remembered(), 1, "the old pipeline's memory is gone");
}

/// A `Retain` pipeline has no finalizer: when it leaves, its memory and every metric series it
/// exported go with it (a stalled-partition alert must not keep firing for a pipeline that no
/// longer exists).
#[tokio::test]
async fn a_pipeline_that_leaves_takes_its_memory_and_metric_series_with_it() {
    let admin = Arc::new(InMemoryAdmin::default());
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 250),
    );
    let (ctx, mut server) = setup(admin.clone());
    let live = pipeline(json!({}));
    reconcile_lagging_pipeline(&ctx, &mut server, &live).await;
    let series = series_of_orders(&ctx);
    assert!(
        series.iter().any(|s| s.contains("partition_lag")),
        "{series:?}"
    );
    assert_eq!(ctx.remembered(), 1);

    // Its deletion is seen (no finalizer of ours: nothing to clean up on Kafka).
    let mut leaving = deleted("Retain", false);
    leaving.metadata.finalizers = None;
    let task = run_reconcile(leaving, ctx.clone()).await;
    server.finish().await;
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(series_of_orders(&ctx), Vec::<String>::new());
    assert_eq!(ctx.remembered(), 0);
}

/// A pipeline gone from the controller's cache without any reconcile of its deletion is
/// forgotten, series included, while the others are kept.
#[tokio::test]
async fn a_pipeline_gone_from_the_cache_is_forgotten_and_the_others_kept() {
    let admin = Arc::new(InMemoryAdmin::default());
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 250),
    );
    let (ctx, mut server) = setup(admin.clone());
    let live = pipeline(json!({}));
    reconcile_lagging_pipeline(&ctx, &mut server, &live).await;
    ctx.forget_departed(&[Arc::new(live.clone())]);
    assert_eq!(ctx.remembered(), 1, "still in the cache: kept");
    assert!(!series_of_orders(&ctx).is_empty());
    ctx.forget_departed(&[]);
    assert_eq!(ctx.remembered(), 0);
    assert_eq!(series_of_orders(&ctx), Vec::<String>::new());
}

/// The API server refuses a child as invalid (a quantity it cannot parse, a name it does not
/// take): that needs a person, so the pipeline says so at the current generation, with an
/// Event, and waits for a change instead of showing Progressing forever.
#[tokio::test]
async fn a_child_the_api_server_refuses_is_a_spec_condition_at_the_current_generation() {
    let (ctx, mut server) = setup(existing_topics());
    let pipeline = pipeline(json!({}));
    let task = run_reconcile(pipeline.clone(), ctx.clone()).await;
    expect_pipeline_list(&mut server, &pipeline).await;
    expect_ingress_secret(&mut server).await;
    expect_child_reads(&mut server).await;
    server
        .expect_status(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-ingress?",
            422,
            |_| {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                       "message": "Deployment.apps \"orders-ingress\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"1Gx\": quantities must match the regular expression"})
            },
        )
        .await;
    let status = expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    let error = task.await.unwrap().expect_err("the apply failed");
    let status = &status.body["status"];
    assert_eq!(status["observedGeneration"], 2, "{status}");
    let ingress = condition(status, "IngressReady");
    assert_eq!(ingress["status"], "False");
    assert_eq!(ingress["reason"], "ChildRefused");
    assert!(
        ingress["message"].as_str().unwrap().contains("1Gx"),
        "{ingress}"
    );
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert!(
        server.events.contains(&"ChildRefused".to_string()),
        "{:?}",
        server.events
    );
    let action = error_policy(Arc::new(pipeline), &error, ctx);
    assert_eq!(
        action,
        Action::await_change(),
        "waits for a change of the spec"
    );
}

/// After a Kafka outage every pipeline fails at once, at the same attempt: their retries must
/// not come back together. Fifty pipelines' next retries, as the error policy schedules them,
/// are not all the same.
#[tokio::test]
async fn fifty_pipelines_failing_together_do_not_retry_in_lockstep() {
    let (ctx, _server) = setup(Arc::new(InMemoryAdmin::default()));
    let error = wapipe_operator::Error::ReadLag(wapipe_operator::kafka::AdminError::NoSuchTopic(
        "whatsapp_webhooks_raw".into(),
    ));
    let mut actions: Vec<Action> = Vec::new();
    for n in 0..50 {
        let pipeline =
            pipeline(json!({"metadata": {"name": format!("p{n}"), "uid": format!("uid-{n}")}}));
        let action = error_policy(Arc::new(pipeline), &error, ctx.clone());
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    assert!(
        actions.len() >= 40,
        "{} distinct retry times of 50",
        actions.len()
    );
}

/// The spread itself, pure: draws across [0, 1) put a backoff's retries between half of it and
/// all of it, spread over that whole range, never beyond the backoff's cap.
#[test]
fn jitter_spreads_retries_over_the_upper_half_of_the_backoff() {
    let delays: Vec<Duration> = (0..50)
        .map(|n| retry_delay(3, None, f64::from(n) / 50.0))
        .collect();
    let (low, high) = (*delays.iter().min().unwrap(), *delays.iter().max().unwrap());
    assert_eq!(backoff(3), Duration::from_secs(20));
    assert_eq!(
        low,
        Duration::from_secs(10),
        "the earliest: half the backoff"
    );
    assert!(
        high < Duration::from_secs(20) && high > Duration::from_millis(19_500),
        "{high:?}"
    );
    let mut distinct = delays.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 50, "every draw its own time");
    assert_eq!(
        jittered(Duration::from_secs(300), 1.0),
        Duration::from_secs(300),
        "the cap holds"
    );
    assert_eq!(
        jittered(Duration::from_secs(8), f64::NAN),
        Duration::from_secs(4)
    );
}

/// An HTTP sink URL may carry a token or a password; whatever echoes it (here the API server
/// refusing the worker Deployment) reaches the status and the Event without them.
#[tokio::test]
async fn a_sink_url_credential_never_reaches_a_condition_message() {
    let (ctx, mut server) = setup(existing_topics());
    let pipeline = pipeline(json!({"spec": {"worker": {"sink": {
        "type": "http", "httpUrl": "https://bob:pa55word@hooks.example.com/wa?token=s3cr3t"}}}}));
    let task = run_reconcile(pipeline.clone(), ctx.clone()).await;
    expect_pipeline_list(&mut server, &pipeline).await;
    expect_ingress_secret(&mut server).await;
    expect_child_reads(&mut server).await;
    for path in &CHILDREN[..3] {
        server
            .expect("PATCH", &format!("{path}?"), |b| b.clone())
            .await;
    }
    server
        .expect_status(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-worker?",
            422,
            |_| {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                       "message": "Deployment.apps \"orders-worker\" is invalid: spec.template.spec.containers[0].env[9].value: Invalid value: \"https://bob:pa55word@hooks.example.com/wa?token=s3cr3t\": too long"})
            },
        )
        .await;
    let status = expect_status_write(&mut server, &pipeline).await;
    server.finish().await;
    task.await.unwrap().expect_err("the apply failed");
    let text = status.body["status"].to_string();
    assert!(
        !text.contains("s3cr3t") && !text.contains("pa55word"),
        "{text}"
    );
    let workers = condition(&status.body["status"], "WorkersReady");
    assert!(
        workers["message"]
            .as_str()
            .unwrap()
            .contains("https://REDACTED@hooks.example.com/wa?token=REDACTED"),
        "{workers}"
    );
}

/// An idle pipeline whose status already says what a reconcile finds costs no status write:
/// every poll of 50 idle pipelines used to patch 50 statuses.
#[tokio::test]
async fn a_status_that_did_not_change_is_not_written_again() {
    let admin = Arc::new(InMemoryAdmin::default());
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 0),
    );
    let (ctx, mut server) = setup(admin.clone());
    let mut idle = pipeline(json!({}));
    for poll in 1..=3 {
        let task = run_reconcile(idle.clone(), ctx.clone()).await;
        expect_pipeline_list(&mut server, &idle).await;
        if poll == 1 {
            expect_children(&mut server, 1).await;
        } else {
            // The Secret was read once and is kept.
            expect_child_applies(&mut server, 1).await;
        }
        if poll < 3 {
            let written = expect_status_write(&mut server, &idle).await;
            idle.status = Some(serde_json::from_value(written.body["status"].clone()).unwrap());
        }
        // The third poll finds what the second wrote: no request after the children.
        server.finish().await;
        task.await.unwrap().expect("reconcile succeeds");
    }
}
