//! The operator never deletes or takes what it does not own (issue 23), on the real control
//! plane and a real Kafka broker: a replacement pipeline does not take a topic whose old owner
//! is still being deleted, a throwaway pipeline cannot take or delete same-named objects, the
//! cleanup deadline holds while a pod is stuck Terminating, and claims compare Kafka's cluster
//! id rather than the bootstrap string.
//!
//! Run by tests/cluster/run.sh while its operator runs (cleanup deadline 45 s), with
//! `--ignored --test-threads=1`: every test needs that cluster, broker and operator.

mod support;

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use support::cluster::*;

/// A finalizer the tests put on pods so that they stay Terminating, as on a lost node.
const HOLD: &str = "test.wapipe.dev/hold";

/// Puts [`HOLD`] on every pod in `ns` (`hold`), or takes it off again.
async fn hold_pods(c: &Cluster, ns: &str, hold: bool) -> usize {
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let list = pods.list(&ListParams::default()).await.unwrap();
    let finalizers = if hold { json!([HOLD]) } else { json!(null) };
    let mut patched = 0;
    for pod in &list.items {
        let patch = Patch::Merge(json!({"metadata": {"finalizers": finalizers}}));
        match pods
            .patch(&pod.name_any(), &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => patched += 1,
            // Gone between the list and the patch: its ReplicaSet replaced it, or (when
            // releasing) it had no hold and finished terminating.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => panic!("patching the finalizers of pod {}: {e}", pod.name_any()),
        }
    }
    patched
}

/// A Ready pipeline with `deletionPolicy: Delete` whose topics the operator created.
async fn ready_pipeline(c: &Cluster, ns: &str, name: &str, raw: &str) {
    let ready = c.create_ready(ns, name, raw, 2).await;
    assert!(
        is(&ready, "TopicReady", "True", Some("Created")),
        "{ns}/{name}: topic not created: {:?}",
        ready.status
    );
}

/// [`ready_pipeline`], its pods (ingress and worker) held by [`HOLD`]: deleted, they stay
/// Terminating.
async fn ready_pipeline_with_pods_held(c: &Cluster, ns: &str, name: &str, raw: &str) {
    ready_pipeline(c, ns, name, raw).await;
    assert!(hold_pods(c, ns, true).await >= 2, "ingress and worker pods");
}

/// The old pipeline's cleanup waits for a pod stuck Terminating; a replacement naming the same
/// topic meanwhile is refused (the old one still claims it), and when the old cleanup goes on
/// the topic, now wanted by the replacement, stays on Kafka with its records.
#[tokio::test]
#[ignore = "needs tests/cluster/run.sh (control plane, broker, operator)"]
async fn a_replacement_pipeline_does_not_lose_the_topic_to_the_old_ones_cleanup() {
    let (c, ns, raw) = cluster_suite_in("ct-replace").await;
    ready_pipeline_with_pods_held(&c, &ns, "old", &raw).await;
    c.pipelines(&ns)
        .delete("old", &kube::api::DeleteParams::background())
        .await
        .unwrap();

    c.create_pipeline(&ns, pipeline_body(&ns, "new", &c.brokers, &raw, 2))
        .await;
    let message = topic_conflict(&c, &ns, "new").await;
    assert!(
        message.contains(&format!("{ns}/old")),
        "names the holder: {message}"
    );
    assert!(
        c.pipelines(&ns).get_opt("old").await.unwrap().is_some(),
        "the old pipeline was still being deleted when the replacement was refused"
    );

    hold_pods(&c, &ns, false).await;
    c.wait_gone(&ns, "old", LONG_PATIENCE).await;
    assert_eq!(
        topic_partitions(&c.brokers, &raw),
        Some(2),
        "the topic the replacement names survived the old pipeline's cleanup"
    );
    c.wait_pipeline_within(
        LONG_PATIENCE,
        &ns,
        "new",
        "Ready=True, topic Adopted",
        |p| is(p, "Ready", "True", None) && is(p, "TopicReady", "True", Some("Adopted")),
    )
    .await;
    c.delete_and_wait_gone(&ns, "new", PATIENCE).await;
    assert_eq!(
        topic_partitions(&c.brokers, &raw),
        Some(2),
        "an adopted topic is never deleted"
    );
    delete_pipeline_topics(&c.brokers, &[&raw]).await;
}

