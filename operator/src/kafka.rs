//! The operator's side of Kafka: topic administration and lag reading behind [`TopicAdmin`], so
//! the reconciler runs against the real broker ([`RdKafkaAdmin`]) or, in tests, an in-memory one
//! (`InMemoryAdmin`, built under `cargo test` and with the `test-support` feature).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::scaler::policy::PartitionOffsets;
use crate::scaler::rate::{RecordTimes, MAX_RECORD_READS};

pub use wapipe_core::kafka::KafkaConnection;

/// How long one admin or metadata request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("broker refused: {0:?}")]
    Refused(RDKafkaErrorCode),
    #[error("topic {0} does not exist")]
    NoSuchTopic(String),
    #[error("Kafka did not apply {0}")]
    NotApplied(String),
    #[error("Kafka client settings")]
    Settings(#[source] wapipe_core::kafka::KafkaConfigError),
    #[error("blocking Kafka call panicked or was cancelled")]
    Join,
}

impl AdminError {
    /// Whether Kafka refused the credentials or the TLS handshake: the SASL password or CA the
    /// connection was built from may have been rotated, so they are read again.
    pub fn is_auth(&self) -> bool {
        let code = match self {
            AdminError::Kafka(error) => error.rdkafka_error_code(),
            AdminError::Refused(code) => Some(*code),
            _ => None,
        };
        matches!(
            code,
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            )
        )
    }
}

/// The shape of an existing topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicShape {
    pub partitions: i32,
    pub replication_factor: i32,
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicRequest {
    pub name: String,
    pub partitions: i32,
    /// `None` leaves it to the broker's default.
    pub replication_factor: Option<i32>,
    pub config: BTreeMap<String, String>,
}

/// Offsets of one consumer group on one topic, to commit: `(partition, offset)` pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupOffsets<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub offsets: &'a [(i32, i64)],
}

/// The entries of `desired` whose value on the topic (`current`) differs or is missing.
pub fn config_drift(
    desired: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    desired
        .iter()
        .filter(|(key, value)| current.get(*key) != Some(*value))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl TopicRequest {
    /// A topic for a pipeline: the user's `config` as given, plus what wapipe's guarantees need
    /// where the user left it out: `max.message.bytes` large enough for the ingress's largest
    /// body (`max_body_bytes`, the ingress default when `None`), and `min.insync.replicas` of
    /// RF − 1 (at least 1) when the replication factor is known, so an `acks=all` write
    /// survives the loss of any one broker without refusing writes while one is down.
    pub fn for_pipeline(
        name: &str,
        partitions: i32,
        replication_factor: Option<i32>,
        config: &BTreeMap<String, String>,
        max_body_bytes: Option<u64>,
    ) -> TopicRequest {
        let mut config = config.clone();
        let body = max_body_bytes
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(wapipe_core::DEFAULT_MAX_BODY_BYTES);
        config
            .entry("max.message.bytes".to_string())
            .or_insert_with(|| (body + wapipe_core::RECORD_OVERHEAD_BYTES).to_string());
        if let Some(rf) = replication_factor {
            config
                .entry("min.insync.replicas".to_string())
                .or_insert_with(|| (rf - 1).max(1).to_string());
        }
        TopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            config,
        }
    }
}

