//! The reconciler against a mocked API server and the in-memory topic admin: finalizers,
//! deletion and cleanup, and what the operator must never delete or take (same-named objects,
//! topics and consumer groups another pipeline claims). One scenario per test, as in
//! `reconcile_mock.rs`.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::json;
use wapipe_operator::controller::{backoff, retry_delay};
use wapipe_operator::kafka::InMemoryAdmin;

#[path = "support/reconcile.rs"]
mod kit;

use kit::api::not_found;
use kit::*;

#[tokio::test]
async fn delete_policy_adds_the_finalizer_once_the_pipeline_is_valid() {
    let (_, ctx, mut server) = setup_on(InMemoryAdmin::default());
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
    expect_last_status_write(&mut server, &pipeline, task).await;
}

#[tokio::test]
async fn deletion_under_delete_removes_only_the_topics_the_operator_created() {
    let (admin, ctx, mut server) = setup_on(topics_there(12));
    let task = run_reconcile(deleted("Delete", true), ctx).await;

    expect_pods_stopped(&mut server, &deleted("Delete", true)).await;
    let release = expect_finalizers_patch(&mut server, &deleted("Delete", true)).await;
    assert_eq!(release.body["metadata"]["finalizers"], json!([]));
    server.finish().await;
    task.await.unwrap().expect("cleanup succeeds");

    // The dead-letter topic was adopted (deadLetterTopicCreated false): it stays.
    assert_eq!(admin.calls(), ["delete whatsapp_webhooks_raw"]);
    assert!(admin.topic("whatsapp_webhooks_failed").is_some());
    server.assert_event("TopicDeleted");
    server.assert_event("TopicRetained");
}

#[tokio::test]
async fn deletion_under_delete_keeps_an_adopted_topic() {
    let (admin, ctx, mut server) = setup_on(raw_topic_there());
    let task = run_reconcile(deleted("Delete", false), ctx).await;
    expect_pods_stopped(&mut server, &deleted("Delete", false)).await;
    expect_finalizers_patch(&mut server, &deleted("Delete", false)).await;
    server.finish().await;
    task.await.unwrap().expect("cleanup succeeds");
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
}

#[tokio::test]
async fn deletion_under_retain_keeps_every_topic_and_releases_the_finalizer() {
    let (admin, ctx, mut server) = setup_on(raw_topic_there());
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
    let (admin, ctx, mut server) = setup_on(InMemoryAdmin::default());
    let mut pipeline = deleted("Retain", false);
    pipeline.metadata.finalizers = Some(vec!["someone.else/finalizer".into()]);
    let task = run_reconcile(pipeline, ctx).await;
    server.finish().await;
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(admin.calls().is_empty());
}

#[tokio::test]
async fn deletion_stops_the_pods_before_it_touches_the_topics() {
    let (admin, ctx, mut server) = setup_on(raw_topic_there());
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
    let (admin, ctx, mut server) = setup_on(raw_topic_there());
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
    server.assert_event("CleanupSkipped");
}

#[tokio::test]
async fn a_cleanup_that_cannot_reach_kafka_retries_then_gives_up_at_the_deadline_and_says_what_was_left(
) {
    // The namespace is being deleted: its Secrets are gone, so Kafka cannot be reached.
    for (age, gives_up) in [
        (Duration::from_secs(60), false),
        (Duration::from_secs(3600), true),
    ] {
        let (admin, ctx, mut server) = setup_on(raw_topic_there());
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
            server.assert_event("CleanupAbandoned");
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
    server.assert_event("ResourceConflict");
}

#[tokio::test]
async fn a_cleanup_never_deletes_a_same_named_deployment_the_pipeline_does_not_control() {
    let (admin, ctx, mut server) = setup_on(raw_topic_there());
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
    let (admin, ctx, mut server) = setup_on(InMemoryAdmin::default());
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
    let (admin, ctx, mut server) = setup_on(raw_topic_there());
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
    server.assert_event("CleanupAbandoned");
}

#[tokio::test]
async fn a_replacement_pipeline_cannot_adopt_a_topic_whose_owner_is_being_deleted() {
    let (admin, ctx, mut server) = setup_on(raw_topic_there());
    let (old, new) = deleted_and_replacement();
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
    let (admin, ctx, mut server) = setup_on(raw_topic_there());
    let (old, new) = deleted_and_replacement();
    let task = run_reconcile(old.clone(), ctx).await;
    expect_deployments_gone(&mut server).await;
    expect_list(&mut server, &[&old, &new]).await;
    expect_finalizers_patch(&mut server, &old).await;
    server.finish().await;
    task.await.unwrap().expect("cleanup succeeds");
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
    assert!(admin.topic("whatsapp_webhooks_raw").is_some());
    server.assert_event("TopicRetained");
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
    let (admin, ctx, mut server) = setup_on(InMemoryAdmin::default().with_cluster_id("cluster-1"));
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
    assert_message_contains(ready, "payments/first");
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
}

#[tokio::test]
async fn a_consumer_group_another_pipeline_uses_is_a_resource_conflict() {
    let (admin, ctx, mut server) = setup_on(InMemoryAdmin::default());
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
    assert_message_contains(
        condition(&status.body["status"], "Ready"),
        "consumer group shared",
    );
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
}
