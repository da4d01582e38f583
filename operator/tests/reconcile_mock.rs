//! The reconciler against a mocked API server and the in-memory topic admin: a pipeline's life
//! (topics, children, status, scaling, Secrets, memory, retries). Each test is one scenario:
//! the exact sequence of API calls the reconcile must make, what each call carries, and what
//! ends up in the status. Deletion, cleanup and ownership are in `reconcile_ownership.rs`.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::json;
use wapipe_operator::controller::{backoff, error_policy, jittered, retry_delay};
use wapipe_operator::kafka::InMemoryAdmin;
use wapipe_operator::metrics::PipelineLabels;

#[path = "support/reconcile.rs"]
mod kit;

use kit::*;

#[tokio::test]
async fn a_new_pipeline_gets_topics_children_scaled_workers_and_a_status() {
    let (admin, ctx, mut server) = setup_on(InMemoryAdmin::default());
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
    let scale = expect_scale(&mut server).await;
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
    server.assert_event("TopicCreated");
    server.assert_event("ScaledUp");
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
async fn a_namespace_scoped_operator_compares_claims_among_its_namespaces_only() {
    let admin = Arc::new(InMemoryAdmin::default());
    let (ctx, mut server) = setup_with(admin, |ctx| {
        ctx.with_watch_namespaces(vec![
            " shop".into(),
            "billing".into(),
            "shop".into(),
            "".into(),
        ])
    });
    let other = pipeline(json!({
        "metadata": {"name": "invoices", "namespace": "billing",
                     "uid": "cccccccc-0000-4000-8000-000000000000"},
        "spec": {"topic": {"name": "invoices_raw"}, "deadLetterTopic": {"name": "invoices_failed"}}
    }));
    let pipeline = pipeline(json!({}));
    let task = run_reconcile(pipeline.clone(), ctx.clone()).await;
    // One list per watched namespace (sorted, once each); never the cluster-wide list, which
    // the operator has no right to make in this mode.
    server
        .expect(
            "GET",
            "/apis/wapipe.dev/v1alpha1/namespaces/billing/whatsappwebhookpipelines?",
            |_| list_of(&[&other]),
        )
        .await;
    server
        .expect(
            "GET",
            "/apis/wapipe.dev/v1alpha1/namespaces/shop/whatsappwebhookpipelines?",
            |_| list_of(&[&pipeline]),
        )
        .await;
    expect_children(&mut server, 1).await;
    expect_last_status_write(&mut server, &pipeline, task).await;
}

#[tokio::test]
async fn a_reconcile_from_a_copy_older_than_its_own_status_write_keeps_its_topics_created() {
    let (admin, ctx, mut server) = setup_on(orders_lagging(0));
    let stale = pipeline(json!({}));
    for round in 0..2 {
        let task = run_reconcile(stale.clone(), ctx.clone()).await;
        expect_list_and_children(&mut server, &stale, round == 0).await;
        let status = &expect_last_status_write(&mut server, &stale, task).await;
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
    let admin = Arc::new(topics_there(12));
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
    let ingress = expect_ingress_apply(&mut server, 4).await;
    assert_eq!(ingress.body["spec"]["replicas"], 4);
    expect_ingress_service_and_budget(&mut server).await;
    expect_worker_apply(&mut server, 2).await;
    // ceil(1200 / 1000) = 2 = running: no scaler write, straight to the status.
    let status = &expect_last_status_write(&mut server, &pipeline, task).await;

    // Adopting creates nothing and sets only what the spec names: not wapipe's own defaults
    // (the record limit), not on the dead-letter topic whose spec names no key.
    assert_eq!(
        admin.calls(),
        [
            r#"set config whatsapp_webhooks_raw {"retention.ms": "86400000", "segment.bytes": "1048576"}"#
        ]
    );
    assert_eq!(status["topicCreated"], false);
    assert_eq!(condition(status, "TopicReady")["reason"], "Adopted");
    assert_message_contains(
        condition(status, "TopicReady"),
        "applied to topic whatsapp_webhooks_raw: retention.ms=86400000",
    );
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(condition(status, "Scaling")["reason"], "Steady");
}

#[tokio::test]
async fn a_partition_increase_is_applied_with_a_key_remap_warning() {
    let (admin, ctx, mut server) = setup_on(topics_there(6));
    let pipeline = pipeline(json!({"spec": {"topic": {"partitions": 12}}}));
    let status = &reconcile_to_status(ctx, &mut server, &pipeline, 1).await;

    assert_eq!(
        admin.calls(),
        ["create-partitions whatsapp_webhooks_raw 12"],
        "adopted topics: no configuration the spec does not name"
    );
    assert_eq!(admin.topic("whatsapp_webhooks_raw").unwrap().partitions, 12);
    let topic_ready = condition(status, "TopicReady");
    assert_eq!(topic_ready["status"], "True");
    assert_eq!(topic_ready["reason"], "PartitionsIncreased");
    assert_message_contains(topic_ready, "per-user order");
    assert_eq!(status["partitions"], 12);
    server.assert_event("PartitionsIncreased");
}

#[tokio::test]
async fn a_partition_decrease_or_replication_change_is_not_supported() {
    let (admin, ctx, mut server) = setup_on(topics_there(24));
    let pipeline = pipeline(json!({"spec": {"topic": {"partitions": 12, "replicationFactor": 3}}}));
    let status = &reconcile_to_status(ctx, &mut server, &pipeline, 1).await;

    // The raw topic is left as it is; the adopted dead-letter topic gets no configuration
    // its spec does not name.
    assert!(admin.calls().is_empty(), "{:?}", admin.calls());
    let topic_ready = condition(status, "TopicReady");
    assert_eq!(topic_ready["status"], "False");
    assert_eq!(topic_ready["reason"], "NotSupported");
    let message = topic_ready["message"].as_str().unwrap();
    assert!(message.contains("decreasing partitions") && message.contains("replication factor"));
    assert_eq!(condition(status, "Ready")["reason"], "TopicNotReady");
    server.assert_event("NotSupported");
}

#[tokio::test]
async fn a_second_pipeline_claiming_the_topic_gets_a_resource_conflict() {
    let (admin, ctx, mut server) = setup_on(InMemoryAdmin::default());
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
    assert_message_contains(condition(status, "Ready"), "shop/first");
    server.assert_event("ResourceConflict");
}

#[tokio::test]
async fn lag_that_cannot_be_read_still_writes_the_status_with_scaling_lag_unavailable() {
    let admin = Arc::new(topics_there(12));
    admin
        .fail_lag_reads
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (ctx, mut server) = setup(admin.clone());
    let pipeline = pipeline(json!({}));
    // No replicas written without a lag reading; the status still is.
    let status = &reconcile_to_status(ctx, &mut server, &pipeline, 2).await;
    let scaling = condition(status, "Scaling");
    assert_eq!(scaling["status"], "False");
    assert_eq!(scaling["reason"], "LagUnavailable");
    assert_message_contains(scaling, "wapipe-shop.orders");
    assert_eq!(
        status["observedGeneration"],
        pipeline.metadata.generation.unwrap()
    );
    assert_eq!(condition(status, "Ready")["status"], "True");
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
    let (_, mut server, _, task) = reconcile_refused_at_ingress_apply(
        403,
        "Forbidden",
        "deployments.apps \"orders-ingress\" is forbidden: unable to create new content in \
         namespace shop because it is being terminated",
    )
    .await;
    server.finish().await;
    let action = task.await.unwrap().expect("not a failure");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_pipeline_paused_at_zero_empties_its_group_and_still_reports_how_late_it_is() {
    let (admin, ctx, mut server) = setup_on(InMemoryAdmin::default());
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
    let scale = expect_scale(&mut server).await;
    assert_eq!(scale.body["spec"], json!({"replicas": 0}), "paused at 0");
    let status = &expect_last_status_write(&mut server, &pipeline, task).await;
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

/// Names are reused: a pipeline deleted and created again under the same name is another
/// object (another uid) and must not inherit the old one's scaler history (its last poll, its
/// scale-down window, its last decision).
#[tokio::test]
async fn a_pipeline_recreated_under_the_same_name_starts_without_the_old_ones_history() {
    let (admin, ctx, mut server) = setup_on(orders_lagging(250));
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
    // The new pipeline polls at once: no lag, one worker, nothing to scale.
    let status = &reconcile_to_status(ctx.clone(), &mut server, &new, 1).await;
    assert_eq!(status["totalLag"], 0, "{status}");
    assert_eq!(status["desiredWorkers"], 1, "{status}");
    assert_eq!(ctx.remembered(), 1, "the old pipeline's memory is gone");
}

/// A `Retain` pipeline has no finalizer: when it leaves, its memory and every metric series it
/// exported go with it (a stalled-partition alert must not keep firing for a pipeline that no
/// longer exists).
#[tokio::test]
async fn a_pipeline_that_leaves_takes_its_memory_and_metric_series_with_it() {
    let (_, ctx, mut server) = setup_on(orders_lagging(250));
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
    let (_, ctx, mut server) = setup_on(orders_lagging(250));
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
    let (ctx, mut server, pipeline, task) = reconcile_refused_at_ingress_apply(
        422,
        "Invalid",
        "Deployment.apps \"orders-ingress\" is invalid: spec.template.spec.containers[0].\
         resources.requests: Invalid value: \"1Gx\": quantities must match the regular expression",
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
    assert_message_contains(ingress, "1Gx");
    assert_eq!(condition(status, "Ready")["status"], "False");
    server.assert_event("ChildRefused");
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
    assert_message_contains(
        workers,
        "https://REDACTED@hooks.example.com/wa?token=REDACTED",
    );
}

/// An idle pipeline whose status already says what a reconcile finds costs no status write:
/// every poll of 50 idle pipelines used to patch 50 statuses.
#[tokio::test]
async fn a_status_that_did_not_change_is_not_written_again() {
    let (_, ctx, mut server) = setup_on(orders_lagging(0));
    let mut idle = pipeline(json!({}));
    for poll in 1..=3 {
        let task = run_reconcile(idle.clone(), ctx.clone()).await;
        expect_list_and_children(&mut server, &idle, poll == 1).await;
        if poll < 3 {
            let written = expect_status_write(&mut server, &idle).await;
            idle.status = Some(serde_json::from_value(written.body["status"].clone()).unwrap());
        }
        // The third poll finds what the second wrote: no request after the children.
        server.finish().await;
        task.await.unwrap().expect("reconcile succeeds");
    }
}
