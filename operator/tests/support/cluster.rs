//! The cluster test files' shared view of the control plane and the broker: a fresh namespace,
//! pipelines created, patched and waited for, their conditions, the topics on Kafka, the
//! children. Every cluster test file uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde_json::{json, Value};
use wapipe_operator::crd::WhatsAppWebhookPipeline;

/// Longest wait for the operator and the controllers to act; only bounds waiting.
pub const PATIENCE: Duration = Duration::from_secs(90);
/// Longest wait for what needs retries with backoff first (a cleanup reaching its deadline, a
/// broker coming back); only bounds waiting.
pub const LONG_PATIENCE: Duration = Duration::from_secs(240);

pub struct Cluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub brokers: String,
}

/// The cluster and broker of tests/cluster/run.sh, for tests marked `#[ignore]` that run only
/// there (`--ignored`): panics when the variables are unset.
pub async fn cluster_suite() -> Cluster {
    let kubeconfig = std::env::var("WAPIPE_TEST_KUBECONFIG")
        .expect("WAPIPE_TEST_KUBECONFIG: run by tests/cluster/run.sh (scripts/cluster.sh up)");
    let brokers = std::env::var("WAPIPE_TEST_BROKERS")
        .expect("WAPIPE_TEST_BROKERS: run by tests/cluster/run.sh (scripts/kafka.sh start)");
    Cluster {
        client: super::client_from(&kubeconfig).await,
        kubeconfig: kubeconfig.into(),
        brokers,
    }
}

/// [`cluster_suite`], a fresh namespace holding the Secret `meta`
/// ([`Cluster::namespace_with_meta_secret`]) and a raw topic name no other test uses, both named
/// after `prefix`: `(cluster, namespace, raw topic)`.
pub async fn cluster_suite_in(prefix: &str) -> (Cluster, String, String) {
    let (c, ns) = cluster_suite_with_namespace(prefix).await;
    (c, ns, wapipe_testkit::unique_name(prefix))
}

/// [`cluster_suite`] and a fresh namespace named after `prefix` holding the Secret `meta`
/// ([`Cluster::namespace_with_meta_secret`]).
pub async fn cluster_suite_with_namespace(prefix: &str) -> (Cluster, String) {
    let c = cluster_suite().await;
    let ns = c.namespace_with_meta_secret(prefix).await;
    (c, ns)
}

/// [`cluster_suite`] for one run of a test that runs pods as host processes: `(cluster,
/// [`bin_dir`], run, namespace)`, the run's name being `prefix` made unique, with underscores (it
/// names topics and rows), and the fresh namespace named after it holding the Secret `meta` with
/// `meta`.
pub async fn cluster_suite_run(
    prefix: &str,
    meta: &[(&str, &str)],
) -> (Cluster, PathBuf, String, String) {
    // Read before anything is created: panics when unset.
    let bin_dir = bin_dir();
    let c = cluster_suite().await;
    let run = wapipe_testkit::unique_name(prefix).replace('-', "_");
    let ns = c.namespace(&run.replace('_', "-")).await;
    c.secret(&ns, "meta", meta).await;
    (c, bin_dir, run, ns)
}

/// The folder holding the built wapipe binaries, for the tests that run them as host processes
/// (`WAPIPE_TEST_BIN_DIR`, set by tests/cluster/run.sh): panics when unset.
pub fn bin_dir() -> PathBuf {
    std::env::var("WAPIPE_TEST_BIN_DIR")
        .expect("WAPIPE_TEST_BIN_DIR: run by tests/cluster/run.sh")
        .into()
}

impl Cluster {
    /// Deletes a test's namespace and everything in it.
    pub async fn delete_namespace(&self, ns: &str) {
        Api::<Namespace>::all(self.client.clone())
            .delete(ns, &kube::api::DeleteParams::default())
            .await
            .expect("deleting the namespace");
    }

