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

/// The Kafka producer: one per process, long-lived.
pub struct KafkaSink {
    producer: FutureProducer<IngressContext>,
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
    pub message_timeout: Duration,
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
        let context = IngressContext::default();
        let fatal = context.fatal.clone();
        let producer: FutureProducer<IngressContext> = config
            .create_with_context(context)
            .map_err(Error::CreateProducer)?;
        Ok(KafkaSink {
            producer,
            topic: settings.topic,
            timeout: settings.produce_timeout,
            ready: Arc::new(AtomicBool::new(false)),
            fatal,
        })
    }

    /// Asks the broker for the topic's metadata and records whether it answered.
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
                match self.producer.send_result(future_record) {
                    Ok(delivery) => deliveries.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        return Err(ProduceError::QueueFull)
                    }
                    Err((error, _)) => return Err(ProduceError::Broker(error.to_string())),
                }
            }
            let outcomes = tokio::time::timeout(self.timeout, join_all(deliveries))
                .await
                .map_err(|_| ProduceError::Timeout(self.timeout))?;
            for outcome in outcomes {
                match outcome {
                    Ok(Ok(_)) => {}
                    Ok(Err((
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                        _,
                    ))) => return Err(ProduceError::Timeout(self.timeout)),
                    Ok(Err((error, _))) => return Err(ProduceError::Broker(error.to_string())),
                    Err(_canceled) => {
                        return Err(ProduceError::Broker("the producer was dropped".into()))
                    }
                }
            }
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
