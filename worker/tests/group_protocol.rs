//! `--group-protocol consumer` (KIP-848) on a broker that offers it, and on one that does not:
//! there the worker falls back to the classic protocol by itself and consumes all the same.
//! Each case runs a private broker, so the broker's protocols are the test's to choose.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;
use wapipe_worker::config::GroupProtocol;
use wapipe_worker::{Worker, WorkerSettings};

/// Starts a private broker with `overrides`, produces 30 events and runs a worker asking for
/// the consumer protocol until all are written.
async fn consume_with_the_consumer_protocol(overrides: &[(&str, &str)]) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "wapipe_worker=info".into()))
        .try_init();
    let kafka = wapipe_testkit::Kafka::start_with(overrides).expect("a private Kafka broker");
    let brokers = kafka.bootstrap();
    let topic = wapipe_testkit::unique_name("kip848-raw");
    let dead_letters = wapipe_testkit::unique_name("kip848-dlq");
    wapipe_testkit::create_topic(&brokers, &topic, 2)
        .await
        .unwrap();
    wapipe_testkit::create_topic(&brokers, &dead_letters, 1)
        .await
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for n in 0..30 {
        produce_message(
            &producer,
            &topic,
            &format!("1555000{}", n % 4),
            &format!("wamid.k{n}"),
        )
        .await;
    }

    let sink = Arc::new(RecordingSink::default());
    let settings = WorkerSettings {
        group_protocol: GroupProtocol::Consumer,
        ..WorkerSettings::new(
            wapipe_core::kafka::KafkaArgs::plaintext(brokers.clone()),
            &topic,
            &dead_letters,
            &wapipe_testkit::unique_name("kip848-group"),
        )
    };
    let worker = Arc::new(Worker::new());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (worker, stop, sink) = (worker.clone(), stop.clone(), sink.clone());
        async move { worker.run(settings, sink, stop).await }
    });
    sink.wait_writes("the 30 events written", 30).await;
    stop.cancel();
    task.await
        .expect("the worker task")
        .expect("the worker stops cleanly");
    assert_eq!(sink.writes.load(Ordering::SeqCst), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_protocol_consumes_where_the_broker_offers_it() {
    consume_with_the_consumer_protocol(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_only_the_classic_protocol_gets_a_worker_that_falls_back_to_it() {
    // Kafka 4's switch for the KIP-848 coordinator: classic alone refuses the new protocol at
    // the first heartbeat.
    consume_with_the_consumer_protocol(&[("group.coordinator.rebalance.protocols", "classic")])
        .await;
}