    /// A fresh namespace for one test.
    pub async fn namespace(&self, name: &str) -> String {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &ns)
            .await
            .expect("creating the namespace");
        name.to_string()
    }

    /// A fresh namespace named after `prefix`, holding the Secret `meta` the pipelines of
    /// [`pipeline_body`] reference.
    pub async fn namespace_with_meta_secret(&self, prefix: &str) -> String {
        let ns = self.namespace(&wapipe_testkit::unique_name(prefix)).await;
        self.meta_secret(&ns).await;
        ns
    }

    /// The Secret `meta` in `ns`, holding the keys the pipelines of [`pipeline_body`] reference.
    pub async fn meta_secret(&self, ns: &str) {
        let keys = [("app-secret", "s3cret"), ("verify-token", "tok")];
        self.secret(ns, "meta", &keys).await;
    }

    pub async fn secret(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let data: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secret: Secret = serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": ns}, "stringData": data}),
        )
        .unwrap();
        api.create(&PostParams::default(), &secret)
            .await
            .expect("creating the Secret");
    }

    /// The Deployment `name` in `ns`, once it exists.
    pub async fn deployment(&self, ns: &str, name: &str) -> Deployment {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(deployment) = api.get_opt(name).await.expect("reading a Deployment") {
                return deployment;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no Deployment {ns}/{name} within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub fn pipelines(&self, ns: &str) -> Api<WhatsAppWebhookPipeline> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub async fn create_pipeline(&self, ns: &str, body: Value) -> WhatsAppWebhookPipeline {
        let pipeline: WhatsAppWebhookPipeline = serde_json::from_value(body).unwrap();
        self.pipelines(ns)
            .create(&PostParams::default(), &pipeline)
            .await
            .expect("the API server accepts the pipeline")
    }

    /// Changes the pipeline with a JSON merge patch.
    pub async fn merge_patch(&self, ns: &str, name: &str, patch: Value) {
        self.pipelines(ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("patching the pipeline");
    }

    pub async fn get(&self, ns: &str, name: &str) -> WhatsAppWebhookPipeline {
        self.pipelines(ns)
            .get(name)
            .await
            .expect("reading the pipeline")
    }

    /// Waits until `check` holds for the pipeline; panics with `what` and its last status.
    pub async fn wait_pipeline(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        check: impl Fn(&WhatsAppWebhookPipeline) -> bool,
    ) -> WhatsAppWebhookPipeline {
        self.wait_pipeline_within(PATIENCE, ns, name, what, check)
            .await
    }

    /// [`Cluster::wait_pipeline`] with another patience.
    pub async fn wait_pipeline_within(
        &self,
        patience: Duration,
        ns: &str,
        name: &str,
        what: &str,
        check: impl Fn(&WhatsAppWebhookPipeline) -> bool,
    ) -> WhatsAppWebhookPipeline {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let pipeline = self.get(ns, name).await;
            if check(&pipeline) {
                return pipeline;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{ns}/{name}: {what} not reached within {patience:?}; status: {}",
                    serde_json::to_string_pretty(&pipeline.status).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Creates the pipeline of [`pipeline_body`] and waits until it is Ready.
    pub async fn create_ready(
        &self,
        ns: &str,
        name: &str,
        raw: &str,
        partitions: i32,
    ) -> WhatsAppWebhookPipeline {
        let body = pipeline_body(ns, name, &self.brokers, raw, partitions);
        self.create_pipeline(ns, body).await;
        self.wait_pipeline(ns, name, "Ready=True", |p| is(p, "Ready", "True", None))
            .await
    }

    /// Waits until `check` holds, polling `probe`.
    pub async fn wait<T, F, Fut>(&self, what: &str, probe: F, check: impl Fn(&T) -> bool) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = T>,
        T: std::fmt::Debug,
    {
        self.wait_within(PATIENCE, what, probe, check).await
    }

    /// [`Cluster::wait`] with another patience.
    pub async fn wait_within<T, F, Fut>(
        &self,
        patience: Duration,
        what: &str,
        probe: F,
        check: impl Fn(&T) -> bool,
    ) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = T>,
        T: std::fmt::Debug,
    {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let value = probe().await;
            if check(&value) {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{what} not reached within {patience:?}; last: {value:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs kubectl with `args` on the cluster and returns what it printed; panics with its
    /// errors when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let kubectl = std::env::var("WAPIPE_TEST_KUBECTL").unwrap_or("kubectl".into());
        let out = std::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("running kubectl");
        let errors = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {args:?}: {errors}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Saves the pipeline as an Argo CD health-check fixture expecting `status` and `message`.
    pub fn capture(
        &self,
        file: &str,
        pipeline: &WhatsAppWebhookPipeline,
        status: &str,
        message: &str,
    ) {
        super::capture(file, pipeline, status, message);
    }
}

pub fn condition<'a>(
    pipeline: &'a WhatsAppWebhookPipeline,
    type_: &str,
) -> Option<(&'a str, &'a str)> {
    pipeline
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// The message of the pipeline's condition `type_` (empty when it has none).
pub fn condition_message(pipeline: &WhatsAppWebhookPipeline, type_: &str) -> String {
    pipeline
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

pub fn is(
    pipeline: &WhatsAppWebhookPipeline,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> bool {
    condition(pipeline, type_)
        .is_some_and(|(s, r)| s == status && reason.is_none_or(|reason| r == reason))
}

pub fn observed_current(pipeline: &WhatsAppWebhookPipeline) -> bool {
    pipeline.status.as_ref().and_then(|s| s.observed_generation) == pipeline.metadata.generation
}

/// A pipeline on the test broker: `partitions` raw partitions, workers 1..=3, quick polls.
pub fn pipeline_body(ns: &str, name: &str, brokers: &str, raw: &str, partitions: i32) -> Value {
    json!({
        "apiVersion": "wapipe.dev/v1alpha1",
        "kind": "WhatsAppWebhookPipeline",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "kafka": {"bootstrapServers": brokers},
            "topic": {"name": raw, "partitions": partitions, "replicationFactor": 1},
            "deadLetterTopic": {"name": format!("{raw}.failed"), "partitions": 1, "replicationFactor": 1},
            "ingress": {"provider": "meta", "replicas": 1,
                        "appSecretRef": {"name": "meta", "key": "app-secret"},
                        "verifyTokenRef": {"name": "meta", "key": "verify-token"}},
            "worker": {"minReplicas": 1, "maxReplicas": 3, "lagPerReplica": 10,
                       "pollIntervalSeconds": 2, "scaleDownWindowSeconds": 6, "sink": {"type": "log"}},
            "deletionPolicy": "Delete"
        }
    })
}

/// [`pipeline_body`] for a test run `run` of [`cluster_suite_run`]: the raw topic
/// `<run>_raw` with `partitions`, the dead-letter topic `<run>_failed`.
pub fn host_run_pipeline_body(
    ns: &str,
    name: &str,
    brokers: &str,
    run: &str,
    partitions: i32,
) -> Value {
    let mut body = pipeline_body(ns, name, brokers, &format!("{run}_raw"), partitions);
    body["spec"]["deadLetterTopic"]["name"] = json!(format!("{run}_failed"));
    body
}

/// [`pipeline_body`] under `deletionPolicy: Retain`: its topics stay when it goes.
pub fn retaining_pipeline_body(
    ns: &str,
    name: &str,
    brokers: &str,
    raw: &str,
    partitions: i32,
) -> Value {
    let mut body = pipeline_body(ns, name, brokers, raw, partitions);
    body["spec"]["deletionPolicy"] = json!("Retain");
    body
}

pub fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("Kafka admin client")
}

/// Partitions of `topic` on the broker, `None` when it does not exist.
pub fn topic_partitions(brokers: &str, topic: &str) -> Option<usize> {
    let admin = admin(brokers);
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .expect("Kafka metadata");
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

/// Partitions of the topics of a pipeline whose raw topic is `raw`: the raw topic and its
/// dead-letter topic `<raw>.failed`, each `None` when it does not exist.
pub fn pipeline_topic_partitions(brokers: &str, raw: &str) -> (Option<usize>, Option<usize>) {
    (
        topic_partitions(brokers, raw),
        topic_partitions(brokers, &format!("{raw}.failed")),
    )
}

pub async fn deployment(client: &Client, ns: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("reading a Deployment")
}

pub fn replicas(deployment: &Option<Deployment>) -> Option<i32> {
    deployment.as_ref()?.spec.as_ref()?.replicas
}

impl Cluster {
    /// The Events recorded on the pipeline `name`, as (reason, note).
    pub async fn events_of(&self, ns: &str, name: &str) -> Vec<(String, String)> {
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), ns)
            .list(&kube::api::ListParams::default())
            .await
            .expect("listing Events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// Deletes the pipeline and waits until it is gone (its finalizer released).
    pub async fn delete_and_wait_gone(&self, ns: &str, name: &str, patience: Duration) {
        self.pipelines(ns)
            .delete(name, &kube::api::DeleteParams::background())
            .await
            .expect("deleting the pipeline");
        self.wait_gone(ns, name, patience).await;
    }

    /// Waits until `topic` is gone from the broker; panics with `what` when it stays.
    pub async fn wait_topic_deleted(&self, topic: &str, what: &str) {
        self.wait(
            what,
            || async { topic_partitions(&self.brokers, topic) },
            Option::is_none,
        )
        .await;
    }

    /// Waits until the pipeline is gone (its finalizer released).
    pub async fn wait_gone(&self, ns: &str, name: &str, patience: Duration) {
        self.wait_within(
            patience,
            &format!("{ns}/{name} gone"),
            || async { self.pipelines(ns).get_opt(name).await.unwrap().is_some() },
            |present| !present,
        )
        .await;
    }
}

/// Deletes `topics` from the broker, ignoring any that are already gone.
pub async fn delete_topics(brokers: &str, topics: &[&str]) {
    let _ = admin(brokers)
        .delete_topics(topics, &rdkafka::admin::AdminOptions::new())
        .await;
}

/// Deletes the topics of the pipelines whose raw topics are `raws` (each with its dead-letter
/// topic `<raw>.failed`), ignoring any that are already gone.
pub async fn delete_pipeline_topics(brokers: &str, raws: &[&str]) {
    let names: Vec<String> = raws
        .iter()
        .flat_map(|raw| [raw.to_string(), format!("{raw}.failed")])
        .collect();
    let topics: Vec<&str> = names.iter().map(String::as_str).collect();
    delete_topics(brokers, &topics).await;
}
