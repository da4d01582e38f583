//! Deleting a pipeline: under `deletionPolicy: Delete` the ingress and the workers are stopped
//! first (running pods must not recreate what is deleted next), then the topics the operator
//! created are deleted, then the finalizer is released. Bounded by a deadline, skippable by an
//! annotation, and what is left behind is reported, so a deletion (or the namespace it is in)
//! never hangs.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use tracing::warn;

use crate::build::{ingress_name, worker_name};
use crate::children::{has_finalizer, set_finalizers, ChildScope};
use crate::claims;
use crate::crd::{DeletionPolicy, WhatsAppWebhookPipeline, FINALIZER};
use crate::error::{Error, Result};
use crate::metrics::PipelineLabels;
use crate::secrets::{forget_kafka_secrets_on_auth_error, kafka_settings};
use crate::services::{key, shown, Services};

/// How long deletion keeps trying to delete the topics under `deletionPolicy: Delete`, counted
/// from the resource's deletionTimestamp, unless `--cleanup-deadline-seconds` says otherwise
/// ([`Context::with_cleanup_deadline`](crate::controller::Context::with_cleanup_deadline)). Past it the finalizer is released and what was left
/// behind is reported in an Event: a namespace being deleted (its Secrets already gone) or a
/// Kafka that never comes back must not keep the resource, and its namespace, forever.
pub const CLEANUP_DEADLINE: Duration = Duration::from_secs(600);

/// Annotation that releases a pipeline under `deletionPolicy: Delete` without touching Kafka.
pub const SKIP_CLEANUP_ANNOTATION: &str = "wapipe.dev/skip-cleanup";

/// Where a cleanup stands.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cleanup {
    /// Not done: look again as the action says.
    Waiting(Action),
    /// The finalizer is released (or was never there): the pipeline is leaving.
    Released,
}

/// Deletion: under `Delete`, stop the pods, delete the topics the operator created that no
/// other pipeline claims, then drop the finalizer; bounded by `deadline` from the
/// deletionTimestamp ([`CLEANUP_DEADLINE`] by default) on every path, skippable with
/// [`SKIP_CLEANUP_ANNOTATION`]. `created_here` are the topics this process remembers creating.
pub(crate) async fn cleanup(
    services: &Services,
    pipeline: &WhatsAppWebhookPipeline,
    created_here: &BTreeSet<String>,
    deadline: Duration,
) -> Result<Cleanup> {
    if !has_finalizer(pipeline) {
        return Ok(Cleanup::Released);
    }
    if pipeline.spec.deletion_policy == DeletionPolicy::Delete {
        let to_delete = topics_to_delete(pipeline, created_here);
        let skip = pipeline
            .annotations()
            .get(SKIP_CLEANUP_ANNOTATION)
            .is_some_and(|v| v == "true");
        let past_deadline = deleting_for(pipeline).unwrap_or_default() >= deadline;
        if skip {
            services
                .publish(
                    pipeline,
                    EventType::Warning,
                    "CleanupSkipped",
                    format!(
                        "{SKIP_CLEANUP_ANNOTATION}: left on Kafka: {}",
                        listed_or_none(&to_delete)
                    ),
                )
                .await;
        } else {
            let why = match delete_created_topics(services, pipeline, &to_delete).await {
                Ok(true) => None,
                // The pods are still stopping: the topics go once they have, unless a pod stays
                // Terminating (a lost node) past the deadline.
                Ok(false) if !past_deadline => {
                    let left = deadline.saturating_sub(deleting_for(pipeline).unwrap_or_default());
                    return Ok(Cleanup::Waiting(Action::requeue(
                        PODS_STOPPING_RECHECK.min(left + Duration::from_secs(1)),
                    )));
                }
                Ok(false) => Some("the ingress or worker pods were still stopping".to_string()),
                Err(error) => {
                    forget_kafka_secrets_on_auth_error(&services.secrets, pipeline, &error);
                    if !past_deadline {
                        return Err(error);
                    }
                    Some(error.message())
                }
            };
            if let Some(why) = why {
                abandon(services, pipeline, &why, deadline, &to_delete).await;
            }
        }
    }
    let remaining = pipeline
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(&services.client, pipeline, remaining).await?;
    Ok(Cleanup::Released)
}

