//! `wapipe bench rebalance`: how long consumption stalls while a worker group grows under load,
//! with the classic consumer group protocol and with KIP-848's (`group.protocol=consumer`).
//!
//! For each protocol: a fresh topic and group; a producer at a steady rate; one `wapipe-worker`
//! process until the group keeps up; then the rest started at once (as the operator's scaler
//! does in one step). The group's committed offsets are sampled every `--sample` from outside
//! the group (workers commit every 100 ms here), and the [`analyse`]d figures printed: the
//! longest time no partition moved, the longest any one partition did not move, the
//! partition-seconds spent stalled, the peak lag and how long until the lag was back to what it
//! was before the step. Figures, not assertions: the machine's load shows in them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use wapipe_operator::kafka::{KafkaConnection, RdKafkaAdmin, TopicAdmin};
use wapipe_operator::scaler::policy::PartitionOffsets;

use crate::local::process::{Managed, Spec};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchRebalanceArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = wapipe_core::env::KAFKA_BROKERS)]
    pub brokers: String,
    /// Group protocols to measure, in this order.
    #[arg(long, value_delimiter = ',', default_value = "classic,consumer")]
    pub protocols: Vec<String>,
    /// Runs per protocol (alternating protocols run by run).
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 16)]
    pub partitions: i32,
    /// Workers before the step.
    #[arg(long, default_value_t = 1)]
    pub from: u32,
    /// Workers after the step.
    #[arg(long, default_value_t = 8)]
    pub to: u32,
    /// Records/s produced throughout.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// How long the first workers consume before the step.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// How long after the step is watched.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Time between samples of the committed offsets.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub sample: Duration,
    /// The wapipe-worker binary; default: next to this one.
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// Where the workers' logs go (a temporary directory by default).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
}

/// One sample of the group's offsets, at `at` after the step (negative before it).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at: f64,
    /// Per partition: (committed, log end).
    pub offsets: Vec<(i64, i64)>,
}

/// What one run showed.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    /// Longest time after the step in which no partition's commit moved while there was lag.
    pub group_stop: f64,
    /// Longest time one partition's commit did not move while it had lag.
    pub partition_stop: f64,
    /// Sum over partitions of their stops longer than `noise`, seconds.
    pub partition_seconds: f64,
    pub peak_lag: i64,
    /// Seconds after the step until the lag was back under the pre-step baseline.
    pub recovered_after: Option<f64>,
    /// Records committed per second over the window after the step.
    pub drained_per_second: f64,
}

/// The figures of one run from its samples: stops are runs of samples in which a commit did not
/// move while there was lag, counted from the step on; runs shorter than `noise` (commits come
/// every 100 ms, processing takes its time) are not stalls.
pub fn analyse(samples: &[Sample], noise: f64) -> Stall {
    let before: Vec<&Sample> = samples.iter().filter(|s| s.at < 0.0).collect();
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= 0.0).collect();
    let lag = |s: &Sample| s.offsets.iter().map(|(c, e)| (e - c).max(0)).sum::<i64>();
    let baseline = before.iter().map(|s| lag(s)).max().unwrap_or(0);
    let partitions = after.first().map_or(0, |s| s.offsets.len());
    let mut partition_stop: f64 = 0.0;
    let mut partition_seconds = 0.0;
    for p in 0..partitions {
        let mut since: Option<f64> = None;
        for pair in after.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let moved = b.offsets[p].0 > a.offsets[p].0;
            let waiting = b.offsets[p].1 > b.offsets[p].0;
            if !moved && waiting {
                since.get_or_insert(a.at);
                continue;
            }
            if let Some(start) = since.take() {
                let stop = b.at - start;
                partition_stop = partition_stop.max(stop);
                if stop > noise {
                    partition_seconds += stop;
                }
            }
        }
        if let (Some(start), Some(last)) = (since, after.last()) {
            let stop = last.at - start;
            partition_stop = partition_stop.max(stop);
            if stop > noise {
                partition_seconds += stop;
            }
        }
    }
    let mut group_stop: f64 = 0.0;
    let mut since: Option<f64> = None;
    for pair in after.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let moved = b
            .offsets
            .iter()
            .zip(&a.offsets)
            .any(|(now, then)| now.0 > then.0);
        if !moved && lag(b) > 0 {
            since.get_or_insert(a.at);
        } else if let Some(start) = since.take() {
            group_stop = group_stop.max(b.at - start);
        }
    }
    if let (Some(start), Some(last)) = (since, after.last()) {
        group_stop = group_stop.max(last.at - start);
    }
    let peak_lag = after.iter().map(|s| lag(s)).max().unwrap_or(0);
    let peak_at = after
        .iter()
        .find(|s| lag(s) == peak_lag)
        .map_or(0.0, |s| s.at);
    let recovered_after = after
        .iter()
        .find(|s| s.at >= peak_at && lag(s) <= baseline)
        .map(|s| s.at);
    let committed = |s: &Sample| s.offsets.iter().map(|(c, _)| c).sum::<i64>();
    let drained_per_second = match (after.first(), after.last()) {
        (Some(first), Some(last)) if last.at > first.at => {
            (committed(last) - committed(first)) as f64 / (last.at - first.at)
        }
        _ => 0.0,
    };
    Stall {
        group_stop,
        partition_stop,
        partition_seconds,
        peak_lag,
        recovered_after,
        drained_per_second,
    }
}