/// Waits until the pipeline's TopicReady is False for a ResourceConflict; returns its message.
async fn topic_conflict(c: &Cluster, ns: &str, name: &str) -> String {
    let refused = c
        .wait_pipeline(ns, name, "TopicReady=False ResourceConflict", |p| {
            is(p, "TopicReady", "False", Some("ResourceConflict"))
        })
        .await;
    condition_message(&refused, "TopicReady")
}

/// A namespaced kind the tests create and read as JSON.
trait Object:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
{
}

impl<K> Object for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
{
}

/// Creates `object` as a `K` in `ns`; returns its (kind, uid).
async fn create<K: Object>(c: &Cluster, ns: &str, object: Value) -> (String, String) {
    let kind = K::kind(&()).into_owned();
    let object: K = serde_json::from_value(object).unwrap();
    let made = Api::<K>::namespaced(c.client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating a {kind}: {e}"));
    (kind, made.uid().unwrap())
}

/// Whether `ns` holds no `K` at all.
async fn none_in<K: Object>(c: &Cluster, ns: &str) -> bool {
    Api::<K>::namespaced(c.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty()
}

/// Same-named objects that exist before the pipeline: a Deployment, Service and
/// PodDisruptionBudget named `<name>-ingress` and a Deployment named `<name>-worker`.
async fn foreign_children(c: &Cluster, ns: &str, name: &str) -> Vec<(String, String)> {
    let labels = json!({"app": "someone-else"});
    let pod_template = json!({
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
    });
    let mut uids = Vec::new();
    for suffix in ["ingress", "worker"] {
        let deployment = json!({
            "metadata": {"name": format!("{name}-{suffix}"), "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": pod_template}
        });
        uids.push(create::<Deployment>(c, ns, deployment).await);
    }
    let service = json!({
        "metadata": {"name": format!("{name}-ingress"), "namespace": ns},
        "spec": {"selector": labels, "ports": [{"port": 80}]}
    });
    uids.push(create::<Service>(c, ns, service).await);
    let pdb = json!({
        "metadata": {"name": format!("{name}-ingress"), "namespace": ns},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}
    });
    uids.push(create::<PodDisruptionBudget>(c, ns, pdb).await);
    uids
}

/// The (uid, owner uids) of the `K` named `name` in `ns`, `None` when there is none.
async fn seen<K: Object>(c: &Cluster, ns: &str, name: &str) -> Option<(String, Vec<String>)> {
    let object = Api::<K>::namespaced(c.client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()?;
    let owners = object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .map(|o| o.uid.clone())
        .collect();
    Some((object.meta().uid.clone().unwrap_or_default(), owners))
}

/// The (uid, owner uids) of the four same-named objects, `None` for one that is gone.
async fn same_named(c: &Cluster, ns: &str, name: &str) -> Vec<Option<(String, Vec<String>)>> {
    let (ingress, worker) = (format!("{name}-ingress"), format!("{name}-worker"));
    vec![
        seen::<Deployment>(c, ns, &ingress).await,
        seen::<Deployment>(c, ns, &worker).await,
        seen::<Service>(c, ns, &ingress).await,
        seen::<PodDisruptionBudget>(c, ns, &ingress).await,
    ]
}

/// A throwaway pipeline named after existing objects neither takes them over (no owner
/// reference, so the garbage collector leaves them alone) nor deletes them at its deletion; it
/// reports the conflict in a condition and an Event.
#[tokio::test]
#[ignore = "needs tests/cluster/run.sh (control plane, broker, operator)"]
async fn a_throwaway_pipeline_neither_takes_nor_deletes_same_named_objects() {
    let (c, ns, raw) = cluster_suite_in("ct-squat").await;
    let before = foreign_children(&c, &ns, "shop").await;
    let created = c
        .create_pipeline(&ns, pipeline_body(&ns, "shop", &c.brokers, &raw, 1))
        .await;
    let refused = c
        .wait_pipeline(&ns, "shop", "IngressReady=False ResourceConflict", |p| {
            observed_current(p) && is(p, "IngressReady", "False", Some("ResourceConflict"))
        })
        .await;
    assert!(is(&refused, "Ready", "False", Some("ResourceConflict")));
    let events = c.events_of(&ns, "shop").await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "ResourceConflict" && note.contains("shop-ingress")),
        "a ResourceConflict Event names the object: {events:?}"
    );

    c.delete_and_wait_gone(&ns, "shop", PATIENCE).await;
    let pipeline_uid = created.uid().unwrap();
    let after = same_named(&c, &ns, "shop").await;
    for ((kind, uid), seen) in before.iter().zip(&after) {
        let (now_uid, owners) = seen
            .as_ref()
            .unwrap_or_else(|| panic!("{kind} shop-*: deleted by the pipeline's cleanup"));
        assert_eq!(
            now_uid, uid,
            "{kind}: the very object that was there before"
        );
        assert!(
            !owners.contains(&pipeline_uid),
            "{kind}: taken over (owner reference to the pipeline, so the garbage collector \
             deletes it with the pipeline): {owners:?}"
        );
    }
    delete_pipeline_topics(&c.brokers, &[&raw]).await;
}

