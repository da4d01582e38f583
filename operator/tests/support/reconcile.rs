//! The scenario kit of the reconcile mock tests: a test pipeline, the in-memory Kafka admin, and
//! the API calls a reconcile makes, expected one helper per step.
#![allow(dead_code)] // not every test file uses every helper

#[path = "api.rs"]
pub mod api;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::{json, Value};
use wapipe_operator::controller::{reconcile, Context};
use wapipe_operator::kafka::InMemoryAdmin;
use wapipe_operator::metrics::Metrics;
use wapipe_operator::scaler::policy::PartitionOffsets;
use wapipe_operator::WhatsAppWebhookPipeline;

use api::{not_found, ApiServer, Seen};

pub fn setup(admin: Arc<InMemoryAdmin>) -> (Arc<Context>, ApiServer) {
    setup_with(admin, |ctx| ctx)
}

/// [`setup`] on `admin`, which is returned too, for what the test checks on it.
pub fn setup_on(admin: InMemoryAdmin) -> (Arc<InMemoryAdmin>, Arc<Context>, ApiServer) {
    let admin = Arc::new(admin);
    let (ctx, server) = setup(admin.clone());
    (admin, ctx, server)
}

/// [`setup`], with the context changed by `configure`.
pub fn setup_with(
    admin: Arc<InMemoryAdmin>,
    configure: impl FnOnce(Context) -> Context,
) -> (Arc<Context>, ApiServer) {
    let (client, server) = api::pair("default");
    let ctx = Context::new(
        client,
        admin,
        "ghcr.io/wapipe/wapipe:0.1.0",
        Arc::new(Metrics::default()),
    );
    (Arc::new(configure(ctx)), server)
}

pub fn pipeline(extra: Value) -> WhatsAppWebhookPipeline {
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
            "worker": {"minReplicas": 1, "maxReplicas": 12, "lagPerReplica": 1000},
            // Named as the API server named every pipeline's topics before the defaults came
            // from the pipeline's name (claims::topic_names).
            "topic": {"name": "whatsapp_webhooks_raw"},
            "deadLetterTopic": {"name": "whatsapp_webhooks_failed"}
        }
    });
    merge(&mut base, extra);
    serde_json::from_value(base).expect("test pipeline parses")
}

pub fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

pub fn list_of(pipelines: &[&WhatsAppWebhookPipeline]) -> Value {
    json!({
        "apiVersion": "wapipe.dev/v1alpha1", "kind": "WhatsAppWebhookPipelineList",
        "metadata": {"resourceVersion": "1"}, "items": pipelines,
    })
}

/// Expects the list of every pipeline (for the topic-claims check), answered with `pipeline` alone.
pub async fn expect_pipeline_list(server: &mut ApiServer, pipeline: &WhatsAppWebhookPipeline) {
    expect_list(server, &[pipeline]).await;
}

/// Expects the list of every pipeline, answered with `pipelines`.
pub async fn expect_list(server: &mut ApiServer, pipelines: &[&WhatsAppWebhookPipeline]) {
    server
        .expect(
            "GET",
            "/apis/wapipe.dev/v1alpha1/whatsappwebhookpipelines?",
            |_| list_of(pipelines),
        )
        .await;
}

/// The orders pipeline's path on the API server.
const ORDERS: &str = "/apis/wapipe.dev/v1alpha1/namespaces/shop/whatsappwebhookpipelines/orders";

/// Expects a patch of the orders pipeline at `path` (after [`ORDERS`]), answered with `pipeline`
/// patched.
async fn expect_orders_patch(
    server: &mut ApiServer,
    pipeline: &WhatsAppWebhookPipeline,
    path: &str,
) -> Seen {
    let pipeline = serde_json::to_value(pipeline).unwrap();
    server
        .expect("PATCH", &format!("{ORDERS}{path}"), |b| {
            applied(&pipeline, b.clone())
        })
        .await
}

/// Expects the finalizer patch of the orders pipeline, answered with `pipeline` patched.
pub async fn expect_finalizers_patch(
    server: &mut ApiServer,
    pipeline: &WhatsAppWebhookPipeline,
) -> Seen {
    expect_orders_patch(server, pipeline, "?").await
}

