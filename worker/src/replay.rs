//! Replays: moving dead letters back to the raw topic once the bug that killed them is fixed,
//! and rewinding the worker group's offsets on the raw topic to a point in time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use wapipe_core::kafka::KafkaArgs;

use crate::error::{Error, Result};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Which dead letters to move back.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Dead-lettered at or after (unix ms, the dead letter's record timestamp).
    pub since_ms: Option<i64>,
    /// Dead-lettered before (unix ms).
    pub until_ms: Option<i64>,
    pub key: Option<String>,
}

impl DeadLetterFilter {
    pub fn matches(&self, key: Option<&[u8]>, timestamp_ms: Option<i64>) -> bool {
        if let Some(wanted) = &self.key {
            if key != Some(wanted.as_bytes()) {
                return false;
            }
        }
        match timestamp_ms {
            Some(ts) => {
                self.since_ms.is_none_or(|since| ts >= since)
                    && self.until_ms.is_none_or(|until| ts < until)
            }
            None => self.since_ms.is_none() && self.until_ms.is_none(),
        }
    }
}

/// What a dead-letter replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterReplay {
    pub scanned: usize,
    pub replayed: usize,
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Error::TopicMissing(topic.to_string()));
    }
    Ok(partitions)
}

/// Produces the dead letters that match `filter` back to `raw_topic`, with their original key,
/// value and headers (the `wapipe-dlq-*` headers dropped), each acknowledged before the count
/// goes up. Reads the dead-letter topic up to its end at the time of the call. Replaying twice
/// is harmless: the sinks are idempotent.
pub async fn replay_dead_letters(
    kafka: &KafkaArgs,
    dead_letter_topic: &str,
    raw_topic: &str,
    filter: &DeadLetterFilter,
) -> Result<DeadLetterReplay> {
    let mut config = kafka.client_config()?;
    config
        .set("group.id", "wapipe-dlq-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let probe: BaseConsumer = config.create()?;
    let partitions = partitions_of(&probe, dead_letter_topic)?;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &partition in &partitions {
        let (low, high) = probe.fetch_watermarks(dead_letter_topic, partition, TIMEOUT)?;
        if high > low {
            ends.insert(partition, high);
            tpl.add_partition_offset(dead_letter_topic, partition, Offset::Offset(low))?;
        }
    }
    if let Some(since) = filter.since_ms {
        let mut times = TopicPartitionList::new();
        for partition in ends.keys() {
            times.add_partition_offset(dead_letter_topic, *partition, Offset::Offset(since))?;
        }
        let starts = probe.offsets_for_times(times, TIMEOUT)?;
        for element in starts.elements() {
            match element.offset() {
                Offset::Offset(start) => {
                    tpl.set_partition_offset(
                        dead_letter_topic,
                        element.partition(),
                        Offset::Offset(start),
                    )?;
                }
                // Nothing at or after `since` in this partition.
                _ => {
                    ends.remove(&element.partition());
                }
            }
        }
    }
    let mut summary = DeadLetterReplay::default();
    if ends.is_empty() {
        return Ok(summary);
    }
    let consumer: StreamConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    for element in tpl.elements() {
        if ends.contains_key(&element.partition()) {
            assignment.add_partition_offset(
                dead_letter_topic,
                element.partition(),
                element.offset(),
            )?;
        }
    }
    consumer.assign(&assignment)?;
    let producer: FutureProducer = kafka
        .client_config_with(&wapipe_core::kafka::COPY_PRODUCER_DEFAULTS)?
        .create()?;
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        let message = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(received) => received?,
            Err(_) if last_progress.elapsed() > Duration::from_secs(30) => {
                return Err(Error::ReadStalled {
                    topic: dead_letter_topic.to_string(),
                })
            }
            Err(_) => continue,
        };
        last_progress = Instant::now();
        let partition = message.partition();
        if let Some(end) = ends.get(&partition) {
            if message.offset() + 1 >= *end {
                ends.remove(&partition);
            }
        } else {
            continue;
        }
        summary.scanned += 1;
        if !filter.matches(message.key(), message.timestamp().to_millis()) {
            continue;
        }
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                if !wapipe_core::record::is_dead_letter_header(header.key) {
                    headers = headers.insert(Header {
                        key: header.key,
                        value: header.value,
                    });
                }
            }
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(raw_topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer
            .send(record, TIMEOUT)
            .await
            .map_err(|(source, _)| Error::Produce {
                topic: raw_topic.to_string(),
                source,
            })?;
        summary.replayed += 1;
    }
    Ok(summary)
}

/// Active members of `group`, as the broker's group list reports them.
pub fn group_members(kafka: &KafkaArgs, group: &str) -> Result<usize> {
    let consumer: BaseConsumer = kafka.client_config()?.create()?;
    let groups = consumer
        .fetch_group_list(Some(group), TIMEOUT)
        .map_err(|source| Error::CheckGroup {
            group: group.to_string(),
            source,
        })?;
    Ok(groups
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| g.members().len())
        .sum())
}

/// Rewinds `group`'s committed offsets on `topic` to the first record at or after `since_ms`
/// (the end, for partitions with nothing newer). Refused while the group has active members:
/// Kafka itself refuses a commit from outside a live group's generation, `force` or not.
/// `force` goes ahead when the members cannot be listed (a broker that refuses to describe
/// groups to this principal). Returns the committed (partition, offset) pairs.
pub fn reset_offsets_to_time(
    kafka: &KafkaArgs,
    topic: &str,
    group: &str,
    since_ms: i64,
    force: bool,
) -> Result<Vec<(i32, i64)>> {
    // A group whose members cannot be listed is treated as active: only --force goes ahead.
    match group_members(kafka, group) {
        Ok(0) => {}
        Err(Error::CheckGroup { source, .. }) if force => {
            tracing::warn!(
                group,
                %source,
                "the group's members could not be listed; resetting anyway (--force)"
            )
        }
        Ok(members) => {
            return Err(Error::GroupActive {
                group: group.to_string(),
                members,
            })
        }
        Err(error) => return Err(error),
    }
    let consumer: BaseConsumer = kafka
        .client_config()?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let partitions = partitions_of(&consumer, topic)?;
    let mut times = TopicPartitionList::new();
    for &partition in &partitions {
        times.add_partition_offset(topic, partition, Offset::Offset(since_ms))?;
    }
    let found = consumer.offsets_for_times(times, TIMEOUT)?;
    let mut commit = TopicPartitionList::new();
    let mut result = Vec::new();
    for element in found.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) if offset >= 0 => offset,
            _ => {
                consumer
                    .fetch_watermarks(topic, element.partition(), TIMEOUT)?
                    .1
            }
        };
        commit.add_partition_offset(topic, element.partition(), Offset::Offset(offset))?;
        result.push((element.partition(), offset));
    }
    consumer.commit(&commit, CommitMode::Sync)?;
    result.sort_unstable();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_filter_checks_key_and_half_open_time_window() {
        let filter = DeadLetterFilter {
            since_ms: Some(100),
            until_ms: Some(200),
            key: Some("ann".into()),
        };
        assert!(filter.matches(Some(b"ann"), Some(100)));
        assert!(!filter.matches(Some(b"ann"), Some(200)));
        assert!(!filter.matches(Some(b"bob"), Some(150)));
        assert!(!filter.matches(Some(b"ann"), None));
        assert!(DeadLetterFilter::default().matches(None, None));
    }
}