/// With a pod stuck Terminating (its node lost), a `Delete` pipeline's cleanup gives up at the
/// cleanup deadline (45 s in this suite), says so, and the pipeline goes.
#[tokio::test]
#[ignore = "needs tests/cluster/run.sh (control plane, broker, operator)"]
async fn the_cleanup_deadline_holds_while_a_pod_is_stuck_terminating() {
    let (c, ns, raw) = cluster_suite_in("ct-stuck").await;
    ready_pipeline_with_pods_held(&c, &ns, "stuck", &raw).await;

    c.delete_and_wait_gone(&ns, "stuck", LONG_PATIENCE).await;
    let abandoned = format!(
        "wapipe_operator_cleanups_abandoned_total{{namespace=\"{ns}\",pipeline=\"stuck\"}}"
    );
    assert_eq!(support::operator_metric(&abandoned).await, Some(1.0));
    let events = c.events_of(&ns, "stuck").await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "CleanupAbandoned"
                && note.contains("still stopping")
                && note.contains(&raw)),
        "the Event names why and what was left: {events:?}"
    );
    assert_eq!(
        topic_partitions(&c.brokers, &raw),
        Some(2),
        "a topic is never deleted while a pod may still use it"
    );

    assert!(
        !none_in::<Pod>(&c, &ns).await,
        "the pods were still Terminating when the pipeline went"
    );
    hold_pods(&c, &ns, false).await;
    delete_pipeline_topics(&c.brokers, &[&raw]).await;
}

/// `bootstrap` with its loopback host written the other way (`127.0.0.1` ↔ `localhost`): the
/// same broker under another bootstrap string.
fn other_name_of(bootstrap: &str) -> String {
    if bootstrap.contains("127.0.0.1") {
        bootstrap.replace("127.0.0.1", "localhost")
    } else if bootstrap.contains("localhost") {
        bootstrap.replace("localhost", "127.0.0.1")
    } else {
        panic!("the test broker {bootstrap} is not on loopback: no second name known for it")
    }
}

/// Two bootstrap strings of one broker are one Kafka cluster: a pipeline in another namespace
/// naming the first one's topic, or joining its consumer group, is refused.
#[tokio::test]
#[ignore = "needs tests/cluster/run.sh (control plane, broker, operator)"]
async fn claims_compare_the_kafka_cluster_id_not_the_bootstrap_string() {
    let c = cluster_suite().await;
    let first_ns = c.namespace_with_meta_secret("ct-claim-a").await;
    let other_ns = c.namespace_with_meta_secret("ct-claim-b").await;
    let raw = wapipe_testkit::unique_name("ct-claim");
    ready_pipeline(&c, &first_ns, "first", &raw).await;
    let first = c.get(&first_ns, "first").await;
    assert!(
        first
            .status
            .as_ref()
            .and_then(|s| s.kafka_cluster_id.as_deref())
            .is_some_and(|id| !id.is_empty()),
        "the status records the Kafka cluster id"
    );
    let alias = other_name_of(&c.brokers);

    // The same topic through the other name.
    let body = retaining_pipeline_body(&other_ns, "same-topic", &alias, &raw, 2);
    c.create_pipeline(&other_ns, body).await;
    let message = topic_conflict(&c, &other_ns, "same-topic").await;
    assert!(
        message.contains(&format!("{first_ns}/first")) && message.contains(&raw),
        "{message}"
    );

    // Other topics, but the first pipeline's consumer group, through the other name.
    let other_raw = wapipe_testkit::unique_name("ct-claim-group");
    let mut body = retaining_pipeline_body(&other_ns, "same-group", &alias, &other_raw, 1);
    let first_group = format!("wapipe-{first_ns}.first");
    body["spec"]["worker"]["consumerGroup"] = json!(first_group);
    c.create_pipeline(&other_ns, body).await;
    let message = topic_conflict(&c, &other_ns, "same-group").await;
    assert!(
        message.contains(&format!("consumer group {first_group}")),
        "{message}"
    );
    assert!(
        none_in::<Deployment>(&c, &other_ns).await,
        "no worker was started to join the group"
    );

    for name in ["same-topic", "same-group"] {
        c.delete_and_wait_gone(&other_ns, name, PATIENCE).await;
    }
    c.delete_and_wait_gone(&first_ns, "first", PATIENCE).await;
    delete_pipeline_topics(&c.brokers, &[&raw, &other_raw]).await;
}

