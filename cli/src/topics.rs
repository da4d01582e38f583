//! `wapipe topics create`: creates the raw and dead-letter topics, adopting ones that exist.

use std::time::Duration;

use anyhow::bail;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use wapipe_core::kafka::KafkaArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Raw topic (one record per event).
    #[arg(long, env = "WAPIPE_TOPIC", default_value = wapipe_core::DEFAULT_RAW_TOPIC)]
    pub topic: String,
    /// Dead-letter topic.
    #[arg(long, env = "WAPIPE_DEAD_LETTER_TOPIC", default_value = wapipe_core::DEFAULT_DEAD_LETTER_TOPIC)]
    pub dead_letter_topic: String,
    /// Partitions of the raw topic: the most workers that can share the load.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Replication factor (1 for a single local broker).
    #[arg(long, default_value_t = 1)]
    pub replication: i32,
}

pub async fn create(args: &TopicsArgs) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = args.kafka.client_config()?.create()?;
    let topics = [
        NewTopic::new(
            &args.topic,
            args.partitions,
            TopicReplication::Fixed(args.replication),
        ),
        NewTopic::new(
            &args.dead_letter_topic,
            args.partitions,
            TopicReplication::Fixed(args.replication),
        ),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(name) => println!("created {name}"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => println!("exists  {name}"),
            Err((name, code)) => bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}