/// Produces `rate` records/s to `topic` on a thread of its own until `stop`.
fn produce(
    brokers: &str,
    topic: &str,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()?;
    let topic = topic.to_string();
    Ok(std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
            while sent < due {
                let key = format!("user-{}", sent % 997);
                let payload = format!("{{\"n\":{sent}}}");
                let record = BaseRecord::to(&topic).key(&key).payload(&payload);
                if producer.send(record).is_err() {
                    // Queue full: let deliveries drain and try again.
                    producer.poll(Duration::from_millis(10));
                    break;
                }
                sent += 1;
            }
            producer.poll(Duration::from_millis(5));
        }
        let _ = producer.flush(Duration::from_secs(10));
    }))
}

async fn create_topics(brokers: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?
    {
        result.map_err(|(name, code)| anyhow::anyhow!("creating {name}: {code}"))?;
    }
    Ok(())
}

async fn delete_topics(brokers: &str, topics: &[&str]) {
    let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create();
    if let Ok(admin) = admin {
        let _ = admin.delete_topics(topics, &AdminOptions::new()).await;
    }
}

fn worker_spec(
    args: &BenchRebalanceArgs,
    program: &std::path::Path,
    log_dir: &std::path::Path,
    protocol: &str,
    topic: &str,
    group: &str,
    index: u32,
) -> Spec {
    let args = vec![
        "--kafka-brokers".to_string(),
        args.brokers.clone(),
        "--topic".into(),
        topic.into(),
        "--dead-letter-topic".into(),
        format!("{topic}.failed"),
        "--group".into(),
        group.into(),
        "--sink".into(),
        "log".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--group-protocol".into(),
        protocol.into(),
        "--kafka-option".into(),
        "auto.commit.interval.ms=100".into(),
    ];
    Spec {
        name: format!("worker-{index}"),
        program: program.to_path_buf(),
        args,
        // The log sink's lines are not what is measured: warnings only.
        env: BTreeMap::from([("RUST_LOG".to_string(), "warn".to_string())]),
        current_dir: None,
        log: log_dir.join(format!("{protocol}-{group}-worker-{index}.log")),
    }
}

async fn sample(
    admin: &RdKafkaAdmin,
    kafka: &KafkaConnection,
    topic: &str,
    group: &str,
    at: f64,
) -> Option<Sample> {
    let offsets: Vec<PartitionOffsets> = admin.read_offsets(kafka, topic, group).await.ok()?;
    Some(Sample {
        at,
        offsets: offsets
            .iter()
            .map(|p| (p.committed.unwrap_or(p.log_start), p.log_end))
            .collect(),
    })
}