/// Expects the status write of `pipeline`, answered with the pipeline carrying it.
pub async fn expect_status_write(
    server: &mut ApiServer,
    pipeline: &WhatsAppWebhookPipeline,
) -> Seen {
    expect_orders_patch(server, pipeline, "/status?").await
}

/// The API server's answer to an apply: the object, with the fields the server would add.
pub fn applied(body: &Value, extra: Value) -> Value {
    let mut answer = body.clone();
    merge(&mut answer, extra);
    answer
}

pub fn lagging(partitions: i32, lag_each: i64) -> Vec<PartitionOffsets> {
    (0..partitions)
        .map(|partition| PartitionOffsets {
            partition,
            committed: Some(1000),
            log_start: 0,
            log_end: 1000 + lag_each,
        })
        .collect()
}

pub fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// Checks that `condition`'s message contains `part`.
#[track_caller]
pub fn assert_message_contains(condition: &Value, part: &str) {
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(message.contains(part), "{part:?} not in {condition}");
}

/// Expects the read of the ingress app Secret, which exists.
pub async fn expect_ingress_secret(server: &mut ApiServer) {
    server
        .expect("GET", "/api/v1/namespaces/shop/secrets/wasender", |_| {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wasender", "namespace": "shop"}, "data": {"secret": "c2VjcmV0"}})
        })
        .await;
}

/// Expects the check of the ingress Secret, then the four child applies, answering as a cluster
/// whose pods are up and whose worker Deployment runs `worker_replicas`. Returns the worker
/// template apply.
pub async fn expect_children(server: &mut ApiServer, worker_replicas: i64) -> Seen {
    expect_ingress_secret(server).await;
    expect_child_applies(server, worker_replicas).await
}

/// The paths of the four children, in the order the reconcile reads and applies them.
pub const CHILDREN: [&str; 4] = [
    "/apis/apps/v1/namespaces/shop/deployments/orders-ingress",
    "/api/v1/namespaces/shop/services/orders-ingress",
    "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/orders-ingress",
    "/apis/apps/v1/namespaces/shop/deployments/orders-worker",
];

/// Expects the read of every child before any apply, answered as not there yet.
pub async fn expect_child_reads(server: &mut ApiServer) {
    for path in CHILDREN {
        server
            .expect_status("GET", path, 404, |_| not_found())
            .await;
    }
}

/// The four child applies of [`expect_children`], without the Secret read (kept from before),
/// after the reads that check no one else holds those names.
pub async fn expect_child_applies(server: &mut ApiServer, worker_replicas: i64) -> Seen {
    expect_child_reads(server).await;
    let ingress = expect_ingress_apply(server, 2).await;
    assert!(ingress.uri.contains("fieldManager=wapipe-operator"));
    assert!(ingress.uri.contains("force=true"));
    expect_ingress_service_and_budget(server).await;
    let worker = expect_worker_apply(server, worker_replicas).await;
    assert!(worker.uri.contains("fieldManager=wapipe-operator"));
    assert!(
        worker.body["spec"].get("replicas").is_none(),
        "the template apply must leave replicas to the scaler"
    );
    worker
}

/// Expects the apply of the ingress Deployment, answered with `available` replicas available.
pub async fn expect_ingress_apply(server: &mut ApiServer, available: i64) -> Seen {
    server
        .expect(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-ingress?",
            |b| applied(b, json!({"status": {"availableReplicas": available}})),
        )
        .await
}

/// Expects the template apply of the worker Deployment, answered as a Deployment running
/// `replicas`, all ready.
pub async fn expect_worker_apply(server: &mut ApiServer, replicas: i64) -> Seen {
    server
        .expect(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-worker?",
            |b| {
                applied(
                    b,
                    json!({"spec": {"replicas": replicas}, "status": {"readyReplicas": replicas}}),
                )
            },
        )
        .await
}

