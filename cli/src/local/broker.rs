//! The Kafka a local pipeline runs on: a broker started from the cached jars, its log dirs in
//! the state directory, or a cluster the user names; and the two topics of the pipeline on it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use wapipe_kafka_local::{self as broker, KafkaPorts};
use wapipe_operator::kafka::TopicRequest;

use super::host::ensure_port_free;
use super::pipeline::LocalPipeline;
use super::process::{Managed, Spec};

/// How long a broker has to answer its first metadata request.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts Apache Kafka on 127.0.0.1:`port` (its KRaft controller on `port + 1`) with its
/// storage in `dir`, logging to `log`, and waits until it answers. Returns the process and its
/// bootstrap address.
pub async fn start(port: u16, dir: &Path, log: &Path) -> anyhow::Result<(Managed, String)> {
    ensure_port_free(port, "broker", "--broker-port")?;
    let controller_port = port.saturating_add(1);
    ensure_port_free(
        controller_port,
        "Kafka controller (the broker port + 1)",
        "--broker-port",
    )?;
    let command = broker::prepare(
        dir,
        KafkaPorts {
            port,
            controller_port,
        },
        &[],
    )
    .context(
        "Apache Kafka could not be prepared (or pass --kafka-brokers for a broker of your own)",
    )?;
    let mut process = Managed::spawn(Spec {
        name: "kafka".into(),
        program: command.program,
        args: command.args,
        env: BTreeMap::new(),
        current_dir: Some(dir.to_path_buf()),
        log: log.to_path_buf(),
    })?;
    let bootstrap = format!("127.0.0.1:{port}");
    wait_until_answering(&bootstrap, Some(&mut process))
        .await
        .context("the Kafka broker could not start")?;
    Ok((process, bootstrap))
}

/// Waits until `bootstrap` answers metadata requests, failing early if `process` exits.
pub async fn wait_until_answering(
    bootstrap: &str,
    mut process: Option<&mut Managed>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(process) = process.as_deref_mut() {
            if let Some(status) = process.exited() {
                bail!(
                    "the broker exited ({status}) before it answered; last lines of {}:\n{}",
                    process.spec.log.display(),
                    process.log_tail(20)
                );
            }
        }
        let probe = bootstrap.to_string();
        let answered = tokio::task::spawn_blocking(move || {
            broker::wait_for_broker(&probe, Duration::from_secs(1)).is_ok()
        })
        .await
        .unwrap_or(false);
        if answered {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no broker answered on {bootstrap} within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The raw and dead-letter topics as the operator would ask for them, for one local broker:
/// replication 1, and `min.insync.replicas` 1 whatever the cluster's spec says.
pub fn topic_requests(pipeline: &LocalPipeline) -> [TopicRequest; 2] {
    let mut spec = pipeline.spec.clone();
    for (replication_factor, config) in [
        (&mut spec.topic.replication_factor, &mut spec.topic.config),
        (
            &mut spec.dead_letter_topic.replication_factor,
            &mut spec.dead_letter_topic.config,
        ),
    ] {
        *replication_factor = Some(1);
        config.remove("min.insync.replicas");
    }
    wapipe_operator::topic::topic_requests(&spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::pipeline;

    #[test]
    fn local_topics_have_one_replica_and_a_min_insync_replicas_one_node_meets() {
        let yaml = include_str!("../../../examples/meta-postgres.yaml");
        let pipeline = pipeline::parse(yaml).unwrap();
        let [raw, dead] = topic_requests(&pipeline);
        assert_eq!(raw.partitions, 12);
        assert_eq!(raw.replication_factor, Some(1));
        // The example asks for 2 in-sync replicas (a cluster's setting); one node has one.
        assert_eq!(
            raw.config.get("min.insync.replicas").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            raw.config.get("max.message.bytes").map(String::as_str),
            Some("3211264")
        );
        assert_eq!(
            raw.config.get("retention.ms").map(String::as_str),
            Some("604800000")
        );
        assert_eq!(dead.name, "whatsapp_webhooks_failed");
    }
}
