//! Throughput of one worker with its default settings: events/s with the log, postgres and
//! sqlite sinks, beside the raw rdkafka consumer rate from the same topic and the database's own
//! ceiling for the same rows (`COPY` from one client, one transaction). Prints figures; asserts
//! nothing.
//!
//! `cargo run --release -p wapipe-worker --example bench -- [events] [partitions]`
//! Uses `WAPIPE_TEST_BROKERS` if set, else starts a private Apache Kafka; PostgreSQL on 127.0.0.1:5432
//! (`WAPIPE_BENCH_DATABASE_URL` to override). `WAPIPE_BENCH_STAGES` (comma-separated, default
//! `produce,raw,log,postgres,sqlite`) picks the stages, e.g. `log` alone under a profiler.
//! `WAPIPE_BENCH_TOPIC` names an existing topic (e.g. filled through the ingress by `wapipe
//! send`) holding `events` records, to read instead of a new one; `produce` then adds to it.
//! `WAPIPE_BENCH_MAX_BUFFERED` overrides the worker's buffer (by default derived from the sink,
//! `WriteWindow::default_max_buffered`) and `WAPIPE_BENCH_KAFKA_OPTIONS` adds raw librdkafka options
//! (`key=value,...`, as `WAPIPE_KAFKA_OPTIONS`), e.g. librdkafka's own prefetch defaults for a
//! before/after.
//! The `e2e` stage runs the postgres sink on the topic until `events` events are written, and
//! prints the p50/p99 from the ingress receiving each event to its row being committed, beside
//! the same from the ingress to a plain consumer having the record (the part before the
//! worker), and both for the first and the last fifth of the events (a pipeline that falls
//! behind shows a growing figure); it prints `e2e: ready` once the worker holds its
//! partitions, for the load to start.
//! The peak RSS of the process is printed last.

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
use wapipe_worker::error::Result as SinkResult;
use wapipe_worker::route::Event;
use wapipe_worker::sink::{LogSink, PostgresOptions, PostgresSink, SharedSink, Sink, SqliteSink};
use wapipe_worker::{Spawned, Worker, WorkerSettings};

/// The worker binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let max_buffered = match std::env::var("WAPIPE_BENCH_MAX_BUFFERED") {
        Ok(value) => Some(value.parse()?),
        Err(_) => None,
    };
    let settings = WorkerSettings {
        max_buffered,
        ..bench_settings(brokers, topic)?
    };
    let running = Running::start(settings, sink);
    // Timed from the first finished event, so group join and assignment are not counted.
    while running.worker().metrics.finished_events() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let start_count = running.worker().metrics.finished_events();
    let finished = running.finish(events, Duration::from_millis(1)).await?;
    Ok((events as u64 - start_count) as f64 / finished.duration_since(started).as_secs_f64())
}

/// A worker with a group and dead-letter topic of its own, reading `topic`.
fn bench_settings(brokers: &str, topic: &str) -> anyhow::Result<WorkerSettings> {
    Ok(WorkerSettings::new(
        kafka_args(brokers)?,
        topic,
        &wapipe_testkit::unique_name("bench-dlq"),
        &wapipe_testkit::unique_name("bench-group"),
    ))
}

/// A worker running in this process until it has finished a number of events.
struct Running {
    spawned: Spawned,
    /// Fired when the worker is told to stop.
    stopping: CancellationToken,
}

impl Running {
    fn start(settings: WorkerSettings, sink: SharedSink) -> Running {
        Running {
            spawned: Worker::spawn(settings, sink),
            stopping: CancellationToken::new(),
        }
    }

    fn worker(&self) -> &Worker {
        &self.spawned.worker
    }

    /// Waits, polling every `poll`, until `events` are finished (at most [`STAGE_LIMIT`]),
    /// then stops the worker. Returns when the last was seen finished: a rate ends there, not
    /// after the worker's shutdown (its drain, last commit and leaving the group), as the
    /// Python worker's own figure ends before its close.
    async fn finish(self, events: usize, poll: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + STAGE_LIMIT;
        while self.worker().metrics.finished_events() < events as u64 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the worker did not finish within {STAGE_LIMIT:?}"
            );
            tokio::time::sleep(poll).await;
        }
        let finished = Instant::now();
        self.stopping.cancel();
        self.spawned.stop().await?;
        Ok(finished)
    }
}