/// How soon a cleanup waiting for pods to stop looks again.
const PODS_STOPPING_RECHECK: Duration = Duration::from_secs(5);

/// Gives up a cleanup at its deadline: counted, logged, and an Event names what was left.
async fn abandon(
    services: &Services,
    pipeline: &WhatsAppWebhookPipeline,
    why: &str,
    deadline: Duration,
    left: &[String],
) {
    warn!(pipeline = %key(pipeline), error = %shown(&why), left = %listed_or_none(left), "cleanup abandoned after the deadline");
    services
        .metrics
        .cleanups_abandoned
        .get_or_create(&PipelineLabels {
            namespace: pipeline.namespace().unwrap_or_default(),
            pipeline: pipeline.name_any(),
        })
        .inc();
    services
        .publish(
            pipeline,
            EventType::Warning,
            "CleanupAbandoned",
            format!(
                "gave up after {}s ({why}); left on Kafka: {}",
                deadline.as_secs(),
                listed_or_none(left)
            ),
        )
        .await;
}

fn listed_or_none(topics: &[String]) -> String {
    if topics.is_empty() {
        "nothing".into()
    } else {
        topics.join(", ")
    }
}

/// The topics the operator created for the pipeline (adopted ones are never deleted), as its
/// status records them and as this process remembers creating them.
fn topics_to_delete(
    pipeline: &WhatsAppWebhookPipeline,
    created_here: &BTreeSet<String>,
) -> Vec<String> {
    let mut topics = claims::created_topics(pipeline);
    let (topic, dead_letter) = claims::topic_names(pipeline);
    for topic in [topic, dead_letter] {
        if !topics.contains(&topic) && created_here.contains(&topic) {
            topics.push(topic);
        }
    }
    topics
}

/// Stops the ingress and the workers (their Deployments deleted in the foreground, so they
/// are gone only once their pods are), then deletes those of `topics` no other pipeline claims.
/// `Ok(false)` while pods remain.
async fn delete_created_topics(
    services: &Services,
    pipeline: &WhatsAppWebhookPipeline,
    topics: &[String],
) -> Result<bool> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let name = pipeline.name_any();
    let uid = pipeline.uid().unwrap_or_default();
    let scope = ChildScope {
        client: &services.client,
        namespace: &namespace,
        pipeline_uid: &uid,
    };
    let mut stopping = false;
    for child in [ingress_name(&name), worker_name(&name)] {
        // Foreground: the Deployment is gone only once its pods are, so the topics are
        // deleted after the last worker has stopped.
        stopping |= scope
            .delete::<Deployment>(&child, DeleteParams::foreground())
            .await?;
    }
    if stopping {
        return Ok(false);
    }
    let others = services.all_pipelines().await?;
    let kafka = kafka_settings(
        &services.client,
        &services.secrets,
        &namespace,
        &pipeline.spec.kafka,
    )
    .await?;
    for topic in topics {
        if let Some(holder) = claims::other_claimant(pipeline, topic, &others) {
            services
                .publish(
                    pipeline,
                    EventType::Normal,
                    "TopicRetained",
                    format!(
                        "kept topic {topic}: pipeline {}/{} claims it",
                        holder.namespace().unwrap_or_default(),
                        holder.name_any()
                    ),
                )
                .await;
            continue;
        }
        services
            .admin
            .delete_topic(&kafka, topic)
            .await
            .map_err(Error::topic("deleting", topic))?;
        services
            .publish(
                pipeline,
                EventType::Normal,
                "TopicDeleted",
                format!("deleted topic {topic}"),
            )
            .await;
    }
    let (topic, dead_letter) = claims::topic_names(pipeline);
    for topic in [topic, dead_letter] {
        if !topics.contains(&topic) {
            services
                .publish(
                    pipeline,
                    EventType::Normal,
                    "TopicRetained",
                    format!("kept topic {topic}: the operator did not create it"),
                )
                .await;
        }
    }
    Ok(true)
}

/// How long ago the pipeline's deletion began, if it did.
pub(crate) fn deleting_for(pipeline: &WhatsAppWebhookPipeline) -> Option<Duration> {
    let since = pipeline.metadata.deletion_timestamp.as_ref()?;
    let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(since.0);
    Some(Duration::from_secs(
        u64::try_from(elapsed.as_secs()).unwrap_or(0),
    ))
}
