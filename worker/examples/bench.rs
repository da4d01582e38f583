//! Throughput of one worker: events/s with the log sink and with the postgres sink, beside the
//! raw rdkafka consumer rate from the same broker. Prints figures; asserts nothing.
//!
//! `cargo run --release -p wapipe-worker --example bench -- [events] [partitions]`
//! Uses `WAPIPE_TEST_BROKERS` if set, else starts a private Apache Kafka; PostgreSQL on 127.0.0.1:5432
//! (`WAPIPE_BENCH_DATABASE_URL` to override). `WAPIPE_BENCH_STAGES` (comma-separated, default
//! `raw,log,postgres,sqlite`) picks the stages after producing, e.g. `log` alone under a profiler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;
use wapipe_core::kafka::KafkaArgs;
use wapipe_core::record::{HEADER_KIND, HEADER_MESSAGE_ID, HEADER_PROVIDER, HEADER_RECEIVED_AT};
use wapipe_core::time::now_ms;
use wapipe_worker::sink::{LogSink, PostgresSink, SharedSink, SqliteSink};
use wapipe_worker::{Worker, WorkerSettings};

/// Guard against a stalled broker: a stage taking longer than this fails the bench.
const STAGE_LIMIT: Duration = Duration::from_secs(300);

async fn produce_all(brokers: &str, topic: &str, events: usize) -> anyhow::Result<f64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "10")
        .create()?;
    let started = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(1000) {
        let sends = chunk.iter().map(|n| {
            let user = format!("1555{:06}", n % 1000);
            let wamid = format!("wamid.bench.{n:08}");
            let value = serde_json::json!({
                "object": "whatsapp_business_account",
                "entry": [{"id": "waba", "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "1555", "phone_number_id": "pn"},
                    "contacts": [{"wa_id": user, "profile": {"name": "Bench"}}],
                    "messages": [{"from": user, "id": wamid, "timestamp": "1700000000",
                        "type": "text", "text": {"body": "hello from the benchmark"}}]}}]}]
            })
            .to_string();
            let producer = producer.clone();
            async move {
                let received_at = now_ms().to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: HEADER_PROVIDER,
                        value: Some("meta"),
                    })
                    .insert(Header {
                        key: HEADER_KIND,
                        value: Some("message"),
                    })
                    .insert(Header {
                        key: HEADER_MESSAGE_ID,
                        value: Some(&wamid),
                    })
                    .insert(Header {
                        key: HEADER_RECEIVED_AT,
                        value: Some(&received_at),
                    });
                producer
                    .send(
                        FutureRecord::to(topic)
                            .key(&user)
                            .payload(&value)
                            .headers(headers),
                        Duration::from_secs(60),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        });
        for result in join_all(sends).await {
            result?;
        }
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn raw_consumer_rate(brokers: &str, topic: &str, events: usize) -> anyhow::Result<f64> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", wapipe_testkit::unique_name("bench-raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let first = tokio::time::timeout(STAGE_LIMIT, consumer.recv()).await??;
    drop(first);
    let started = Instant::now();
    for _ in 1..events {
        tokio::time::timeout(STAGE_LIMIT, consumer.recv()).await??;
    }
    Ok((events - 1) as f64 / started.elapsed().as_secs_f64())
}

async fn worker_rate(
    brokers: &str,
    topic: &str,
    events: usize,
    sink: SharedSink,
) -> anyhow::Result<f64> {
    let settings = WorkerSettings {
        concurrency: 32,
        max_buffered: 5000,
        ..WorkerSettings::new(
            KafkaArgs::plaintext(brokers),
            topic,
            &wapipe_testkit::unique_name("bench-dlq"),
            &wapipe_testkit::unique_name("bench-group"),
        )
    };
    let worker = Arc::new(Worker::new());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (worker, stop) = (worker.clone(), stop.clone());
        async move { worker.run(settings, sink, stop).await }
    });
    // Timed from the first finished event, so group join and assignment are not counted.
    while worker.metrics.finished_events() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let start_count = worker.metrics.finished_events();
    let deadline = Instant::now() + STAGE_LIMIT;
    while worker.metrics.finished_events() < events as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker did not finish within {STAGE_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = (events as u64 - start_count) as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    task.await??;
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let partitions: i32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(4);
    // The log sink formats each line as in production, but the bench discards them.
    tracing_subscriber::fmt()
        .with_env_filter("wapipe=info,wapipe_worker=warn")
        .with_writer(std::io::sink)
        .init();
    let (brokers, _kafka) = wapipe_testkit::broker()?;
    let topic = wapipe_testkit::unique_name("bench-raw");
    wapipe_testkit::create_topic(&brokers, &topic, partitions).await?;
    println!("{events} events, {partitions} partitions, 1000 users, broker {brokers}");
    let produce = produce_all(&brokers, &topic, events).await?;
    println!("produce (acks=all, idempotent):      {produce:>10.0} events/s");
    let stages =
        std::env::var("WAPIPE_BENCH_STAGES").unwrap_or_else(|_| "raw,log,postgres,sqlite".into());
    let stage = |name: &str| stages.split(',').any(|s| s.trim() == name);
    if stage("raw") {
        let raw = raw_consumer_rate(&brokers, &topic, events).await?;
        println!("raw rdkafka consumer:                {raw:>10.0} events/s");
    }
    if stage("log") {
        let log = worker_rate(
            &brokers,
            &topic,
            events,
            Arc::new(LogSink::to_writer(Box::new(std::io::sink()))),
        )
        .await?;
        println!("worker, log sink (concurrency 32):   {log:>10.0} events/s");
    }
    if stage("postgres") {
        postgres_stage(&brokers, &topic, events).await?;
    }
    if stage("sqlite") {
        let dir = tempfile::tempdir()?;
        let sqlite = SqliteSink::open(&dir.path().join("bench.db"))?;
        let lite = worker_rate(&brokers, &topic, events, Arc::new(sqlite)).await?;
        println!("worker, sqlite sink (concurrency 32):   {lite:>7.0} events/s");
    }
    Ok(())
}

async fn postgres_stage(brokers: &str, topic: &str, events: usize) -> anyhow::Result<()> {
    let url = std::env::var("WAPIPE_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = wapipe_testkit::unique_name("bench").replace('-', "_");
    let postgres = PostgresSink::connect(&url, Some(schema.clone())).await?;
    let pg = worker_rate(brokers, topic, events, Arc::new(postgres)).await?;
    println!("worker, postgres sink (concurrency 32): {pg:>7.0} events/s  (schema {schema})");
    Ok(())
}