/// Expects the list of every pipeline and the children of `pipeline`, its worker Deployment at
/// one replica; the ingress Secret is read only when `reads_secret` (later reconciles keep the
/// first one's read).
pub async fn expect_list_and_children(
    server: &mut ApiServer,
    pipeline: &WhatsAppWebhookPipeline,
    reads_secret: bool,
) {
    expect_pipeline_list(server, pipeline).await;
    if reads_secret {
        expect_ingress_secret(server).await;
    }
    expect_child_applies(server, 1).await;
}

/// Expects the applies of the ingress Service and PodDisruptionBudget, answered as sent.
pub async fn expect_ingress_service_and_budget(server: &mut ApiServer) {
    for path in [
        "/api/v1/namespaces/shop/services/orders-ingress?",
        "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/orders-ingress?",
    ] {
        server.expect("PATCH", path, |b| b.clone()).await;
    }
}

/// A reconcile running while the test answers its requests.
pub type ReconcileTask = tokio::task::JoinHandle<Result<Action, wapipe_operator::Error>>;

pub async fn run_reconcile(pipeline: WhatsAppWebhookPipeline, ctx: Arc<Context>) -> ReconcileTask {
    tokio::spawn(reconcile(Arc::new(pipeline), ctx))
}

/// Expects the status write of `pipeline` as the last request of the reconcile `task`, which
/// must succeed; returns the status written.
pub async fn expect_last_status_write(
    server: &mut ApiServer,
    pipeline: &WhatsAppWebhookPipeline,
    task: ReconcileTask,
) -> Value {
    let status = expect_status_write(server, pipeline).await;
    server.finish().await;
    task.await.unwrap().expect("the reconcile succeeds");
    status.body["status"].clone()
}

/// A whole reconcile of `pipeline` that gets through: the list, its children (the worker
/// Deployment applied with `worker_replicas`), no scale, the status write. Returns the status
/// written.
pub async fn reconcile_to_status(
    ctx: Arc<Context>,
    server: &mut ApiServer,
    pipeline: &WhatsAppWebhookPipeline,
    worker_replicas: i64,
) -> Value {
    let task = run_reconcile(pipeline.clone(), ctx).await;
    expect_pipeline_list(server, pipeline).await;
    expect_children(server, worker_replicas).await;
    expect_last_status_write(server, pipeline, task).await
}

/// A reconcile of the orders pipeline (its topics already there) up to the apply of its
/// ingress Deployment, which the API server refuses with `code`, `reason` and `message`.
pub async fn reconcile_refused_at_ingress_apply(
    code: u16,
    reason: &str,
    message: &str,
) -> (
    Arc<Context>,
    ApiServer,
    WhatsAppWebhookPipeline,
    ReconcileTask,
) {
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
            code,
            |_| {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": reason, "code": code, "message": message})
            },
        )
        .await;
    (ctx, server, pipeline, task)
}

/// Expects the scaler's patch of the worker Deployment's replicas; answers with it as sent.
pub async fn expect_scale(server: &mut ApiServer) -> Seen {
    server
        .expect(
            "PATCH",
            "/apis/apps/v1/namespaces/shop/deployments/orders-worker?",
            |b| b.clone(),
        )
        .await
}

/// A pipeline being deleted, its deletionTimestamp `age` ago.
pub fn deleted_since(policy: &str, topic_created: bool, age: Duration) -> WhatsAppWebhookPipeline {
    let at = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(age.as_secs() as i64);
    pipeline(json!({
        "metadata": {"deletionTimestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "finalizers": ["wapipe.dev/topic"]},
        "spec": {"deletionPolicy": policy},
        "status": {"topicCreated": topic_created, "deadLetterTopicCreated": false}
    }))
}

/// A Deployment named `name` whose controller is the test pipeline.
pub fn owned_deployment(name: &str, uid: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "shop", "uid": uid,
                        "ownerReferences": [{"apiVersion": "wapipe.dev/v1alpha1",
                            "kind": "WhatsAppWebhookPipeline", "name": "orders",
                            "uid": "0b7c4a52-1d3e-4c8e-9a57-2f4b1c2d3e4f", "controller": true}]}})
}