/// The worker's Kafka settings: the broker, and `WAPIPE_BENCH_KAFKA_OPTIONS` (raw librdkafka
/// `key=value` pairs, comma-separated) applied last, as `WAPIPE_KAFKA_OPTIONS` would be.
fn kafka_args(brokers: &str) -> anyhow::Result<KafkaArgs> {
    let mut kafka = KafkaArgs::plaintext(brokers);
    if let Ok(options) = std::env::var("WAPIPE_BENCH_KAFKA_OPTIONS") {
        for pair in options.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("not key=value: {pair}"))?;
            kafka
                .options
                .push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(kafka)
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
    let stages = std::env::var("WAPIPE_BENCH_STAGES")
        .unwrap_or_else(|_| "produce,raw,log,postgres,sqlite".into());
    let stage = |name: &str| stages.split(',').any(|s| s.trim() == name);
    let topic = match std::env::var("WAPIPE_BENCH_TOPIC") {
        Ok(topic) => topic,
        Err(_) => {
            let topic = wapipe_testkit::unique_name("bench-raw");
            wapipe_testkit::create_topic(&brokers, &topic, partitions).await?;
            topic
        }
    };
    println!("{events} events, topic {topic}, broker {brokers}; the worker's default settings");
    if stage("produce") {
        let produce = produce_all(&brokers, &topic, events).await?;
        println!("produce (acks=all, idempotent, 1000 users): {produce:>10.0} events/s");
    }
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
        println!("worker, log sink:                    {log:>10.0} events/s");
    }
    if stage("postgres") {
        postgres_stage(&brokers, &topic, events).await?;
    }
    if stage("sqlite") {
        let dir = tempfile::tempdir()?;
        let sqlite = SqliteSink::open(&dir.path().join("bench.db"))?;
        let lite = worker_rate(&brokers, &topic, events, Arc::new(sqlite)).await?;
        println!("worker, sqlite sink:                 {lite:>10.0} events/s");
    }
    if stage("e2e") {
        e2e_stage(&brokers, &topic, events).await?;
    }
    println!("peak RSS: {:.1} MiB", peak_rss_mib());
    Ok(())
}

fn database_url() -> String {
    std::env::var("WAPIPE_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn bench_schema() -> String {
    wapipe_testkit::unique_name("bench").replace('-', "_")
}

async fn postgres_stage(brokers: &str, topic: &str, events: usize) -> anyhow::Result<()> {
    let url = database_url();
    let schema = bench_schema();
    // WAPIPE_BENCH_PG_CONNECTIONS tries another number of connections than the default.
    let mut options = PostgresOptions {
        schema: Some(schema.clone()),
        ..PostgresOptions::default()
    };
    if let Ok(value) = std::env::var("WAPIPE_BENCH_PG_CONNECTIONS") {
        options.connections = value.parse()?;
    }
    let postgres = PostgresSink::connect_with(&url, options).await?;
    let pg = worker_rate(brokers, topic, events, Arc::new(postgres)).await?;
    println!("worker, postgres sink (synchronous commit): {pg:>7.0} events/s  (schema {schema})");
    let copy = copy_ceiling(&url, &schema, events).await?;
    println!("ceiling: the same rows by COPY, one client, one transaction: {copy:>7.0} events/s");
    Ok(())
}

/// The tables the postgres sink writes, in the order COPY loads them.
const TABLES: [&str; 4] = [
    "wapipe_messages",
    "wapipe_statuses",
    "wapipe_events",
    "wapipe_message_status",
];

/// Events/s of loading the rows the worker wrote into `schema` into fresh tables by COPY
/// (text format) from one client in one transaction, synchronous commit: the database's own
/// rate for the same rows, with nothing of Kafka or the worker.
async fn copy_ceiling(url: &str, schema: &str, events: usize) -> anyhow::Result<f64> {
    use futures::{SinkExt, TryStreamExt};
    let target = bench_schema();
    // Creates the fresh tables by the sink's own migrations.
    drop(PostgresSink::connect(url, Some(target.clone())).await?);
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut copied = Vec::new();
    for table in TABLES {
        // Every column but those the database fills itself (seq, written_at, updated_at).
        let columns: Vec<String> = client
            .query(
                "SELECT column_name FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = $2
                   AND column_name NOT IN ('seq', 'written_at', 'updated_at')
                 ORDER BY ordinal_position",
                &[&schema, &table],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let columns = columns.join(", ");
        let out = client
            .copy_out(&format!(
                "COPY (SELECT {columns} FROM {schema}.{table}) TO STDOUT"
            ))
            .await?;
        let chunks: Vec<bytes::Bytes> = out.try_collect().await?;
        copied.push((table, columns, chunks));
    }
    let started = Instant::now();
    let transaction = client.transaction().await?;
    for (table, columns, chunks) in copied {
        let sink = transaction
            .copy_in(&format!("COPY {target}.{table} ({columns}) FROM STDIN"))
            .await?;
        futures::pin_mut!(sink);
        for chunk in chunks {
            sink.feed(chunk).await?;
        }
        sink.finish().await?;
    }
    transaction.commit().await?;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// The postgres sink, noting for each event written when the ingress received it and how long
/// after that its row was committed.
struct LatencySink {
    inner: PostgresSink,
    latencies_ms: std::sync::Mutex<Vec<(i64, i64)>>,
}

#[async_trait::async_trait]
impl Sink for LatencySink {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    fn max_concurrent_batches(&self) -> usize {
        self.inner.max_concurrent_batches()
    }

    async fn write_batch(&self, events: &[Event]) -> SinkResult<()> {
        self.inner.write_batch(events).await?;
        let now = now_ms();
        let mut latencies = self.latencies_ms.lock().unwrap();
        latencies.extend(
            events
                .iter()
                .filter_map(|e| e.received_at_ms)
                .map(|received| (received, now - received)),
        );
        Ok(())
    }
}

/// For each record of `topic` (a group of its own, from the start), when the ingress received
/// it and how long after that a plain consumer had it: the part of the end-to-end time that is
/// the ingress's, the producer's and Kafka's, before the worker.
async fn readable_latencies(
    brokers: String,
    topic: String,
    stop: CancellationToken,
) -> anyhow::Result<Vec<(i64, i64)>> {
    use rdkafka::message::{Headers, Message};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", wapipe_testkit::unique_name("bench-e2e-raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let mut out = Vec::new();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(out),
            message = consumer.recv() => message?,
        };
        let now = now_ms();
        let received = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == HEADER_RECEIVED_AT)
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<i64>().ok())
        });
        if let Some(received) = received {
            out.push((received, now - received));
        }
    }
}

