//! Dead letters: an event that failed `max_attempts` times goes to the dead-letter topic with
//! its original key, value and headers plus `wapipe-dlq-*` headers saying why, where from and
//! when; the produce is retried until the broker acknowledges it.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use wapipe_core::error::{with_causes, Causes};
use wapipe_core::record::{
    is_dead_letter_header, HEADER_DLQ_ATTEMPTS, HEADER_DLQ_ERROR, HEADER_DLQ_FIRST_FAILURE_AT,
    HEADER_DLQ_LAST_FAILURE_AT, HEADER_DLQ_SOURCE_OFFSET, HEADER_DLQ_SOURCE_PARTITION,
    HEADER_DLQ_SOURCE_TOPIC,
};

use super::offsets::Job;
use super::Shared;
use crate::error::Error;
use crate::observe::RetryReason;
use crate::route::Incoming;

/// Headers of a dead letter: the original ones, then why, where from and how often it failed.
pub fn dead_letter_headers(
    incoming: &Incoming,
    error: &str,
    attempts: u32,
    first_failure_at: i64,
    last_failure_at: i64,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for (key, value) in incoming.headers.iter() {
        if is_dead_letter_header(key) {
            continue;
        }
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let extra = [
        (HEADER_DLQ_ERROR, error.to_string()),
        (HEADER_DLQ_ATTEMPTS, attempts.to_string()),
        (HEADER_DLQ_SOURCE_TOPIC, incoming.topic.to_string()),
        (HEADER_DLQ_SOURCE_PARTITION, incoming.partition.to_string()),
        (HEADER_DLQ_SOURCE_OFFSET, incoming.offset.to_string()),
        (HEADER_DLQ_FIRST_FAILURE_AT, first_failure_at.to_string()),
        (HEADER_DLQ_LAST_FAILURE_AT, last_failure_at.to_string()),
    ];
    for (key, value) in &extra {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

/// Produces the dead letter and waits for its acknowledgement, retrying while the broker
/// refuses. Returns false only when abandoned.
pub(super) async fn dead_letter(
    shared: &Shared,
    job: &Job,
    error: &Error,
    attempts: u32,
    first_failure_at: i64,
    last_failure_at: i64,
) -> bool {
    let incoming = &job.incoming;
    let reason = with_causes(error);
    let mut failures = 0;
    loop {
        let headers = dead_letter_headers(
            incoming,
            &reason,
            attempts,
            first_failure_at,
            last_failure_at,
        );
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&shared.settings.dead_letter_topic).headers(headers);
        if let Some(key) = incoming.key.as_deref() {
            record = record.key(key);
        }
        if let Some(payload) = incoming.payload.as_deref() {
            record = record.payload(payload);
        }
        match shared.producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => return true,
            Err((error, _)) => {
                failures += 1;
                shared.metrics.retry(RetryReason::Sink);
                let error = Error::ProduceDeadLetter {
                    topic: shared.settings.dead_letter_topic.clone(),
                    source: error,
                };
                tracing::warn!(error = %Causes(&error), key = %incoming.key_str(), partition = incoming.partition, offset = incoming.offset, "dead-letter produce failed; retrying");
            }
        }
        let wait = shared.settings.backoff(failures);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.abandon.cancelled() => return false,
        }
        if !shared.owns(incoming.partition, job.epoch) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_headers_keep_the_originals_and_say_why() {
        use rdkafka::message::Headers;
        let incoming = Incoming {
            topic: "raw".into(),
            partition: 2,
            offset: 41,
            key: Some(b"u".to_vec()),
            payload: None,
            headers: [("wapipe-kind", "message")].into_iter().collect(),
        };
        let headers = dead_letter_headers(&incoming, "boom", 3, 1, 2);
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        assert!(pairs.contains(&("wapipe-kind".into(), "message".into())));
        assert!(pairs.contains(&(HEADER_DLQ_ATTEMPTS.into(), "3".into())));
        assert!(pairs.contains(&(HEADER_DLQ_SOURCE_OFFSET.into(), "41".into())));
        assert!(pairs.contains(&(HEADER_DLQ_ERROR.into(), "boom".into())));
    }
}
