//! Where records go: Kafka in production, a fake in router tests.
//!
//! The contract: `produce` resolves `Ok` only once every record of the batch is acknowledged by
//! the broker (`acks=all`, idempotent producer). Anything else is an error and the request
//! answers 503, so the provider retries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, BoxFuture};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, ProducerContext};
use wapipe_core::kafka::{record_headers, KafkaArgs, KafkaConfigError};
use wapipe_core::{Provider, Record, RECORD_OVERHEAD_BYTES};

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
    /// The record is larger than the producer or the topic accepts: retrying cannot help.
    #[error("a record is larger than Kafka accepts ({0})")]
    TooLarge(String),
}

/// Error codes that mean the record is too large for the producer, the broker or the topic.
fn too_large(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge
    )
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

/// The Kafka producer: one per process, long-lived. A record is queued no longer than the
/// request waits for it (`message.timeout.ms` = the produce timeout), so a request answered 503
/// leaves nothing behind to be delivered ahead of the provider's retry.
pub struct KafkaSink {
    producer: IngressProducer,
    topic: String,
    timeout: Duration,
    ready: Arc<AtomicBool>,
    fatal: Arc<AtomicBool>,
}

/// Producer settings beyond the connection.
pub struct ProducerSettings {
    pub topic: String,
    pub produce_timeout: Duration,
    pub linger: Duration,
    pub queue_messages: u32,
    pub queue_kbytes: u32,
    /// The largest body the ingress accepts: a record can be as large (an unparsed body is
    /// produced whole), so the producer's `message.max.bytes` is this plus the overhead.
    pub max_record_bytes: usize,
}

impl KafkaSink {
    pub fn new(kafka: &KafkaArgs, settings: ProducerSettings) -> Result<KafkaSink, Error> {
        let timeout_ms = settings.produce_timeout.as_millis().max(1);
        let user: ClientConfig = kafka.client_config().map_err(Error::KafkaConfig)?;
        for key in ["message.timeout.ms", "delivery.timeout.ms"] {
            if let Some(raw) = user.get(key) {
                if raw.parse::<u128>().map_or(true, |ms| ms > timeout_ms) {
                    return Err(Error::KafkaConfig(KafkaConfigError::Weakens {
                        key: key.to_string(),
                        value: raw.to_string(),
                        why: "a record must not stay queued after its request answered 503 \
                              (longer than --produce-timeout)",
                    }));
                }
            }
        }
        // Defaults that make 200 mean durable. Raw options from --kafka-option (checked not to
        // weaken a 200) win: only what is unset is filled.
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
            ("message.timeout.ms", timeout_ms.to_string()),
            (
                "message.max.bytes",
                (settings.max_record_bytes + RECORD_OVERHEAD_BYTES).to_string(),
            ),
            ("compression.type", "lz4".to_string()),
        ];
        let config = kafka
            .client_config_with(&defaults)
            .map_err(Error::KafkaConfig)?;
        let fatal = Arc::new(AtomicBool::new(false));
        let producer = config
            .create_with_context(IngressContext {
                fatal: fatal.clone(),
            })
            .map_err(Error::CreateProducer)?;
        Ok(KafkaSink {
            producer,
            topic: settings.topic,
            timeout: settings.produce_timeout,
            ready: Arc::new(AtomicBool::new(false)),
            fatal,
        })
    }

    /// Asks the broker for our topic's metadata (never creating it: every client sets
    /// `allow.auto.create.topics=false`) and records whether it has partitions.
    pub fn check_readiness(&self, within: Duration) -> bool {
        let ok = match self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), within)
        {
            Ok(metadata) => metadata.topics().iter().any(|t| {
                t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty()
            }),
            Err(error) => {
                tracing::debug!(%error, "readiness: broker metadata unavailable");
                false
            }
        };
        self.ready.store(ok, Ordering::SeqCst);
        ok
    }
}

impl EventSink for KafkaSink {
    fn produce<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<(), ProduceError>> {
        Box::pin(async move {
            let producer = &self.producer;
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
                    Err((KafkaError::MessageProduction(code), _)) if too_large(code) => {
                        return Err(ProduceError::TooLarge(code.to_string()))
                    }
                    Err((error, _)) => return Err(ProduceError::Broker(error.to_string())),
                }
            }
            let Ok(outcomes) = tokio::time::timeout(self.timeout, join_all(deliveries)).await
            else {
                return Err(ProduceError::Timeout(self.timeout));
            };
            for outcome in outcomes {
                match outcome {
                    Ok(Ok(_)) => {}
                    Ok(Err((
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                        _,
                    ))) => {
                        return Err(ProduceError::Timeout(self.timeout));
                    }
                    Ok(Err((KafkaError::MessageProduction(code), _))) if too_large(code) => {
                        return Err(ProduceError::TooLarge(code.to_string()))
                    }
                    Ok(Err((error, _))) => return Err(ProduceError::Broker(error.to_string())),
                    Err(_canceled) => {
                        return Err(ProduceError::Broker("the producer was dropped".into()))
                    }
                }
            }
            // The broker just took records for our topic: ready, without waiting for the next
            // metadata check. After a broker restart the check may lag by up to an interval,
            // and the kubelet would take a pod out of its Service while it acknowledges.
            self.ready.store(true, Ordering::SeqCst);
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
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "records were still queued when shutdown gave up");
        }
    }
}
