//! Topics on a Kafka cluster, created or adopted the way the operator does it
//! ([`TopicRequest::for_pipeline`]): `wapipe topics create`, and the topics `wapipe up` needs.

use std::collections::BTreeMap;

use anyhow::bail;
use wapipe_core::kafka::{KafkaArgs, TopicNames};
use wapipe_operator::kafka::{KafkaConnection, RdKafkaAdmin, TopicAdmin, TopicRequest};
use wapipe_operator::topic::{apply_topic, TopicPlan};

#[derive(Debug, Clone, clap::Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub names: TopicNames,
    /// Partitions of the raw topic: the most workers that can share the load.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Replication factor of a topic created; the broker's `default.replication.factor` when
    /// left out. An existing topic must already have it.
    #[arg(long)]
    pub replication: Option<i32>,
}

/// `wapipe topics create`: both topics, with the operator's defaults for their configuration
/// (`max.message.bytes` to take the ingress's largest body, `min.insync.replicas` one below the
/// replication factor when it is given); existing topics are adopted, and grown to
/// `--partitions` if smaller, by the operator's rule.
pub async fn create(args: &TopicsArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.connection()?;
    for name in [&args.names.topic, &args.names.dead_letter_topic] {
        let request = TopicRequest::for_pipeline(
            name,
            args.partitions,
            args.replication,
            &BTreeMap::new(),
            None,
        );
        println!(
            "topic: {}",
            ensure_topic(&RdKafkaAdmin, &kafka, request).await?
        );
    }
    Ok(())
}

/// Creates or adopts a topic by the operator's rule ([`apply_topic`]); says what was done. A
/// topic that exists with more partitions or another replication factor is refused, as the
/// operator refuses it.
pub async fn ensure_topic(
    admin: &dyn TopicAdmin,
    kafka: &KafkaConnection,
    request: TopicRequest,
) -> anyhow::Result<String> {
    let name = &request.name;
    let applied = apply_topic(admin, kafka, &request).await?;
    match applied.plan {
        TopicPlan::Create => Ok(format!(
            "created {name} ({} partitions)",
            request.partitions
        )),
        TopicPlan::Matches => Ok(format!(
            "adopted {name} ({} partitions)",
            request.partitions
        )),
        TopicPlan::IncreasePartitions { from, to } => {
            Ok(format!("adopted {name}, partitions {from} -> {to}"))
        }
        TopicPlan::NotSupported(why) => bail!(
            "topic {name} exists and cannot be made to match: {why} (ask for what it has, or \
             delete the topic)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wapipe_operator::kafka::InMemoryAdmin;

    fn request(partitions: i32, replication: Option<i32>) -> TopicRequest {
        TopicRequest::for_pipeline("raw", partitions, replication, &BTreeMap::new(), None)
    }

    #[tokio::test]
    async fn topics_are_created_adopted_and_grown_by_the_operators_rule() {
        let admin = InMemoryAdmin::default();
        let kafka = KafkaConnection::plaintext("b:9092");
        let said = ensure_topic(&admin, &kafka, request(6, Some(1)))
            .await
            .unwrap();
        assert_eq!(said, "created raw (6 partitions)");
        let said = ensure_topic(&admin, &kafka, request(6, None))
            .await
            .unwrap();
        assert_eq!(said, "adopted raw (6 partitions)");
        let said = ensure_topic(&admin, &kafka, request(12, Some(1)))
            .await
            .unwrap();
        assert_eq!(said, "adopted raw, partitions 6 -> 12");
        assert_eq!(admin.topic("raw").unwrap().partitions, 12);
    }

    #[tokio::test]
    async fn a_topic_that_cannot_be_made_to_match_is_refused_and_left_alone() {
        let admin = InMemoryAdmin::default().with_topic("raw", 12, 3);
        let kafka = KafkaConnection::plaintext("b:9092");
        for (partitions, replication, why) in [
            (6, None, "decreasing partitions from 12 to 6"),
            (12, Some(1), "changing the replication factor from 3 to 1"),
        ] {
            let error = ensure_topic(&admin, &kafka, request(partitions, replication))
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains(why), "{error}");
        }
        assert_eq!(admin.topic("raw").unwrap().partitions, 12);
        assert_eq!(admin.calls(), Vec::<String>::new(), "nothing was changed");
    }
}
