//! Topics on a Kafka cluster, created or adopted the way the operator does it
//! ([`TopicRequest::for_pipeline`]): `wapipe topics create`, and the topics `wapipe up` needs.

use std::collections::BTreeMap;

use anyhow::Context;
use wapipe_core::kafka::KafkaArgs;
use wapipe_operator::kafka::{KafkaSettings, RdKafkaAdmin, TopicAdmin, TopicRequest};

#[derive(Debug, Clone, clap::Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Raw topic (one record per event).
    #[arg(long, env = wapipe_core::env::TOPIC, default_value = wapipe_core::DEFAULT_RAW_TOPIC)]
    pub topic: String,
    /// Dead-letter topic.
    #[arg(long, env = wapipe_core::env::DEAD_LETTER_TOPIC, default_value = wapipe_core::DEFAULT_DEAD_LETTER_TOPIC)]
    pub dead_letter_topic: String,
    /// Partitions of the raw topic: the most workers that can share the load.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Replication factor (1 for a single local broker).
    #[arg(long, default_value_t = 1)]
    pub replication: i32,
}

/// `wapipe topics create`: both topics, with the operator's defaults for their configuration
/// (`max.message.bytes` to take the ingress's largest body, `min.insync.replicas` one below the
/// replication factor); existing topics are adopted, and grown to `--partitions` if smaller.
pub async fn create(args: &TopicsArgs) -> anyhow::Result<()> {
    let kafka = crate::lag::settings(&args.kafka)?;
    for name in [&args.topic, &args.dead_letter_topic] {
        let request = TopicRequest::for_pipeline(
            name,
            args.partitions,
            Some(args.replication),
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

/// Ensures a topic exists with at least `request.partitions` partitions; says what was done.
pub async fn ensure_topic(
    admin: &impl TopicAdmin,
    kafka: &KafkaSettings,
    request: TopicRequest,
) -> anyhow::Result<String> {
    let name = request.name.clone();
    match admin.describe_topic(kafka, &name).await? {
        None => {
            admin
                .create_topic(kafka, &request)
                .await
                .with_context(|| format!("creating topic {name}"))?;
            Ok(format!(
                "created {name} ({} partitions)",
                request.partitions
            ))
        }
        Some(shape) if shape.partitions < request.partitions => {
            admin
                .create_partitions(kafka, &name, request.partitions)
                .await
                .with_context(|| format!("adding partitions to {name}"))?;
            Ok(format!(
                "adopted {name}, partitions {} -> {}",
                shape.partitions, request.partitions
            ))
        }
        Some(shape) => Ok(format!(
            "adopted {name} ({} partitions{})",
            shape.partitions,
            if shape.partitions > request.partitions {
                ", more than asked: partitions never shrink"
            } else {
                ""
            }
        )),
    }
}
