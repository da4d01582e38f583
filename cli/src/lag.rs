//! `wapipe lag`: per-partition lag of a consumer group with a status in Burrow's spirit (ok,
//! lagging, stalled), judged over a few polls, and the decision the operator's scaler would make.
//! It reads committed offsets and watermarks only: it never joins the group.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use wapipe_core::kafka::KafkaArgs;
use wapipe_operator::kafka::{read_ages, KafkaConnection, RdKafkaAdmin, TopicAdmin};
use wapipe_operator::scaler::policy::{
    decide_timed, Decision, PartitionStatus, PolicyConfig, PolicyState,
};
use wapipe_operator::scaler::rate::RecordTimes;

use crate::local::pipeline;
use crate::output::{self, OutputArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct LagArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group of the workers.
    #[arg(long, env = wapipe_core::env::GROUP)]
    pub group: String,
    /// Topic the group consumes.
    #[arg(long, env = wapipe_core::env::TOPIC, default_value = wapipe_core::DEFAULT_RAW_TOPIC)]
    pub topic: String,
    /// Take the scaling settings from this WhatsAppWebhookPipeline YAML; flags below win.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Lag one worker is expected to carry (default 1000, as in the CRD).
    #[arg(long)]
    pub lag_per_replica: Option<u64>,
    /// Fewest workers (default 1).
    #[arg(long)]
    pub min_replicas: Option<u32>,
    /// Most workers (default 12); the partition count caps it further.
    #[arg(long)]
    pub max_replicas: Option<u32>,
    /// Delay target in seconds (the CRD's maxDelaySeconds).
    #[arg(long)]
    pub max_delay_seconds: Option<u64>,
    /// Workers running now; default: the members of the group as the broker reports them.
    #[arg(long)]
    pub workers: Option<u32>,
    /// Polls to sample: a partition is stalled when its committed offset did not move over all
    /// of them while it had lag.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub samples: u32,
    /// Time between polls.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The policy from the file (if any), then the flags.
pub fn policy_config(args: &LagArgs) -> anyhow::Result<PolicyConfig> {
    let mut config = match &args.file {
        Some(file) => pipeline::load(Some(file))?.policy,
        None => PolicyConfig::default(),
    };
    if let Some(lag) = args.lag_per_replica {
        config.lag_per_replica = lag.max(1);
    }
    if let Some(min) = args.min_replicas {
        config.min_replicas = min;
        config.scale_to_zero = min == 0;
    }
    if let Some(max) = args.max_replicas {
        config.max_replicas = max.max(1);
    }
    if let Some(seconds) = args.max_delay_seconds {
        config.max_delay = Some(Duration::from_secs(seconds.max(1)));
    }
    // Over `samples` polls a partition can stay put `samples - 1` times.
    config.stall_polls = args.samples.saturating_sub(1).max(1);
    Ok(config)
}

/// Members of `group`, if the broker lists them.
fn group_members(kafka: &KafkaConnection, group: &str) -> Option<u32> {
    let consumer: BaseConsumer = kafka.client_config().ok()?.create().ok()?;
    let list = consumer
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .ok()?;
    let group = list.groups().iter().find(|g| g.name() == group)?;
    u32::try_from(group.members().len()).ok()
}

/// The table `wapipe lag` prints.
pub fn render(decision: &Decision, workers: u32, workers_known: bool) -> String {
    let mut out = format!(
        "{:>9}  {:>10}  {:>8}  {:>9}  status\n",
        "partition", "lag", "delay", "drain/s"
    );
    for p in &decision.partitions {
        out.push_str(&format!(
            "{:>9}  {:>10}  {:>8}  {:>9}  {}\n",
            p.partition,
            p.lag,
            delay(p.time_lag),
            rate(p.drain_rate),
            p.status.as_str().to_ascii_lowercase()
        ));
    }
    out.push_str(&format!(
        "{:>9}  {:>10}  {:>8}  {:>9}\n",
        "total",
        decision.total_lag,
        delay(decision.worst.map(|(_, age)| age).or(Some(Duration::ZERO))),
        rate(decision.drain_rate)
    ));
    if let Some((partition, age)) = decision.worst {
        out.push_str(&format!(
            "oldest unconsumed record: {} old, partition {partition}\n",
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        ));
    }
    out.push_str(&format!(
        "rates: draining {}/s, arriving {}/s, {}/s per worker (measured while backlogged)\n",
        rate(decision.drain_rate),
        rate(decision.arrival_rate),
        rate(decision.per_replica_rate)
    ));
    out.push_str(&format!(
        "workers: {workers}{} -> desired {} ({})\n{}\n",
        if workers_known { "" } else { " (assumed)" },
        decision.desired,
        decision.reason.as_str(),
        decision.message
    ));
    out
}

/// What `wapipe lag -o json` prints: the table's figures, with delays in seconds and `null`
/// where the table shows `-`.
pub fn render_json(
    args: &LagArgs,
    decision: &Decision,
    workers: u32,
    workers_known: bool,
) -> serde_json::Value {
    let partitions: Vec<serde_json::Value> = decision
        .partitions
        .iter()
        .map(|p| {
            serde_json::json!({
                "partition": p.partition,
                "lag": p.lag,
                "delaySeconds": output::seconds(p.time_lag),
                "drainRate": output::rate(p.drain_rate),
                "status": p.status.as_str().to_ascii_lowercase(),
            })
        })
        .collect();
    serde_json::json!({
        "group": args.group,
        "topic": args.topic,
        "samples": args.samples,
        "intervalSeconds": args.interval.as_secs_f64(),
        "partitions": partitions,
        "totalLag": decision.total_lag,
        "worstPartition": decision.worst.map(|(partition, _)| partition),
        "worstDelaySeconds": output::seconds(decision.worst.map(|(_, age)| age)),
        "drainRate": output::rate(decision.drain_rate),
        "arrivalRate": output::rate(decision.arrival_rate),
        "perWorkerRate": output::rate(decision.per_replica_rate),
        "stalledPartitions": stalled(decision),
        "workers": workers,
        "workersKnown": workers_known,
        "desiredWorkers": decision.desired,
        "reason": decision.reason.as_str(),
        "message": decision.message,
    })
}

/// The partitions the decision judged stalled: `wapipe lag` exits 3 when there is one.
pub fn stalled(decision: &Decision) -> Vec<i32> {
    decision
        .partitions
        .iter()
        .filter(|p| p.status == PartitionStatus::Stalled)
        .map(|p| p.partition)
        .collect()
}

/// A delay in whole seconds, `-` when not read.
fn delay(age: Option<Duration>) -> String {
    age.map_or_else(|| "-".into(), |age| format!("{}s", age.as_secs()))
}

/// A rate in whole records per second, `-` when not measured yet.
fn rate(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |rate| format!("{rate:.0}"))
}