/// One run of one protocol.
async fn run(
    args: &BenchRebalanceArgs,
    program: &std::path::Path,
    log_dir: &std::path::Path,
    protocol: &str,
) -> anyhow::Result<Stall> {
    let topic = fresh_name(&format!("wapipe-rebalance-{protocol}"));
    let group = format!("{topic}-group");
    let dead_letters = format!("{topic}.failed");
    create_topics(
        &args.brokers,
        &[(&topic, args.partitions), (&dead_letters, 1)],
    )
    .await?;
    let kafka = KafkaConnection::plaintext(args.brokers.clone());
    let admin = RdKafkaAdmin;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(&args.brokers, &topic, args.rate, stop.clone())?;
    let mut workers = Vec::new();
    for index in 0..args.from {
        workers.push(Managed::spawn(worker_spec(
            args, program, log_dir, protocol, &topic, &group, index,
        ))?);
    }
    let mut samples = Vec::new();
    let warm_start = Instant::now();
    while warm_start.elapsed() < args.warmup {
        tokio::time::sleep(args.sample).await;
        let at = -(args.warmup.as_secs_f64() - warm_start.elapsed().as_secs_f64());
        // Only the last third of the warm-up sets the baseline: the group is settled by then.
        if warm_start.elapsed() > args.warmup * 2 / 3 {
            if let Some(s) = sample(&admin, &kafka, &topic, &group, at).await {
                samples.push(s);
            }
        }
    }
    let step = Instant::now();
    for index in args.from..args.to {
        workers.push(Managed::spawn(worker_spec(
            args, program, log_dir, protocol, &topic, &group, index,
        ))?);
    }
    while step.elapsed() < args.window {
        let at = step.elapsed().as_secs_f64();
        if let Some(s) = sample(&admin, &kafka, &topic, &group, at).await {
            samples.push(s);
        }
        tokio::time::sleep(args.sample).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    for worker in workers {
        worker.stop(Duration::from_secs(20)).await;
    }
    delete_topics(&args.brokers, &[&topic, &dead_letters]).await;
    anyhow::ensure!(
        samples.iter().any(|s| s.at >= 0.0),
        "no sample of the group's offsets after the step"
    );
    Ok(analyse(&samples, 0.5))
}

/// A topic name no other run uses.
fn fresh_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

pub async fn bench_rebalance(args: &BenchRebalanceArgs) -> anyhow::Result<()> {
    let program = match &args.worker_bin {
        Some(path) => path.clone(),
        None => crate::bench::sibling_binary("wapipe-worker")?,
    };
    let temp;
    let log_dir = match &args.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    println!(
        "{} → {} workers, {} partitions, {} records/s, commits every 100 ms, sampled every {}; \
         stops shorter than 0.5 s are not counted in partition-seconds",
        args.from,
        args.to,
        args.partitions,
        args.rate,
        humantime::format_duration(args.sample)
    );
    println!("| protocol | run | longest stop of the whole group | longest stop of one partition | partition-seconds stalled | peak lag | back to the pre-step lag after | drained/s after the step |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for run_number in 1..=args.runs {
        for protocol in &args.protocols {
            let stall = run(args, &program, &log_dir, protocol)
                .await
                .with_context(|| format!("{protocol} run {run_number}"))?;
            println!(
                "| {protocol} | {run_number} | {:.1} s | {:.1} s | {:.1} | {} | {} | {:.0} |",
                stall.group_stop,
                stall.partition_stop,
                stall.partition_seconds,
                stall.peak_lag,
                stall.recovered_after.map_or_else(
                    || "not within the window".to_string(),
                    |s| format!("{s:.1} s")
                ),
                stall.drained_per_second
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, offsets: &[(i64, i64)]) -> Sample {
        Sample {
            at,
            offsets: offsets.to_vec(),
        }
    }

    #[test]
    fn a_group_that_stops_for_three_seconds_after_the_step_shows_a_three_second_stop() {
        let samples = vec![
            sample(-1.0, &[(10, 12), (10, 11)]),
            sample(0.0, &[(20, 22), (20, 21)]),
            sample(1.0, &[(20, 30), (20, 30)]),
            sample(2.0, &[(20, 40), (20, 40)]),
            sample(3.0, &[(45, 50), (42, 50)]),
            sample(4.0, &[(60, 60), (60, 60)]),
        ];
        let stall = analyse(&samples, 0.5);
        assert_eq!(stall.group_stop, 3.0, "{stall:?}");
        assert_eq!(stall.partition_stop, 3.0);
        assert_eq!(stall.partition_seconds, 6.0);
        assert_eq!(stall.peak_lag, 40);
        // Back at or under the pre-step peak of 3 behind at 4 s.
        assert_eq!(stall.recovered_after, Some(4.0));
    }

    #[test]
    fn one_partition_moving_is_no_group_stop_but_the_other_partitions_stop_counts() {
        let samples = vec![
            sample(0.0, &[(0, 5), (0, 5)]),
            sample(1.0, &[(5, 10), (0, 10)]),
            sample(2.0, &[(10, 15), (0, 15)]),
            sample(3.0, &[(15, 20), (20, 20)]),
        ];
        let stall = analyse(&samples, 0.5);
        assert_eq!(stall.group_stop, 0.0);
        assert_eq!(stall.partition_stop, 3.0);
        assert_eq!(stall.partition_seconds, 3.0);
        assert!(stall.recovered_after.is_none());
    }

    #[test]
    fn short_pauses_between_commits_are_not_counted_as_stalls() {
        let samples = vec![
            sample(0.0, &[(0, 5)]),
            sample(0.1, &[(0, 6)]),
            sample(0.2, &[(6, 7)]),
            sample(0.3, &[(7, 7)]),
        ];
        let stall = analyse(&samples, 0.5);
        assert_eq!(stall.partition_seconds, 0.0);
        assert!((stall.partition_stop - 0.2).abs() < 1e-9);
    }
}
