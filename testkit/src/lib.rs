//! Test support shared by every crate's integration tests.
//!
//! Each test process gets its own Apache Kafka broker (KRaft, one node) on free loopback ports
//! with its log in a temporary directory, unless `WAPIPE_TEST_BROKERS` names a broker already
//! running (as `scripts/test.sh` does). Tests that stop and restart the broker always get a
//! private one.
//! Names of topics and groups are unique per call so tests never see each other's records.
#![forbid(unsafe_code)]

use wapipe_kafka_local as broker;
pub use wapipe_kafka_local::{free_port, kafka_version, wait_for_broker, KafkaPorts};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Environment variable naming an already running broker to share between tests.
pub const BROKERS_ENV: &str = "WAPIPE_TEST_BROKERS";
/// An Apache Kafka broker owned by the test, in a temporary directory: killed when dropped.
pub struct Kafka {
    ports: KafkaPorts,
    dir: tempfile::TempDir,
    overrides: Vec<(String, String)>,
    child: Option<Child>,
}

impl Kafka {
    /// Starts a private broker on free ports and waits until it answers a metadata request.
    pub fn start() -> anyhow::Result<Kafka> {
        Kafka::start_with(&[])
    }

    /// Like [`Kafka::start`], with broker settings that override the project's
    /// `server.properties` (for example `auto.create.topics.enable=true`, to prove a client
    /// never creates a topic by asking for it).
    pub fn start_with(overrides: &[(&str, &str)]) -> anyhow::Result<Kafka> {
        let dir = tempfile::Builder::new().prefix("wapipe-kafka-").tempdir()?;
        let mut broker = Kafka {
            ports: KafkaPorts {
                port: free_port(),
                controller_port: free_port(),
            },
            dir,
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the broker (SIGKILL: the harshest way a broker can go away).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same ports with the same log directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("kafka.log")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let command = broker::prepare(self.dir.path(), self.ports, &self.overrides)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", command.program.display()))?;
        self.child = Some(child);
        wait_for_broker(&self.bootstrap(), Duration::from_secs(120)).with_context(|| {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let mut tail: Vec<&str> = log.lines().rev().take(40).collect();
            tail.reverse();
            format!(
                "Kafka did not come up; the end of its log:\n{}",
                tail.join("\n")
            )
        })
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A broker for tests that only read and write: the shared one from `WAPIPE_TEST_BROKERS`,
/// else a private one. Keep the returned guard alive for the test's duration.
pub fn broker() -> anyhow::Result<(String, Option<Kafka>)> {
    match std::env::var(BROKERS_ENV) {
        Ok(brokers) if !brokers.trim().is_empty() => Ok((brokers, None)),
        _ => {
            let kafka = Kafka::start()?;
            Ok((kafka.bootstrap(), Some(kafka)))
        }
    }
}

/// A name no other test (in this or another process) uses: `prefix-<pid>-<time>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Commits `group` at `offset` of `topic`'s `partition`, as a consumer of the group would,
/// without joining it.
pub fn commit_offset(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))?;
    consumer.commit(&offsets, CommitMode::Sync)?;
    Ok(())
}

/// Creates `topic` with `partitions` partitions (replication 1) and waits for it to be listed.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    create_topic_with(bootstrap, topic, partitions, &[]).await
}

/// Like [`create_topic`], with topic configs (`max.message.bytes`, ...).
pub async fn create_topic_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    config: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in config {
        new_topic = new_topic.set(key, value);
    }
    let results = admin
        .create_topics(
            &[new_topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("creating topic {name}: {code}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(2))?;
        if metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.partitions().len() == partitions as usize)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("topic {topic} was created but is not listed with {partitions} partitions");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A POST of `body` to `url`, signed with `secret` as Meta signs webhooks
/// (`X-Hub-Signature-256`), ready to send.
pub fn signed_meta_post(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    body: impl Into<String>,
) -> reqwest::RequestBuilder {
    let body = body.into();
    client
        .post(url)
        .header(
            "x-hub-signature-256",
            wapipe_core::signature::sign_meta(secret.as_bytes(), body.as_bytes()),
        )
        .body(body)
}