/// `p50 .. ms, p99 .. ms, max .. ms` of (received at, latency) pairs.
fn percentiles(pairs: &[(i64, i64)]) -> String {
    let mut latencies: Vec<i64> = pairs.iter().map(|&(_, ms)| ms).collect();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    format!(
        "p50 {} ms, p99 {} ms, max {} ms",
        at(0.5),
        at(0.99),
        latencies.last().copied().unwrap_or_default()
    )
}

/// The p50 of the first and of the last fifth of the events by receive time: a pipeline that
/// keeps up has the same at both ends, one that falls behind a growing one.
fn trend(pairs: &[(i64, i64)]) -> String {
    let mut by_time = pairs.to_vec();
    by_time.sort_unstable();
    let fifth = (by_time.len() / 5).max(1).min(by_time.len());
    format!(
        "first fifth {}; last fifth {}",
        percentiles(&by_time[..fifth]),
        percentiles(&by_time[by_time.len() - fifth..])
    )
}

async fn e2e_stage(brokers: &str, topic: &str, events: usize) -> anyhow::Result<()> {
    let schema = bench_schema();
    let sink = Arc::new(LatencySink {
        inner: PostgresSink::connect(&database_url(), Some(schema)).await?,
        latencies_ms: std::sync::Mutex::new(Vec::with_capacity(events)),
    });
    let running = Running::start(bench_settings(brokers, topic)?, sink.clone());
    let readable = tokio::spawn(readable_latencies(
        brokers.to_string(),
        topic.to_string(),
        running.stopping.clone(),
    ));
    while running.worker().metrics.assigned_partitions.get() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("e2e: ready");
    running.finish(events, Duration::from_millis(20)).await?;
    let readable = readable.await??;
    let committed = sink.latencies_ms.lock().unwrap().clone();
    anyhow::ensure!(!committed.is_empty(), "no event carried its receive time");
    println!(
        "e2e (ingress received -> row committed), {} events: {}",
        committed.len(),
        percentiles(&committed)
    );
    println!("e2e trend (row committed): {}", trend(&committed));
    if !readable.is_empty() {
        println!(
            "e2e stage (ingress received -> a plain consumer has it), {} events: {}",
            readable.len(),
            percentiles(&readable)
        );
        println!("e2e trend (consumer has it): {}", trend(&readable));
    }
    Ok(())
}

/// The process's peak resident set (VmHWM), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
