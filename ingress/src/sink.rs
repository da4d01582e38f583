//! Where records go: Kafka in production, a fake in router tests.
//!
//! The contract: `produce` resolves `Ok` only once every record of the batch is acknowledged by
//! the broker (`acks=all`, idempotent producer). Anything else is an error and the request
//! answers 503, so the provider retries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::{join_all, BoxFuture};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, ProducerContext};
use wapipe_core::kafka::{record_headers, KafkaArgs};
use wapipe_core::{Provider, Record};

use crate::Error;

/// One POST's records and the provenance they share.
pub struct Batch<'a> {
    pub provider: Provider,
    pub received_at_ms: u64,
    pub body_sha256: &'a str,
    pub records: &'a [Record],
}

/// Why records were not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    #[error("the producer queue is full")]
    QueueFull,
    #[error("Kafka did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("Kafka refused the records: {0}")]
    Broker(String),
}

/// Something that durably stores a batch of records.
pub trait EventSink: Send + Sync + 'static {
    fn produce<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<(), ProduceError>>;
    /// Broker reachable and producer healthy.
    fn is_ready(&self) -> bool;
    /// False once the producer hit a fatal error and the process should be restarted.
    fn is_alive(&self) -> bool {
        true
    }
    /// Waits for records still queued; called on shutdown.
    fn flush(&self, _timeout: Duration) {}
}

/// Tracks librdkafka's fatal errors (an idempotent producer can hit one).
#[derive(Default)]
pub struct IngressContext {
    fatal: Arc<AtomicBool>,
}

impl ClientContext for IngressContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.fatal.store(true, Ordering::SeqCst);
            tracing::error!(%error, reason, "fatal producer error: the ingress must be restarted");
        } else {
            tracing::warn!(%error, reason, "kafka client error");
        }
    }
}

impl ProducerContext for IngressContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

type IngressProducer = FutureProducer<IngressContext>;

/// The Kafka producer: one per process, long-lived. It is rebuilt only when it is stuck: the
/// broker answers metadata requests, yet nothing has been acknowledged for `stuck_after`
/// while requests keep timing out (an idempotent producer that lost its epoch after local
/// message timeouts, on brokers that cannot bump it, never recovers by itself).
pub struct KafkaSink {
    producer: RwLock<Arc<IngressProducer>>,
    config: ClientConfig,
    topic: String,
    timeout: Duration,
    stuck_after: Duration,
    ready: Arc<AtomicBool>,
    fatal: Arc<AtomicBool>,
    /// When Kafka last acknowledged a whole batch (ms since `started`).
    last_ack_ms: AtomicU64,
    /// Requests timed out since the last acknowledged one.
    timeouts_since_ack: AtomicU64,
    started: Instant,
    rebuilds: AtomicU64,
}

/// Producer settings beyond the connection.
pub struct ProducerSettings {
    pub topic: String,
    pub produce_timeout: Duration,
    pub linger: Duration,
    pub queue_messages: u32,
    pub queue_kbytes: u32,
    pub message_timeout: Duration,
    pub stuck_after: Duration,
}

impl KafkaSink {
    pub fn new(kafka: &KafkaArgs, settings: ProducerSettings) -> Result<KafkaSink, Error> {
        let mut config: ClientConfig = kafka.client_config().map_err(Error::KafkaConfig)?;
        // Defaults that make 200 mean durable. Raw options from --kafka-option are already in
        // the config and win: only what is unset is filled.
        let defaults = [
            ("enable.idempotence", "true".to_string()),
            ("acks", "all".to_string()),
            ("linger.ms", settings.linger.as_millis().to_string()),
            (
                "queue.buffering.max.messages",
                settings.queue_messages.to_string(),
            ),
            (
                "queue.buffering.max.kbytes",
                settings.queue_kbytes.to_string(),
            ),
            // How long librdkafka keeps retrying a record after its request gave up (503). Kept
            // long on purpose: an idempotent producer whose records time out locally has to
            // bump its epoch, which some Kafka-compatible brokers (Tansu) do not support, and
            // it then never recovers. A late delivery is only a duplicate, which the worker
            // drops by message id.
            (
                "message.timeout.ms",
                settings.message_timeout.as_millis().max(1).to_string(),
            ),
            ("compression.type", "lz4".to_string()),
        ];
        for (key, value) in defaults {
            if config.get(key).is_none() {
                config.set(key, value);
            }
        }
        let fatal = Arc::new(AtomicBool::new(false));
        let producer = create_producer(&config, &fatal)?;
        Ok(KafkaSink {
            producer: RwLock::new(Arc::new(producer)),
            config,
            topic: settings.topic,
            timeout: settings.produce_timeout,
            stuck_after: settings.stuck_after,
            ready: Arc::new(AtomicBool::new(false)),
            fatal,
            last_ack_ms: AtomicU64::new(0),
            timeouts_since_ack: AtomicU64::new(0),
            started: Instant::now(),
            rebuilds: AtomicU64::new(0),
        })
    }

