//! [`InMemoryAdmin`], built under `cargo test` and with the `test-support` feature.

use super::*;
use std::sync::atomic::Ordering;

/// An in-memory [`TopicAdmin`] for tests: topics are shapes in a map, offsets are
/// whatever the caller sets, and every call is recorded.
#[derive(Debug, Default)]
pub struct InMemoryAdmin {
    /// When set, every lag read fails as if Kafka did not answer.
    pub fail_lag_reads: std::sync::atomic::AtomicBool,
    /// When set, every topic description fails as Kafka refusing the SASL credentials.
    pub refuse_credentials: std::sync::atomic::AtomicBool,
    /// The cluster id it reports; `None` for a broker without one.
    pub cluster_id: Mutex<Option<String>>,
    topics: Mutex<BTreeMap<String, TopicShape>>,
    configs: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    offsets: Mutex<BTreeMap<(String, String), Vec<PartitionOffsets>>>,
    record_times: Mutex<BTreeMap<String, BTreeMap<i32, i64>>>,
    calls: Mutex<Vec<String>>,
}

impl InMemoryAdmin {
    pub fn with_topic(self, name: &str, partitions: i32, replication_factor: i32) -> Self {
        lock(&self.topics).insert(
            name.to_string(),
            TopicShape {
                partitions,
                replication_factor,
            },
        );
        self
    }

    /// Reports `id` as the cluster's id.
    pub fn with_cluster_id(self, id: &str) -> Self {
        *lock(&self.cluster_id) = Some(id.to_string());
        self
    }

    /// Sets a topic's own configuration, as another tool would.
    pub fn set_config(&self, topic: &str, config: BTreeMap<String, String>) {
        lock(&self.configs).insert(topic.to_string(), config);
    }

    pub fn set_offsets(&self, topic: &str, group: &str, offsets: Vec<PartitionOffsets>) {
        lock(&self.offsets).insert((topic.to_string(), group.to_string()), offsets);
    }

    /// Timestamps (ms since the epoch) of the oldest unconsumed record of each partition.
    pub fn set_record_times(&self, topic: &str, times: BTreeMap<i32, i64>) {
        lock(&self.record_times).insert(topic.to_string(), times);
    }

    pub fn topic(&self, name: &str) -> Option<TopicShape> {
        lock(&self.topics).get(name).copied()
    }

    /// The calls made so far, e.g. `create whatsapp_webhooks_raw 12`.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    fn record(&self, call: String) {
        lock(&self.calls).push(call);
    }
}

#[async_trait]
impl TopicAdmin for InMemoryAdmin {
    async fn describe_topic(
        &self,
        _kafka: &KafkaConnection,
        topic: &str,
    ) -> Result<Option<TopicShape>, AdminError> {
        if self.refuse_credentials.load(Ordering::SeqCst) {
            return Err(AdminError::Refused(
                RDKafkaErrorCode::SaslAuthenticationFailed,
            ));
        }
        Ok(self.topic(topic))
    }

    async fn cluster_id(&self, _kafka: &KafkaConnection) -> Result<Option<String>, AdminError> {
        Ok(lock(&self.cluster_id).clone())
    }

    async fn create_topic(
        &self,
        _kafka: &KafkaConnection,
        topic: &TopicRequest,
    ) -> Result<(), AdminError> {
        self.record(format!("create {} {}", topic.name, topic.partitions));
        let mut topics = lock(&self.topics);
        if topics.contains_key(&topic.name) {
            return Err(AdminError::Refused(RDKafkaErrorCode::TopicAlreadyExists));
        }
        lock(&self.configs).insert(topic.name.clone(), topic.config.clone());
        topics.insert(
            topic.name.clone(),
            TopicShape {
                partitions: topic.partitions,
                replication_factor: topic.replication_factor.unwrap_or(1),
            },
        );
        Ok(())
    }

    async fn create_partitions(
        &self,
        _kafka: &KafkaConnection,
        topic: &str,
        total: i32,
    ) -> Result<(), AdminError> {
        self.record(format!("create-partitions {topic} {total}"));
        match lock(&self.topics).get_mut(topic) {
            Some(shape) if shape.partitions < total => {
                shape.partitions = total;
                Ok(())
            }
            Some(_) => Err(AdminError::Refused(RDKafkaErrorCode::InvalidPartitions)),
            None => Err(AdminError::NoSuchTopic(topic.to_string())),
        }
    }

    async fn delete_topic(&self, _kafka: &KafkaConnection, topic: &str) -> Result<(), AdminError> {
        self.record(format!("delete {topic}"));
        lock(&self.topics).remove(topic);
        Ok(())
    }

    async fn read_offsets(
        &self,
        _kafka: &KafkaConnection,
        topic: &str,
        group: &str,
    ) -> Result<Vec<PartitionOffsets>, AdminError> {
        if self.fail_lag_reads.load(Ordering::SeqCst) {
            return Err(AdminError::Kafka(KafkaError::OffsetFetch(
                RDKafkaErrorCode::BrokerTransportFailure,
            )));
        }
        let Some(shape) = self.topic(topic) else {
            return Err(AdminError::NoSuchTopic(topic.to_string()));
        };
        Ok(lock(&self.offsets)
            .get(&(topic.to_string(), group.to_string()))
            .cloned()
            .unwrap_or_else(|| {
                (0..shape.partitions)
                    .map(|partition| PartitionOffsets {
                        partition,
                        committed: None,
                        log_start: 0,
                        log_end: 0,
                    })
                    .collect()
            }))
    }

    async fn keep_offsets(
        &self,
        _kafka: &KafkaConnection,
        commit: GroupOffsets<'_>,
    ) -> Result<(), AdminError> {
        self.record(format!(
            "keep offsets {} {} {:?}",
            commit.topic, commit.group, commit.offsets
        ));
        Ok(())
    }

    async fn record_times(
        &self,
        _kafka: &KafkaConnection,
        topic: &str,
        positions: &[(i32, i64)],
    ) -> Result<BTreeMap<i32, i64>, AdminError> {
        let known = lock(&self.record_times);
        let times = known.get(topic);
        Ok(positions
            .iter()
            .filter_map(|(partition, _)| Some((*partition, *times?.get(partition)?)))
            .collect())
    }

    async fn topic_config(
        &self,
        _kafka: &KafkaConnection,
        topic: &str,
    ) -> Result<BTreeMap<String, String>, AdminError> {
        self.topic(topic)
            .ok_or_else(|| AdminError::NoSuchTopic(topic.to_string()))?;
        Ok(lock(&self.configs).get(topic).cloned().unwrap_or_default())
    }

    async fn set_topic_config(
        &self,
        _kafka: &KafkaConnection,
        topic: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), AdminError> {
        self.record(format!("set config {topic} {config:?}"));
        lock(&self.configs).insert(topic.to_string(), config.clone());
        Ok(())
    }
}