/// Renaming `spec.topic.name` onto a topic that already exists is refused by the API server (a
/// transition rule); deleting the pipeline deletes the topics it created and never that one.
/// (Without the rule, the operator itself deletes only the topics its status records as created:
/// operator/tests/reconcile_ownership.rs.)
#[tokio::test]
#[ignore = "needs tests/cluster/run.sh (control plane, broker, operator)"]
async fn a_rename_onto_an_existing_topic_never_deletes_that_topic() {
    let (c, ns, raw) = cluster_suite_in("ct-rename").await;
    let foreign = wapipe_testkit::unique_name("ct-foreign");
    wapipe_testkit::create_topic(&c.brokers, &foreign, 2)
        .await
        .unwrap();
    ready_pipeline(&c, &ns, "renamed", &raw).await;

    let refused = c
        .pipelines(&ns)
        .patch(
            "renamed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"topic": {"name": foreign}}})),
        )
        .await
        .expect_err("the API server refuses the rename");
    assert!(
        refused.to_string().contains("topic.name cannot change"),
        "{refused}"
    );
    c.delete_and_wait_gone(&ns, "renamed", PATIENCE).await;
    assert_eq!(
        topic_partitions(&c.brokers, &foreign),
        Some(2),
        "the topic it was to be renamed onto is not the operator's to delete"
    );
    c.wait_topic_deleted(&raw, "the topic it created deleted, not leaked")
        .await;
    delete_topics(&c.brokers, &[&foreign]).await;
}

/// Two pipelines that leave their topics unnamed, on one Kafka: the API server stores no name
/// (the CRD has no default for it), and each gets topics named after itself, recorded in its
/// status and deleted with it under `deletionPolicy: Delete`.
#[tokio::test]
#[ignore = "needs tests/cluster/run.sh (control plane, broker, operator)"]
async fn pipelines_left_at_the_default_topics_each_get_their_own() {
    let (c, ns) = cluster_suite_with_namespace("ct-defaults").await;
    for name in ["first", "second"] {
        let mut body = pipeline_body(&ns, name, &c.brokers, "unused", 1);
        let spec = body["spec"].as_object_mut().unwrap();
        spec.remove("topic");
        spec.remove("deadLetterTopic");
        let stored = c.create_pipeline(&ns, body).await;
        assert_eq!(
            stored.spec.topic.name, "",
            "the API server wrote no default name"
        );
    }
    for name in ["first", "second"] {
        let topic = format!("wapipe-{ns}.{name}");
        let ready = c
            .wait_pipeline(&ns, name, "Ready=True, topic Created", |p| {
                is(p, "Ready", "True", None) && is(p, "TopicReady", "True", Some("Created"))
            })
            .await;
        let status = ready.status.unwrap();
        assert_eq!(status.topic.as_deref(), Some(topic.as_str()));
        assert_eq!(
            status.dead_letter_topic.as_deref(),
            Some(format!("{topic}.failed").as_str())
        );
        assert!(topic_partitions(&c.brokers, &topic).is_some(), "{topic}");
    }
    for name in ["first", "second"] {
        c.delete_and_wait_gone(&ns, name, PATIENCE).await;
        let topic = format!("wapipe-{ns}.{name}");
        c.wait_topic_deleted(&topic, "the default topic deleted from Kafka")
            .await;
    }
}
