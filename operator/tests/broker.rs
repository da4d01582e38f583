//! The real topic admin and lag reader against Apache Kafka (`wapipe_testkit::broker`): topic
//! creation with the pipeline's defaults, adoption, partition increases (CreatePartitions), lag,
//! and never creating a topic by asking for it.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use wapipe_operator::kafka::{
    GroupOffsets, KafkaConnection, RdKafkaAdmin, TopicAdmin, TopicRequest,
};
use wapipe_operator::scaler::policy::PartitionOffsets;
use wapipe_operator::topic::{plan_topic, TopicPlan};
use wapipe_testkit::{broker, create_topic, unique_name, Kafka};

fn settings(bootstrap: &str) -> KafkaConnection {
    KafkaConnection::plaintext(bootstrap)
}

/// The test broker (keep the guard alive), its bootstrap, a connection to it, and a topic name
/// made from `prefix` that no other test uses.
fn broker_and_topic(prefix: &str) -> (Option<Kafka>, String, KafkaConnection, String) {
    let (bootstrap, guard) = broker().unwrap();
    let kafka = settings(&bootstrap);
    (guard, bootstrap, kafka, unique_name(prefix))
}

/// The offsets of `group` on `topic`, as the operator reads them.
async fn offsets_of(kafka: &KafkaConnection, topic: &str, group: &str) -> Vec<PartitionOffsets> {
    RdKafkaAdmin
        .read_offsets(kafka, topic, group)
        .await
        .unwrap()
}

/// Produces `count` records to `partition`.
async fn produce(bootstrap: &str, topic: &str, partition: i32, count: usize) {
    send(bootstrap, topic, partition, &vec![None; count]).await;
}

/// Produces one record per timestamp (ms since the epoch) to `partition`, in order.
async fn produce_at(bootstrap: &str, topic: &str, partition: i32, timestamps: &[i64]) {
    let timestamps: Vec<Option<i64>> = timestamps.iter().copied().map(Some).collect();
    send(bootstrap, topic, partition, &timestamps).await;
}

/// Sends one record per entry of `timestamps` to `partition`, with that timestamp if any.
async fn send(bootstrap: &str, topic: &str, partition: i32, timestamps: &[Option<i64>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for (n, timestamp) in timestamps.iter().enumerate() {
        let payload = format!("event {n}");
        // A topic just created can still be unknown to the partition leader for a moment on a
        // busy broker; that error is not what these tests are about, so it is retried.
        let mut attempts = 0;
        loop {
            let record = FutureRecord::<str, str>::to(topic)
                .partition(partition)
                .key("user")
                .payload(&payload);
            let sent = producer
                .send(
                    FutureRecord {
                        timestamp: *timestamp,
                        ..record
                    },
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e);
            match sent {
                Ok(_) => break,
                Err(e)
                    if attempts < 50
                        && e.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition) =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("producing to {topic}/{partition}: {e}"),
            }
        }
    }
}

