//! `wapipe bench ingress`: loads a real ingress process with signed, varied payloads and prints
//! requests/s, events/s, p50/p99 and peak RSS, beside the ceiling: the raw rdkafka producer
//! rate (idempotent, acks=all) to the same broker.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::join_all;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use wapipe_core::env as wenv;
use wapipe_core::kafka::record_headers;
use wapipe_core::split::split;
use wapipe_core::Provider;
use wapipe_kafka_local::free_port;
use wapipe_operator::kafka::{KafkaConnection, RdKafkaAdmin, TopicRequest};

use crate::payloads::Generator;
use crate::send::{random_run_id, send, SendArgs};
use crate::topics::ensure_topic;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchIngressArgs {
    /// Broker to use; a private Apache Kafka broker is started when absent.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Requests to send through the ingress.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Events per POST.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Records for the raw producer ceiling.
    #[arg(long, default_value_t = 50_000)]
    pub raw_records: usize,
    /// Provider whose payloads to send.
    #[arg(long, default_value = "meta")]
    pub provider: Provider,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Peak resident set size of a process, from /proc (Linux).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user + system) a process has used, from /proc (Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A binary built beside this one (`target/<profile>/NAME`).
pub fn sibling_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p {name}`",
            path.display()
        );
    }
    Ok(path)
}

/// The headers the ingress puts on a record, so the ceiling carries the same bytes per record.
fn ingress_headers(record: &wapipe_core::Record, provider: Provider) -> OwnedHeaders {
    record_headers(record, provider, "1767000000000", &"0".repeat(64), "0")
}

/// The producer of the ceilings: configured as the ingress's.
fn ceiling_producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The ingress's default linger, so the same-concurrency ceiling is like for like.
        .set("linger.ms", "1")
        .set("compression.type", "lz4")
        .create()?)
}

/// Produces `count` records shaped like the ingress's (same values, keys and headers) through one idempotent acks=all
/// producer and returns records/s.
async fn raw_producer_rate(
    brokers: &str,
    topic: &str,
    provider: Provider,
    count: usize,
) -> anyhow::Result<f64> {
    let producer = ceiling_producer(brokers)?;
    let generator = Generator::new(provider, random_run_id(), 1000, 100);
    let mut records = Vec::new();
    while records.len() < count {
        records.extend(split(provider, generator.next().body.as_bytes(), "f"));
    }
    records.truncate(count);
    let started = Instant::now();
    for chunk in records.chunks(10_000) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for r in chunk {
            let record = FutureRecord::to(topic)
                .key(r.key.as_bytes())
                .payload(&r.value)
                .headers(ingress_headers(r, provider));
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => bail!("enqueueing: {e}"),
            }
        }
        for delivery in join_all(deliveries).await {
            delivery?.map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
        }
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Produces `count` records with only `concurrency` in flight, each awaited before the next,
/// as the ingress does per request: the ceiling for the same concurrency.
async fn raw_producer_rate_at_concurrency(
    brokers: &str,
    topic: &str,
    provider: Provider,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let producer = ceiling_producer(brokers)?;
    let generator = Generator::new(provider, random_run_id(), 1000, 1);
    let records: Vec<_> = (0..count)
        .flat_map(|_| split(provider, generator.next().body.as_bytes(), "f"))
        .collect();
    let records = std::sync::Arc::new(records);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (producer, records, next, topic) = (
            producer.clone(),
            records.clone(),
            next.clone(),
            topic.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(r) = records.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let record = FutureRecord::to(&topic)
                    .key(r.key.as_bytes())
                    .payload(&r.value)
                    .headers(ingress_headers(r, provider));
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

pub async fn bench_ingress(args: &BenchIngressArgs) -> anyhow::Result<()> {
    let broker_dir = tempfile::Builder::new()
        .prefix("wapipe-bench-kafka-")
        .tempdir()?;
    let (_broker, brokers) = match &args.brokers {
        Some(b) => (None, b.clone()),
        None => {
            let (process, bootstrap) = crate::local::broker::start(
                free_port(),
                broker_dir.path(),
                &broker_dir.path().join("kafka.log"),
            )
            .await
            .context("starting a private Kafka broker")?;
            (Some(process), bootstrap)
        }
    };
    let run = random_run_id();
    let ceiling_topic = format!("bench-raw-{run}");
    let topic = format!("bench-ingress-{run}");
    let kafka = KafkaConnection::plaintext(brokers.clone());
    for name in [&ceiling_topic, &topic] {
        let request =
            TopicRequest::for_pipeline(name, args.partitions, Some(1), &BTreeMap::new(), None);
        ensure_topic(&RdKafkaAdmin, &kafka, request).await?;
    }

    println!(
        "broker {brokers}, {} partitions, provider {}",
        args.partitions, args.provider
    );
    let raw_rate =
        raw_producer_rate(&brokers, &ceiling_topic, args.provider, args.raw_records).await?;
    let raw_rate_same_concurrency = raw_producer_rate_at_concurrency(
        &brokers,
        &ceiling_topic,
        args.provider,
        (args.requests as usize * args.batch / 2).max(1000),
        args.concurrency * args.batch,
    )
    .await?;

    let port = free_port();
    let admin_port = free_port();
    let secret = "bench-secret";
    let ingress = Command::new(sibling_binary("wapipe-ingress")?)
        .env(wenv::LISTEN, format!("127.0.0.1:{port}"))
        .env(wenv::ADMIN_LISTEN, format!("127.0.0.1:{admin_port}"))
        .env(wenv::PROVIDER, args.provider.as_str())
        .env(wenv::APP_SECRET, secret)
        .env(wenv::TOPIC, &topic)
        .env(wenv::KAFKA_BROKERS, &brokers)
        .env(wenv::READINESS_INTERVAL, "200ms")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .context("starting wapipe-ingress")?;
    let ingress = KillOnDrop(ingress);
    let pid = ingress.0.id();
    let client = reqwest::Client::new();
    let ready_url = format!("http://127.0.0.1:{admin_port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(&ready_url).send().await {
            if r.status() == 200 {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("the ingress did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let send_args = SendArgs {
        url: format!("http://127.0.0.1:{port}/webhook"),
        provider: args.provider,
        secret: secret.to_string(),
        concurrency: args.concurrency,
        rate: None,
        requests: args.requests,
        batch: args.batch,
        users: 1000,
        run_id: None,
        output: Default::default(),
    };
    // Warm up connections and the producer before measuring.
    send(&SendArgs {
        requests: 200,
        ..send_args.clone()
    })
    .await?;
    let cpu_before = cpu_seconds(pid);
    let report = send(&send_args).await?;
    let rss = peak_rss_kib(pid);
    let cpu_used = cpu_seconds(pid)
        .zip(cpu_before)
        .map(|(after, before)| after - before);

    let secs = report.elapsed.as_secs_f64();
    println!();
    println!(
        "ingress: {} requests x {} event(s), concurrency {}",
        args.requests, args.batch, args.concurrency
    );
    report.print();
    match rss {
        Some(kib) => println!("peak RSS       {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS       unavailable (no /proc)"),
    }
    if let Some(cpu) = cpu_used {
        println!(
            "ingress CPU    {cpu:.1} s ({:.0}% of one core)",
            100.0 * cpu / report.elapsed.as_secs_f64()
        );
    }
    println!("ceiling: raw rdkafka producer (idempotent, acks=all), same broker:");
    println!("  pipelined, 10000 in flight      {raw_rate:.0} records/s");
    println!(
        "  {} in flight, each awaited       {raw_rate_same_concurrency:.0} records/s",
        args.concurrency * args.batch
    );
    let events_per_sec = report.events_acknowledged as f64 / secs;
    println!(
        "ingress events/s: {:.0}% of the pipelined ceiling, {:.0}% of the same-concurrency one",
        100.0 * events_per_sec / raw_rate,
        100.0 * events_per_sec / raw_rate_same_concurrency
    );
    if report.ok() != report.requests() {
        bail!(
            "{} of {} requests were not answered 200",
            report.requests() - report.ok(),
            report.requests()
        );
    }
    Ok(())
}