    fn current(&self) -> Arc<IngressProducer> {
        self.producer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// How many times the producer was rebuilt because it was stuck.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::SeqCst)
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Asks the broker for the topic's metadata and records whether it answered; rebuilds the
    /// producer when the broker answers but the producer is stuck.
    pub fn check_readiness(&self, within: Duration) -> bool {
        let producer = self.current();
        // All topics rather than ours by name: asking a producer's broker about one missing
        // topic can auto-create it with the broker's defaults, the wrong shape for a pipeline.
        let ok = match producer.client().fetch_metadata(None, within) {
            Ok(metadata) => metadata.topics().iter().any(|t| {
                t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty()
            }),
            Err(error) => {
                tracing::debug!(%error, "readiness: broker metadata unavailable");
                false
            }
        };
        self.ready.store(ok, Ordering::SeqCst);
        let silent_for = self.elapsed_ms() - self.last_ack_ms.load(Ordering::SeqCst);
        let stuck = ok
            && self.timeouts_since_ack.load(Ordering::SeqCst) >= 3
            && silent_for >= self.stuck_after.as_millis() as u64;
        if stuck {
            self.rebuild(silent_for);
        }
        ok
    }

    fn rebuild(&self, silent_for_ms: u64) {
        match create_producer(&self.config, &self.fatal) {
            Ok(fresh) => {
                let old = std::mem::replace(
                    &mut *self
                        .producer
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()),
                    Arc::new(fresh),
                );
                self.timeouts_since_ack.store(0, Ordering::SeqCst);
                self.last_ack_ms.store(self.elapsed_ms(), Ordering::SeqCst);
                self.rebuilds.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(
                    silent_for_ms,
                    "the broker answers but the producer acknowledged nothing: rebuilt the producer"
                );
                // Records still queued in the old producer were never acknowledged, so their
                // requests answered 503 and the provider will send them again.
                drop(old);
            }
            Err(error) => tracing::error!(%error, "rebuilding a stuck producer failed"),
        }
    }
}

fn create_producer(
    config: &ClientConfig,
    fatal: &Arc<AtomicBool>,
) -> Result<IngressProducer, Error> {
    config
        .create_with_context(IngressContext {
            fatal: fatal.clone(),
        })
        .map_err(Error::CreateProducer)
}

impl EventSink for KafkaSink {
    fn produce<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<(), ProduceError>> {
        Box::pin(async move {
            let producer = self.current();
            let received_at = batch.received_at_ms.to_string();
            let mut deliveries = Vec::with_capacity(batch.records.len());
            for (index, record) in batch.records.iter().enumerate() {
                let index = index.to_string();
                let headers = record_headers(
                    record,
                    batch.provider,
                    &received_at,
                    batch.body_sha256,
                    &index,
                );
                let future_record = FutureRecord::to(&self.topic)
                    .key(record.key.as_bytes())
                    .payload(&record.value)
                    .headers(headers);
                match producer.send_result(future_record) {
                    Ok(delivery) => deliveries.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        return Err(ProduceError::QueueFull)
                    }
                    Err((error, _)) => return Err(ProduceError::Broker(error.to_string())),
                }
            }
            let Ok(outcomes) = tokio::time::timeout(self.timeout, join_all(deliveries)).await
            else {
                self.timeouts_since_ack.fetch_add(1, Ordering::SeqCst);
                return Err(ProduceError::Timeout(self.timeout));
            };
            for outcome in outcomes {
                match outcome {
                    Ok(Ok(_)) => {}
                    Ok(Err((
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                        _,
                    ))) => {
                        self.timeouts_since_ack.fetch_add(1, Ordering::SeqCst);
                        return Err(ProduceError::Timeout(self.timeout));
                    }
                    Ok(Err((error, _))) => return Err(ProduceError::Broker(error.to_string())),
                    Err(_canceled) => {
                        return Err(ProduceError::Broker("the producer was dropped".into()))
                    }
                }
            }
            self.timeouts_since_ack.store(0, Ordering::SeqCst);
            self.last_ack_ms.store(self.elapsed_ms(), Ordering::SeqCst);
            Ok(())
        })
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.is_alive()
    }

    fn is_alive(&self) -> bool {
        !self.fatal.load(Ordering::SeqCst)
    }

    fn flush(&self, timeout: Duration) {
        if let Err(error) = self.current().flush(timeout) {
            tracing::warn!(%error, "records were still queued when shutdown gave up");
        }
    }
}