/// Topic administration and lag reading.
#[async_trait]
pub trait TopicAdmin: Send + Sync + 'static {
    /// The topic's shape, `None` if it does not exist.
    async fn describe_topic(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
    ) -> Result<Option<TopicShape>, AdminError>;
    async fn create_topic(
        &self,
        kafka: &KafkaConnection,
        topic: &TopicRequest,
    ) -> Result<(), AdminError>;
    /// Raises the partition count to `total`.
    async fn create_partitions(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
        total: i32,
    ) -> Result<(), AdminError>;
    async fn delete_topic(&self, kafka: &KafkaConnection, topic: &str) -> Result<(), AdminError>;
    /// The id Kafka gives its cluster (the same whatever bootstrap address reached it), `None`
    /// from a broker too old to report one.
    async fn cluster_id(&self, kafka: &KafkaConnection) -> Result<Option<String>, AdminError>;
    /// Committed offsets of `group` and watermarks of every partition of `topic`.
    async fn read_offsets(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
        group: &str,
    ) -> Result<Vec<PartitionOffsets>, AdminError>;
    /// Timestamps (ms since the epoch) of the first record at or after each `(partition,
    /// offset)` of `topic`: the oldest unconsumed record when the offset is the group's
    /// position. Partitions whose record did not arrive within a short deadline are left out.
    async fn record_times(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
        positions: &[(i32, i64)],
    ) -> Result<BTreeMap<i32, i64>, AdminError>;
    /// The topic's own configuration: entries set on the topic (not broker defaults).
    async fn topic_config(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
    ) -> Result<BTreeMap<String, String>, AdminError>;
    /// Sets the topic's own configuration to exactly `config` (entries left out return to the
    /// broker's defaults: pass what [`TopicAdmin::topic_config`] read, changed).
    async fn set_topic_config(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), AdminError>;
    /// Commits a group's offsets on a topic again, unchanged, so that Kafka's offset retention
    /// (`offsets.retention.minutes`, counted from the last commit while a group is empty)
    /// never expires them while the group is scaled to zero. Kafka refuses it while the group
    /// has members.
    async fn keep_offsets(
        &self,
        kafka: &KafkaConnection,
        commit: GroupOffsets<'_>,
    ) -> Result<(), AdminError>;
}

/// Reads the ages of the partitions' oldest unconsumed records, at most
/// [`MAX_RECORD_READS`] new reads per call (the rest are kept in `times` while their position
/// stays). A failed read leaves the ages unknown rather than failing the poll.
pub async fn read_ages(
    admin: &dyn TopicAdmin,
    kafka: &KafkaConnection,
    topic: &str,
    offsets: &[PartitionOffsets],
    times: &mut RecordTimes,
) -> BTreeMap<i32, Duration> {
    let positions = times.to_read(offsets, MAX_RECORD_READS);
    match admin.record_times(kafka, topic, &positions).await {
        Ok(read) => times.learn(positions.iter().filter_map(|&(partition, position)| {
            Some((partition, (position, *read.get(&partition)?)))
        })),
        Err(error) => {
            tracing::debug!(%error, topic, "reading the oldest unconsumed records failed")
        }
    }
    times.ages(chrono::Utc::now().timestamp_millis())
}

/// Tries of a request to a group's coordinator while it is not ready.
const COORDINATOR_ATTEMPTS: u32 = 6;

/// Runs `request` to a group's coordinator (an offset read or commit), trying it again, 500 ms
/// apart, while the coordinator is moving or still loading (a broker just started or
/// restarted) before the error is reported. Blocking: call it on a blocking thread.
fn when_coordinator_ready<T>(mut request: impl FnMut() -> KafkaResult<T>) -> Result<T, AdminError> {
    let mut attempt = 1;
    loop {
        match request() {
            Ok(value) => return Ok(value),
            Err(error)
                if attempt < COORDINATOR_ATTEMPTS
                    && matches!(
                        error.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::NotCoordinator
                                | RDKafkaErrorCode::CoordinatorLoadInProgress
                                | RDKafkaErrorCode::CoordinatorNotAvailable
                        )
                    ) =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The connection's client configuration; it never lets a metadata request create a topic (a
/// deleted pipeline's topic stays deleted; a new one is created only with its spec's shape).
fn client_config(kafka: &KafkaConnection) -> Result<ClientConfig, AdminError> {
    kafka.client_config().map_err(AdminError::Settings)
}

/// Options of every admin request: bounded on the broker (operation) and on the client
/// (request). Without the client-side bound librdkafka waits `socket.timeout.ms` (60 s) for a
/// broker that does not answer, and the reconcile with it.
fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(REQUEST_TIMEOUT))
        .request_timeout(Some(REQUEST_TIMEOUT))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| AdminError::Join)?
}