#[tokio::test]
async fn a_missing_topic_is_created_with_the_requested_shape_then_matches() {
    let (_guard, _, kafka, topic) = broker_and_topic("wapipe-op-create");
    let admin = RdKafkaAdmin;
    assert_eq!(admin.describe_topic(&kafka, &topic).await.unwrap(), None);
    admin
        .create_topic(
            &kafka,
            &TopicRequest {
                name: topic.clone(),
                partitions: 4,
                replication_factor: Some(1),
                config: Default::default(),
            },
        )
        .await
        .unwrap();
    let mut shape = None;
    for _ in 0..50 {
        shape = admin.describe_topic(&kafka, &topic).await.unwrap();
        if shape.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shape = shape.expect("the created topic is listed");
    assert_eq!((shape.partitions, shape.replication_factor), (4, 1));
    assert_eq!(plan_topic(4, Some(1), Some(shape)), TopicPlan::Matches);
    admin.delete_topic(&kafka, &topic).await.unwrap();
}

#[tokio::test]
async fn an_existing_topic_is_adopted_and_a_smaller_spec_is_not_supported() {
    let (_guard, bootstrap, kafka, topic) = broker_and_topic("wapipe-op-adopt");
    create_topic(&bootstrap, &topic, 3).await.unwrap();
    let shape = RdKafkaAdmin.describe_topic(&kafka, &topic).await.unwrap();
    assert_eq!(
        plan_topic(3, None, shape),
        TopicPlan::Matches,
        "adopted as is"
    );
    assert_eq!(
        plan_topic(6, None, shape),
        TopicPlan::IncreasePartitions { from: 3, to: 6 }
    );
    assert!(matches!(
        plan_topic(2, None, shape),
        TopicPlan::NotSupported(_)
    ));
    assert!(matches!(
        plan_topic(3, Some(3), shape),
        TopicPlan::NotSupported(_)
    ));
    // Creating it again is refused by the broker: the reconciler adopts instead of creating.
    let again = RdKafkaAdmin
        .create_topic(
            &kafka,
            &TopicRequest {
                name: topic.clone(),
                partitions: 3,
                replication_factor: Some(1),
                config: Default::default(),
            },
        )
        .await;
    assert!(again.is_err(), "a second create of {topic} must fail");
}

#[tokio::test]
async fn lag_of_a_group_that_never_committed_counts_only_retained_records() {
    let (_guard, bootstrap, kafka, topic) = broker_and_topic("wapipe-op-lag-new");
    create_topic(&bootstrap, &topic, 2).await.unwrap();
    produce(&bootstrap, &topic, 0, 5).await;
    let group = unique_name("wapipe-op-group-new");
    let offsets = offsets_of(&kafka, &topic, &group).await;
    assert_eq!(offsets.len(), 2);
    assert!(offsets.iter().all(|p| p.committed.is_none()), "{offsets:?}");
    assert_eq!(offsets[0].lag(), 5);
    assert_eq!(offsets[1].lag(), 0);
}

#[tokio::test]
async fn lag_of_a_group_that_committed_is_log_end_minus_committed() {
    let (_guard, bootstrap, kafka, topic) = broker_and_topic("wapipe-op-lag-committed");
    create_topic(&bootstrap, &topic, 2).await.unwrap();
    produce(&bootstrap, &topic, 0, 10).await;
    produce(&bootstrap, &topic, 1, 4).await;
    let group = unique_name("wapipe-op-group-committed");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut commit = TopicPartitionList::new();
    commit
        .add_partition_offset(&topic, 0, Offset::Offset(7))
        .unwrap();
    consumer.commit(&commit, CommitMode::Sync).unwrap();

    let offsets = offsets_of(&kafka, &topic, &group).await;
    assert_eq!(offsets[0].committed, Some(7));
    assert_eq!((offsets[0].log_end, offsets[0].lag()), (10, 3));
    assert_eq!(offsets[1].committed, None);
    assert_eq!(offsets[1].lag(), 4);
}

#[tokio::test]
async fn reading_lag_of_a_missing_topic_is_an_error() {
    let (_guard, _, kafka, missing) = broker_and_topic("wapipe-op-missing");
    let result = RdKafkaAdmin
        .read_offsets(&kafka, &missing, "any-group")
        .await;
    assert!(result.is_err());
}

async fn wait_for_partitions(kafka: &KafkaConnection, topic: &str, partitions: i32) {
    for _ in 0..100 {
        let shape = RdKafkaAdmin.describe_topic(kafka, topic).await.unwrap();
        if shape.is_some_and(|s| s.partitions == partitions) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{topic} never showed {partitions} partitions");
}

#[tokio::test]
async fn partitions_are_increased_on_the_broker_and_the_plan_then_matches() {
    let (_guard, bootstrap, kafka, topic) = broker_and_topic("wapipe-op-grow");
    create_topic(&bootstrap, &topic, 2).await.unwrap();
    produce(&bootstrap, &topic, 1, 3).await;
    let shape = RdKafkaAdmin.describe_topic(&kafka, &topic).await.unwrap();
    assert_eq!(
        plan_topic(5, None, shape),
        TopicPlan::IncreasePartitions { from: 2, to: 5 }
    );
    RdKafkaAdmin
        .create_partitions(&kafka, &topic, 5)
        .await
        .unwrap();
    wait_for_partitions(&kafka, &topic, 5).await;
    let shape = RdKafkaAdmin.describe_topic(&kafka, &topic).await.unwrap();
    assert_eq!(plan_topic(5, None, shape), TopicPlan::Matches);
    // The records already there stay where they were; the new partitions start empty.
    let offsets = offsets_of(&kafka, &topic, &unique_name("wapipe-op-grow-group")).await;
    let ends: Vec<i64> = offsets.iter().map(|p| p.log_end).collect();
    assert_eq!(ends, vec![0, 3, 0, 0, 0]);
    // Asking for fewer is refused by the broker too.
    assert!(RdKafkaAdmin
        .create_partitions(&kafka, &topic, 3)
        .await
        .is_err());
}

#[tokio::test]
async fn pipeline_topics_get_a_record_limit_for_the_largest_body_and_min_insync_replicas() {
    let (_guard, bootstrap, kafka, topic) = broker_and_topic("wapipe-op-config");
    let user =
        std::collections::BTreeMap::from([("retention.ms".to_string(), "3600000".to_string())]);
    let request = TopicRequest::for_pipeline(&topic, 2, Some(1), &user, None);
    RdKafkaAdmin.create_topic(&kafka, &request).await.unwrap();
    wait_for_partitions(&kafka, &topic, 2).await;

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(&topic)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    let value = |name: &str| {
        resource
            .get(name)
            .and_then(|entry| entry.value.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        value("max.message.bytes"),
        (3 * 1024 * 1024 + 64 * 1024).to_string()
    );
    assert_eq!(value("min.insync.replicas"), "1");
    assert_eq!(value("retention.ms"), "3600000");

    // The user's own values win.
    let mut own = user.clone();
    own.insert("max.message.bytes".into(), "8000000".into());
    own.insert("min.insync.replicas".into(), "1".into());
    let request = TopicRequest::for_pipeline("t", 1, Some(3), &own, Some(4096));
    assert_eq!(request.config["max.message.bytes"], "8000000");
    let request = TopicRequest::for_pipeline("t", 1, Some(3), &user, Some(4096));
    assert_eq!(request.config["min.insync.replicas"], "2");
    assert_eq!(
        request.config["max.message.bytes"],
        (4096 + 64 * 1024).to_string()
    );
}

#[tokio::test]
async fn describing_a_missing_topic_never_creates_it_even_where_the_broker_would() {
    let broker = Kafka::start_with(&[("auto.create.topics.enable", "true")]).unwrap();
    let kafka = settings(&broker.bootstrap());
    let topic = unique_name("wapipe-op-absent");
    for _ in 0..3 {
        assert_eq!(
            RdKafkaAdmin.describe_topic(&kafka, &topic).await.unwrap(),
            None
        );
        assert!(RdKafkaAdmin
            .read_offsets(&kafka, &topic, "g")
            .await
            .is_err());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        RdKafkaAdmin.describe_topic(&kafka, &topic).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_scaled_to_zero_groups_offsets_outlive_offset_retention_when_kept() {
    // A broker that expires an empty group's offsets one minute after their last commit.
    let broker = Kafka::start_with(&[
        ("offsets.retention.minutes", "1"),
        ("offsets.retention.check.interval.ms", "1000"),
    ])
    .unwrap();
    let bootstrap = broker.bootstrap();
    let kafka = settings(&bootstrap);
    let topic = unique_name("wapipe-op-keep");
    create_topic(&bootstrap, &topic, 2).await.unwrap();
    produce(&bootstrap, &topic, 0, 10).await;
    produce(&bootstrap, &topic, 1, 10).await;
    let (kept, left) = (unique_name("wapipe-op-kept"), unique_name("wapipe-op-left"));
    // Commits offsets 8 and 9 of the topic's two partitions for `group`.
    let keep = |group: String| {
        let (kafka, topic) = (kafka.clone(), topic.clone());
        async move {
            let offsets = GroupOffsets {
                topic: &topic,
                group: &group,
                offsets: &[(0, 8), (1, 9)],
            };
            RdKafkaAdmin.keep_offsets(&kafka, offsets).await.unwrap();
        }
    };
    for group in [&kept, &left] {
        keep(group.clone()).await;
    }
    let committed = |group: String| {
        let (kafka, topic) = (kafka.clone(), topic.clone());
        async move {
            offsets_of(&kafka, &topic, &group)
                .await
                .iter()
                .map(|p| p.committed)
                .collect::<Vec<_>>()
        }
    };
    // Past the retention, refreshing one group every 20 s (the operator's hourly keep-alive,
    // scaled to this broker's one-minute retention).
    let mut expired = false;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        keep(kept.clone()).await;
        if committed(left.clone()).await == vec![None, None] {
            expired = true;
            break;
        }
    }
    assert!(
        expired,
        "the broker never expired the unrefreshed group's offsets"
    );
    assert_eq!(committed(kept.clone()).await, vec![Some(8), Some(9)]);
}

#[tokio::test]
async fn a_topics_config_follows_the_spec_keeping_entries_set_elsewhere_and_bad_values_are_refused()
{
    use wapipe_operator::kafka::config_drift;
    let (_guard, _, kafka, topic) = broker_and_topic("wapipe-op-drift");
    let spec =
        std::collections::BTreeMap::from([("retention.ms".to_string(), "3600000".to_string())]);
    RdKafkaAdmin
        .create_topic(
            &kafka,
            &TopicRequest::for_pipeline(&topic, 1, Some(1), &spec, None),
        )
        .await
        .unwrap();
    wait_for_partitions(&kafka, &topic, 1).await;
    let created = RdKafkaAdmin.topic_config(&kafka, &topic).await.unwrap();
    assert_eq!(created["retention.ms"], "3600000");
    assert!(config_drift(&spec, &created).is_empty());

    // Someone sets segment.ms by hand; then the spec's retention changes.
    let mut by_hand = created.clone();
    by_hand.insert("segment.ms".into(), "600000".into());
    RdKafkaAdmin
        .set_topic_config(&kafka, &topic, &by_hand)
        .await
        .unwrap();
    let edited =
        std::collections::BTreeMap::from([("retention.ms".to_string(), "7200000".to_string())]);
    let current = RdKafkaAdmin.topic_config(&kafka, &topic).await.unwrap();
    let drift = config_drift(&edited, &current);
    assert_eq!(drift, edited);
    let mut merged = current.clone();
    merged.extend(drift);
    RdKafkaAdmin
        .set_topic_config(&kafka, &topic, &merged)
        .await
        .unwrap();
    let after = RdKafkaAdmin.topic_config(&kafka, &topic).await.unwrap();
    assert_eq!(after["retention.ms"], "7200000");
    assert_eq!(
        after["segment.ms"], "600000",
        "an entry set elsewhere was dropped"
    );
    assert_eq!(after["max.message.bytes"], created["max.message.bytes"]);

    // A value Kafka refuses is an error naming why, and changes nothing.
    let mut bad = after.clone();
    bad.insert("retention.ms".into(), "soon".into());
    let refused = RdKafkaAdmin.set_topic_config(&kafka, &topic, &bad).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        RdKafkaAdmin.topic_config(&kafka, &topic).await.unwrap(),
        after
    );
}

#[tokio::test]
async fn time_lag_is_the_age_of_the_record_at_the_committed_offset_and_idle_partitions_are_zero() {
    use wapipe_operator::kafka::read_ages;
    use wapipe_operator::scaler::policy::{decide_timed, PolicyConfig, PolicyState};
    use wapipe_operator::scaler::rate::RecordTimes;

    let (_guard, bootstrap, kafka, topic) = broker_and_topic("wapipe-op-time-lag");
    create_topic(&bootstrap, &topic, 3).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    // Partition 0: records written 600, 300 and 120 s ago; partition 1: one written 30 s ago;
    // partition 2: nothing (idle).
    produce_at(
        &bootstrap,
        &topic,
        0,
        &[now - 600_000, now - 300_000, now - 120_000],
    )
    .await;
    produce_at(&bootstrap, &topic, 1, &[now - 30_000]).await;
    let group = unique_name("wapipe-op-group-time-lag");
    // The group read partition 0's first record: its oldest unconsumed one is 300 s old.
    wapipe_testkit::commit_offset(&bootstrap, &group, &topic, 0, 1).unwrap();

    let offsets = offsets_of(&kafka, &topic, &group).await;
    let mut times = RecordTimes::default();
    let ages = read_ages(&RdKafkaAdmin, &kafka, &topic, &offsets, &mut times).await;
    let secs = |p: i32| ages.get(&p).map(|age| age.as_secs());
    // Ages are measured against the clock after the records were written: at least their age.
    assert!(secs(0).is_some_and(|s| (300..400).contains(&s)), "{ages:?}");
    // Partition 1 never committed: its oldest retained record, 30 s old.
    assert!(secs(1).is_some_and(|s| (30..130).contains(&s)), "{ages:?}");
    assert_eq!(secs(2), None, "an idle partition has nothing to read");

    let decision = decide_timed(
        &PolicyConfig::default(),
        &mut PolicyState::default(),
        &offsets,
        &ages,
        1,
        std::time::Instant::now(),
    );
    assert_eq!(decision.worst.map(|(p, _)| p), Some(0));
    let idle = decision.partitions.iter().find(|p| p.partition == 2);
    assert_eq!(idle.map(|p| p.time_lag), Some(Some(Duration::ZERO)));

    // The group moves on to the last record of partition 0: 120 s old, read again.
    wapipe_testkit::commit_offset(&bootstrap, &group, &topic, 0, 2).unwrap();
    let offsets = offsets_of(&kafka, &topic, &group).await;
    let ages = read_ages(&RdKafkaAdmin, &kafka, &topic, &offsets, &mut times).await;
    assert!(
        ages.get(&0)
            .is_some_and(|age| (120..220).contains(&age.as_secs())),
        "{ages:?}"
    );
}

#[tokio::test]
async fn reading_record_times_is_bounded_and_never_joins_or_commits_for_the_group() {
    let (_guard, bootstrap, kafka, topic) = broker_and_topic("wapipe-op-record-reads");
    create_topic(&bootstrap, &topic, 40).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    for partition in 0..40 {
        produce_at(&bootstrap, &topic, partition, &[now - 10_000]).await;
    }
    let group = unique_name("wapipe-op-group-record-reads");
    let offsets = offsets_of(&kafka, &topic, &group).await;
    let mut times = wapipe_operator::scaler::rate::RecordTimes::default();
    let first =
        wapipe_operator::kafka::read_ages(&RdKafkaAdmin, &kafka, &topic, &offsets, &mut times)
            .await;
    // 32 reads per poll at most; the next poll reads the rest and keeps the first ones.
    assert_eq!(first.len(), wapipe_operator::scaler::rate::MAX_RECORD_READS);
    let second =
        wapipe_operator::kafka::read_ages(&RdKafkaAdmin, &kafka, &topic, &offsets, &mut times)
            .await;
    assert_eq!(second.len(), 40);
    // Reading records committed nothing for the pipeline's group.
    let after = offsets_of(&kafka, &topic, &group).await;
    assert!(after.iter().all(|p| p.committed.is_none()), "{after:?}");
}
