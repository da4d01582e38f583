//! The scaler of `wapipe up`: the group's offsets read every poll interval in a task of their
//! own (a slow broker must not freeze the view), and the operator's own policy
//! ([`wapipe_operator::scaler::policy::decide`]) deciding how many worker processes run.

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use wapipe_operator::kafka::{read_ages, KafkaConnection, RdKafkaAdmin, TopicAdmin};
use wapipe_operator::scaler::policy::{
    decide_timed, PartitionOffsets, PartitionStatus, PolicyConfig, PolicyState,
};
use wapipe_operator::scaler::rate::RecordTimes;

use super::process::WorkerPool;
use super::view::{PartitionRow, Snapshot};

/// How long one read of offsets may take before it counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One read of the group's offsets and of the dead-letter topic's high watermarks.
pub struct Reading {
    pub offsets: Result<Vec<PartitionOffsets>, String>,
    /// Ages of the partitions' oldest unconsumed records, where read.
    pub ages: BTreeMap<i32, Duration>,
    pub dead_letters: Option<i64>,
    pub at: Instant,
}

/// What the reader watches.
#[derive(Clone)]
pub struct Watched {
    pub kafka: KafkaConnection,
    pub topic: String,
    pub dead_letter_topic: String,
    pub group: String,
}

/// A task that reads offsets every `interval`; aborted when dropped.
pub struct Reader {
    task: tokio::task::JoinHandle<()>,
    pub readings: tokio::sync::mpsc::Receiver<Reading>,
}

impl Reader {
    pub fn spawn(interval: Duration, watched: Watched) -> Reader {
        let (tx, readings) = tokio::sync::mpsc::channel(1);
        Reader {
            task: tokio::spawn(read_every(interval, watched, tx)),
            readings,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_every(
    interval: Duration,
    watched: Watched,
    readings: tokio::sync::mpsc::Sender<Reading>,
) {
    let admin = RdKafkaAdmin;
    let Watched {
        kafka,
        topic,
        dead_letter_topic,
        group,
    } = watched;
    let mut times = RecordTimes::default();
    let mut poll = tokio::time::interval(interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        let offsets =
            match tokio::time::timeout(READ_TIMEOUT, admin.read_offsets(&kafka, &topic, &group))
                .await
            {
                Ok(Ok(offsets)) => Ok(offsets),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("reading offsets took over {READ_TIMEOUT:?}")),
            };
        let ages = match &offsets {
            Ok(offsets) => read_ages(&admin, &kafka, &topic, offsets, &mut times).await,
            Err(_) => BTreeMap::new(),
        };
        let at = Instant::now();
        let dead_letters = tokio::time::timeout(
            READ_TIMEOUT,
            admin.read_offsets(&kafka, &dead_letter_topic, &group),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|offsets| offsets.iter().map(|o| o.log_end).sum());
        let reading = Reading {
            offsets,
            ages,
            dead_letters,
            at,
        };
        if readings.send(reading).await.is_err() {
            return;
        }
    }
}

/// The workers `wapipe up` starts with: none when the pipeline may scale to zero, else at
/// least one.
pub fn initial_workers(policy: &PolicyConfig) -> u32 {
    if policy.scale_to_zero {
        0
    } else {
        policy.min_replicas.max(1)
    }
}

/// Applies one reading: the policy decides, the pool follows, the snapshot shows it. Returns
/// a line to print when the number of workers changed.
pub fn apply(
    policy: &PolicyConfig,
    state: &mut PolicyState,
    pool: &mut WorkerPool,
    reading: Reading,
    snapshot: &mut Snapshot,
) -> anyhow::Result<Option<String>> {
    let mut change = None;
    match reading.offsets {
        Ok(offsets) => {
            let current = pool.current();
            let decision =
                decide_timed(policy, state, &offsets, &reading.ages, current, reading.at);
            if decision.desired != current {
                change = Some(format!(
                    "scaler: {} {current} -> {} workers: {}",
                    decision.reason.as_str(),
                    decision.desired,
                    decision.message
                ));
            }
            pool.scale_to(decision.desired)?;
            snapshot.workers_desired = decision.desired;
            snapshot.total_lag = decision.total_lag;
            snapshot.time_lag_secs = decision.worst.map_or(0, |(_, age)| age.as_secs());
            snapshot.worst_partition = decision.worst.map(|(partition, _)| partition);
            snapshot.drain_rate = decision.drain_rate;
            snapshot.arrival_rate = decision.arrival_rate;
            snapshot.reason = decision.reason.as_str().to_string();
            snapshot.partitions = decision
                .partitions
                .iter()
                .map(|p| PartitionRow {
                    partition: p.partition,
                    lag: p.lag,
                    status: status_word(p.status).to_string(),
                    time_lag_secs: p.time_lag.map(|age| age.as_secs()),
                    drain_rate: p.drain_rate,
                })
                .collect();
            snapshot.decision = decision.message;
            snapshot.lag_error = None;
        }
        Err(error) => snapshot.lag_error = Some(error),
    }
    if let Some(dead_letters) = reading.dead_letters {
        snapshot.dead_letters = dead_letters;
    }
    Ok(change)
}

fn status_word(status: PartitionStatus) -> &'static str {
    match status {
        PartitionStatus::Ok => "ok",
        PartitionStatus::Lagging => "lagging",
        PartitionStatus::Stalled => "stalled",
    }
}