/// [`TopicAdmin`] over librdkafka. Clients are kept and reused per connection settings (and
/// group, for lag reads), not built per call: a librdkafka client costs threads and
/// connections, and the scaler reads lag of every pipeline every poll. A client unused for
/// `CLIENT_IDLE` is dropped.
#[derive(Clone, Debug, Default)]
pub struct RdKafkaAdmin;

/// How long an unused Kafka client is kept.
const CLIENT_IDLE: Duration = Duration::from_secs(600);

struct Cached<T> {
    client: Arc<T>,
    used: std::time::Instant,
}

/// Clients by connection and group (empty for clients outside any group).
type Cache<T> = Mutex<HashMap<(KafkaConnection, String), Cached<T>>>;

fn admins() -> &'static Cache<AdminClient<DefaultClientContext>> {
    static ADMINS: OnceLock<Cache<AdminClient<DefaultClientContext>>> = OnceLock::new();
    ADMINS.get_or_init(Mutex::default)
}

/// Readers of single records, without a group: one at a time per connection, as each read
/// assigns its own partitions.
fn record_readers() -> &'static Cache<Mutex<BaseConsumer>> {
    static READERS: OnceLock<Cache<Mutex<BaseConsumer>>> = OnceLock::new();
    READERS.get_or_init(Mutex::default)
}

/// How long one read of the oldest unconsumed records may take in all.
const RECORD_READ_DEADLINE: Duration = Duration::from_secs(3);

fn lag_readers() -> &'static Cache<BaseConsumer> {
    static READERS: OnceLock<Cache<BaseConsumer>> = OnceLock::new();
    READERS.get_or_init(Mutex::default)
}

/// The cached client for `key`, made by `create` when there is none; drops idle ones.
fn cached<T>(
    cache: &Cache<T>,
    key: (KafkaConnection, String),
    create: impl FnOnce() -> Result<T, AdminError>,
) -> Result<Arc<T>, AdminError> {
    let mut cache = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = std::time::Instant::now();
    cache.retain(|k, entry| *k == key || now.duration_since(entry.used) < CLIENT_IDLE);
    if let Some(entry) = cache.get_mut(&key) {
        entry.used = now;
        return Ok(entry.client.clone());
    }
    let client = Arc::new(create()?);
    cache.insert(
        key,
        Cached {
            client: client.clone(),
            used: now,
        },
    );
    Ok(client)
}

impl RdKafkaAdmin {
    fn admin(
        kafka: &KafkaConnection,
    ) -> Result<Arc<AdminClient<DefaultClientContext>>, AdminError> {
        cached(admins(), (kafka.clone(), String::new()), || {
            Ok(client_config(kafka)?.create()?)
        })
    }

    /// A non-subscribing consumer of `group`, for committed offsets and watermarks.
    fn lag_reader(kafka: &KafkaConnection, group: &str) -> Result<Arc<BaseConsumer>, AdminError> {
        cached(lag_readers(), (kafka.clone(), group.to_string()), || {
            let mut config = client_config(kafka)?;
            config
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false");
            Ok(config.create()?)
        })
    }