/// Samples the group, prints the table (or JSON) and returns the last decision.
pub async fn lag(args: &LagArgs) -> anyhow::Result<Decision> {
    let kafka = args.kafka.connection()?;
    let config = policy_config(args)?;
    let admin = RdKafkaAdmin;
    let members = match args.workers {
        Some(workers) => Some(workers),
        None => {
            let (kafka, group) = (kafka.clone(), args.group.clone());
            tokio::task::spawn_blocking(move || group_members(&kafka, &group))
                .await
                .ok()
                .flatten()
        }
    };
    let workers = members.unwrap_or(config.min_replicas.max(1));
    let mut state = PolicyState::default();
    let mut times = RecordTimes::default();
    let mut decision = None;
    for sample in 0..args.samples {
        if sample > 0 {
            tokio::time::sleep(args.interval).await;
        }
        let offsets = admin
            .read_offsets(&kafka, &args.topic, &args.group)
            .await
            .with_context(|| {
                format!("reading offsets of group {} on {}", args.group, args.topic)
            })?;
        let ages = read_ages(&admin, &kafka, &args.topic, &offsets, &mut times).await;
        decision = Some(decide_timed(
            &config,
            &mut state,
            &offsets,
            &ages,
            workers,
            Instant::now(),
        ));
    }
    let decision = decision.context("no sample taken")?;
    if args.output.json() {
        output::print_json(&render_json(args, &decision, workers, members.is_some()))?;
    } else {
        println!(
            "group {} on {} ({} samples, {} apart)",
            args.group,
            args.topic,
            args.samples,
            humantime::format_duration(args.interval)
        );
        print!("{}", render(&decision, workers, members.is_some()));
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use wapipe_operator::scaler::policy::{decide, PartitionOffsets};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        lag: LagArgs,
    }

    #[test]
    fn a_partition_whose_commit_never_moves_over_the_samples_is_stalled() {
        let cli = Cli::parse_from(["lag", "--group", "g", "--lag-per-replica", "10"]);
        let config = policy_config(&cli.lag).unwrap();
        assert_eq!(config.stall_polls, 2);
        let mut state = PolicyState::default();
        let start = Instant::now();
        let mut decision = None;
        for (poll, moving) in [(0u64, 0i64), (1, 5), (2, 10)] {
            let offsets = [
                PartitionOffsets {
                    partition: 0,
                    committed: Some(100),
                    log_start: 0,
                    log_end: 150,
                },
                PartitionOffsets {
                    partition: 1,
                    committed: Some(moving),
                    log_start: 0,
                    log_end: 20,
                },
            ];
            decision = Some(decide(
                &config,
                &mut state,
                &offsets,
                1,
                start + Duration::from_secs(poll),
            ));
        }
        let decision = decision.unwrap();
        let table = render(&decision, 1, true);
        // No record ages were read: the delay column says so; partition 1 drained 5/s.
        assert!(
            table.contains("        0          50         -          0  stalled"),
            "{table}"
        );
        assert!(
            table.contains("        1          10         -          5  ok"),
            "{table}"
        );
        // The stalled partition's lag is not scaled for: 10 lag at 10 per worker is one worker.
        assert_eq!(decision.desired, 1);
        // Scripts read the same figures, and the exit code names the stalled partition.
        assert_eq!(stalled(&decision), vec![0]);
        let json = render_json(&cli.lag, &decision, 1, true);
        assert_eq!(json["stalledPartitions"], serde_json::json!([0]));
        assert_eq!(json["partitions"][0]["status"], "stalled");
        assert_eq!(json["partitions"][0]["lag"], 50);
        assert_eq!(
            json["partitions"][0]["delaySeconds"],
            serde_json::Value::Null
        );
        assert_eq!(json["partitions"][1]["drainRate"], 5.0);
        assert_eq!(json["totalLag"], 60);
        assert_eq!(json["desiredWorkers"], 1);
        assert_eq!(json["group"], "g");
    }
}