/// The pods are gone: both Deployments answer 404; then the pipelines are listed, for claims
/// on the topics, answered with `pipeline` alone.
pub async fn expect_pods_stopped(server: &mut ApiServer, pipeline: &WhatsAppWebhookPipeline) {
    expect_deployments_gone(server).await;
    expect_pipeline_list(server, pipeline).await;
}

/// Both Deployments of the orders pipeline answer 404.
pub async fn expect_deployments_gone(server: &mut ApiServer) {
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
}

pub fn deleted(policy: &str, topic_created: bool) -> WhatsAppWebhookPipeline {
    pipeline(json!({
        "metadata": {"deletionTimestamp": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "finalizers": ["wapipe.dev/topic"]},
        "spec": {"deletionPolicy": policy},
        "status": {"topicCreated": topic_created, "deadLetterTopicCreated": false}
    }))
}

/// A pipeline whose Kafka needs a SASL password from a Secret, being deleted `age` ago.
pub fn deleted_with_sasl(age: Duration) -> WhatsAppWebhookPipeline {
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

/// A pipeline whose Kafka needs a SASL password from the Secret `kafka-user`, at `generation`.
pub fn with_sasl(generation: i64) -> WhatsAppWebhookPipeline {
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
pub async fn expect_kafka_secret(server: &mut ApiServer) {
    server
        .expect("GET", "/api/v1/namespaces/shop/secrets/kafka-user", |_| {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-user", "namespace": "shop"}, "data": {"password": "aHVudGVyMg=="}})
        })
        .await;
}

/// One successful reconcile of `pipeline` on topics that exist and a caught-up group; the
/// Secrets are read only when `reads_secrets`.
pub async fn reconcile_reading_secrets(
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
    expect_last_status_write(server, pipeline, task).await;
}

/// The orders pipeline's raw topic alone, already on the broker with 12 partitions.
pub fn raw_topic_there() -> InMemoryAdmin {
    InMemoryAdmin::default().with_topic("whatsapp_webhooks_raw", 12, 1)
}

/// The orders pipeline's two topics, already on the broker: the raw topic with `raw_partitions`,
/// the dead-letter topic with 3.
pub fn topics_there(raw_partitions: i32) -> InMemoryAdmin {
    InMemoryAdmin::default()
        .with_topic("whatsapp_webhooks_raw", raw_partitions, 1)
        .with_topic("whatsapp_webhooks_failed", 3, 1)
}

/// A broker on which the orders pipeline's group lags `lag_each` on each of 12 partitions (the
/// topics themselves are not there).
pub fn orders_lagging(lag_each: i64) -> InMemoryAdmin {
    let admin = InMemoryAdmin::default();
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, lag_each),
    );
    admin
}

pub fn existing_topics() -> Arc<InMemoryAdmin> {
    let admin = Arc::new(topics_there(12));
    admin.set_offsets(
        "whatsapp_webhooks_raw",
        "wapipe-shop.orders",
        lagging(12, 0),
    );
    admin
}

/// A Deployment named `name` that some other controller (or nobody) made.
pub fn foreign_deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "shop", "uid": "someone-elses",
                        "labels": {"app": "billing"}}})
}

/// The old pipeline, being deleted (its cleanup waits for its pods), and a replacement naming
/// the same topic.
pub fn deleted_and_replacement() -> (WhatsAppWebhookPipeline, WhatsAppWebhookPipeline) {
    let replacement = pipeline(
        json!({"metadata": {"name": "orders-v2", "uid": "bbbbbbbb-0000-4000-8000-000000000000",
        "creationTimestamp": "2026-03-01T00:00:00Z"}}),
    );
    (deleted("Delete", true), replacement)
}

/// The operator's metrics as Prometheus text, lines naming the test pipeline only.
pub fn series_of_orders(ctx: &Context) -> Vec<String> {
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
pub async fn reconcile_lagging_pipeline(
    ctx: &Arc<Context>,
    server: &mut ApiServer,
    pipeline: &WhatsAppWebhookPipeline,
) -> Value {
    let task = run_reconcile(pipeline.clone(), ctx.clone()).await;
    expect_pipeline_list(server, pipeline).await;
    expect_children(server, 1).await;
    expect_scale(server).await;
    expect_last_status_write(server, pipeline, task).await
}