    /// A consumer outside any group that fetches as little as one record batch per partition.
    fn record_reader(kafka: &KafkaConnection) -> Result<Arc<Mutex<BaseConsumer>>, AdminError> {
        cached(record_readers(), (kafka.clone(), String::new()), || {
            let mut config = client_config(kafka)?;
            config
                .set("group.id", "wapipe-operator-record-reader")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "false")
                .set("auto.offset.reset", "earliest")
                // One small fetch per leader for every partition read: a batch is cut at the
                // per-partition limit (a larger first batch still comes whole), so a read costs
                // at most MAX_RECORD_READS × 64 KiB.
                .set("max.partition.fetch.bytes", "65536")
                .set("fetch.wait.max.ms", "50")
                .set("queued.min.messages", "1");
            Ok(Mutex::new(config.create()?))
        })
    }

    fn check(results: Vec<Result<String, (String, RDKafkaErrorCode)>>) -> Result<(), AdminError> {
        for result in results {
            if let Err((_, code)) = result {
                return Err(AdminError::Refused(code));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl TopicAdmin for RdKafkaAdmin {
    async fn describe_topic(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
    ) -> Result<Option<TopicShape>, AdminError> {
        let admin = Self::admin(kafka)?;
        let topic = topic.to_string();
        blocking(move || {
            // Our topic only; the client never auto-creates it (allow.auto.create.topics=false).
            let metadata = admin
                .inner()
                .fetch_metadata(Some(&topic), REQUEST_TIMEOUT)?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| TopicShape {
                    partitions: i32::try_from(t.partitions().len()).unwrap_or(i32::MAX),
                    replication_factor: t
                        .partitions()
                        .first()
                        .map(|p| i32::try_from(p.replicas().len()).unwrap_or(i32::MAX))
                        .unwrap_or(0),
                }))
        })
        .await
    }

    async fn cluster_id(&self, kafka: &KafkaConnection) -> Result<Option<String>, AdminError> {
        let admin = Self::admin(kafka)?;
        // Answered from the client's last metadata when it has one (the client is kept per
        // connection); `None` too when Kafka did not answer in time: the topic calls that follow
        // report that.
        blocking(move || Ok(admin.inner().fetch_cluster_id(REQUEST_TIMEOUT))).await
    }

    async fn create_topic(
        &self,
        kafka: &KafkaConnection,
        topic: &TopicRequest,
    ) -> Result<(), AdminError> {
        let admin = Self::admin(kafka)?;
        let mut new_topic = NewTopic::new(
            &topic.name,
            topic.partitions,
            TopicReplication::Fixed(topic.replication_factor.unwrap_or(-1)),
        );
        for (key, value) in &topic.config {
            new_topic = new_topic.set(key, value);
        }
        let options = admin_options();
        Self::check(admin.create_topics(&[new_topic], &options).await?)
    }

    async fn create_partitions(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
        total: i32,
    ) -> Result<(), AdminError> {
        let admin = Self::admin(kafka)?;
        let total = usize::try_from(total).unwrap_or(0);
        let options = admin_options();
        Self::check(
            admin
                .create_partitions(&[NewPartitions::new(topic, total)], &options)
                .await?,
        )
    }

    async fn delete_topic(&self, kafka: &KafkaConnection, topic: &str) -> Result<(), AdminError> {
        let admin = Self::admin(kafka)?;
        let options = admin_options();
        match Self::check(admin.delete_topics(&[topic], &options).await?) {
            Err(AdminError::Refused(RDKafkaErrorCode::UnknownTopicOrPartition)) => Ok(()),
            other => other,
        }
    }

    async fn read_offsets(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
        group: &str,
    ) -> Result<Vec<PartitionOffsets>, AdminError> {
        // Never subscribes: joining the group would trigger a rebalance of the real workers.
        let consumer = Self::lag_reader(kafka, group)?;
        let topic = topic.to_string();
        blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&topic), REQUEST_TIMEOUT)?;
            let Some(topic_metadata) = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
            else {
                return Err(AdminError::NoSuchTopic(topic));
            };
            let mut partitions: Vec<i32> =
                topic_metadata.partitions().iter().map(|p| p.id()).collect();
            partitions.sort_unstable();
            let list_at = |offset: Offset| -> Result<TopicPartitionList, AdminError> {
                let mut list = TopicPartitionList::new();
                for &partition in &partitions {
                    list.add_partition_offset(&topic, partition, offset)?;
                }
                Ok(list)
            };
            let wanted = list_at(Offset::Invalid)?;
            let committed = when_coordinator_ready(|| {
                consumer.committed_offsets(wanted.clone(), REQUEST_TIMEOUT)
            })?;
            // Every partition's log start and log end in one ListOffsets request per leader
            // each (timestamps -2 and -1), not two requests per partition.
            let starts =
                consumer.offsets_for_times(list_at(Offset::Beginning)?, REQUEST_TIMEOUT)?;
            let ends = consumer.offsets_for_times(list_at(Offset::End)?, REQUEST_TIMEOUT)?;
            let offset_of = |list: &TopicPartitionList, partition: i32| match list
                .find_partition(&topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(offset)) if offset >= 0 => Ok(offset),
                other => {
                    tracing::debug!(partition, ?other, "no watermark for the partition");
                    Err(AdminError::Kafka(KafkaError::OffsetFetch(
                        RDKafkaErrorCode::OffsetOutOfRange,
                    )))
                }
            };
            partitions
                .iter()
                .map(|&partition| {
                    let committed = committed.find_partition(&topic, partition).and_then(
                        |element| match element.offset() {
                            Offset::Offset(offset) if offset >= 0 => Some(offset),
                            _ => None,
                        },
                    );
                    Ok(PartitionOffsets {
                        partition,
                        committed,
                        log_start: offset_of(&starts, partition)?,
                        log_end: offset_of(&ends, partition)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn record_times(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
        positions: &[(i32, i64)],
    ) -> Result<BTreeMap<i32, i64>, AdminError> {
        if positions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let reader = Self::record_reader(kafka)?;
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in positions {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        let topic = topic.to_string();
        blocking(move || {
            let consumer = lock(&reader);
            consumer.assign(&list)?;
            let mut times = BTreeMap::new();
            let deadline = std::time::Instant::now() + RECORD_READ_DEADLINE;
            while times.len() < list.count() {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                match consumer.poll(left.min(Duration::from_millis(200))) {
                    Some(Ok(message)) if message.topic() == topic => {
                        if let Some(millis) = message.timestamp().to_millis() {
                            times.entry(message.partition()).or_insert(millis);
                        }
                    }
                    Some(Ok(_)) | None => {}
                    Some(Err(error)) => {
                        tracing::debug!(%error, "reading the oldest unconsumed record");
                    }
                }
            }
            // Nothing stays assigned (or fetched in the background) between reads.
            consumer.unassign()?;
            Ok(times)
        })
        .await
    }

    async fn keep_offsets(
        &self,
        kafka: &KafkaConnection,
        commit: GroupOffsets<'_>,
    ) -> Result<(), AdminError> {
        if commit.offsets.is_empty() {
            return Ok(());
        }
        // The same non-subscribing client of the group that reads its lag.
        let consumer = Self::lag_reader(kafka, commit.group)?;
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in commit.offsets {
            list.add_partition_offset(commit.topic, partition, Offset::Offset(offset))?;
        }
        blocking(move || {
            when_coordinator_ready(|| consumer.commit(&list, rdkafka::consumer::CommitMode::Sync))
        })
        .await
    }

    async fn topic_config(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
    ) -> Result<BTreeMap<String, String>, AdminError> {
        let admin = Self::admin(kafka)?;
        let options = admin_options();
        let results = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await?;
        let resource = results
            .into_iter()
            .next()
            .ok_or_else(|| AdminError::NoSuchTopic(topic.to_string()))?
            .map_err(AdminError::Refused)?;
        Ok(resource
            .entries
            .into_iter()
            .filter(|entry| entry.source == ConfigSource::DynamicTopic)
            .filter_map(|entry| entry.value.map(|value| (entry.name, value)))
            .collect())
    }

    async fn set_topic_config(
        &self,
        kafka: &KafkaConnection,
        topic: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), AdminError> {
        let admin = Self::admin(kafka)?;
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (key, value) in config {
            alter = alter.set(key, value);
        }
        let options = admin_options();
        for result in admin.alter_configs(&[alter], &options).await? {
            if let Err((_, code)) = result {
                return Err(AdminError::Refused(code));
            }
        }
        // Read back: a value the broker rejects in validation is not always reported as an
        // error of the request, and the change reaches the broker's metadata a moment later.
        let mut differs = Vec::new();
        for _ in 0..20 {
            let now = self.topic_config(kafka, topic).await?;
            differs = config
                .iter()
                .filter(|(key, value)| now.get(*key) != Some(*value))
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            if differs.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(AdminError::NotApplied(differs.join(", ")))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(any(test, feature = "test-support"))]
mod in_memory;
#[cfg(any(test, feature = "test-support"))]
pub use in_memory::InMemoryAdmin;
