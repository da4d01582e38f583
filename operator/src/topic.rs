//! The pipeline's topics on Kafka: what to do about one (pure [`plan_topic`]), doing it
//! ([`apply_topic`]: create, add partitions, or leave a change Kafka cannot make, the one rule
//! of the operator and of `wapipe topics create`), reporting it on the pipeline
//! (`ensure_topic`), and keeping its configuration in line with the spec
//! (`sync_topic_config`). Deleting topics belongs to the pipeline's cleanup, in
//! [`crate::cleanup`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kube::runtime::events::EventType;
use tracing::{info, warn};

use crate::crd::{PipelineSpec, WhatsAppWebhookPipeline};
use crate::error::{Error, Result};
use crate::kafka::{
    config_drift, AdminError, KafkaConnection, TopicAdmin, TopicRequest, TopicShape,
};
use crate::services::{key, Services};
use crate::status::{Reason, TopicOutcome};

/// What a pipeline's topic steps remember between reconciles.
#[derive(Debug, Default)]
pub(crate) struct TopicMemory {
    /// Topics this process created: the status says so too, but a reconcile can start from a
    /// cached copy read before that status write arrived, and must not take its own topic for
    /// an adopted one (it would then never delete it).
    pub created: BTreeSet<String>,
    /// Topic → the generation whose configuration was last found in place, and when: read
    /// again on a spec change or after [`CONFIG_RECHECK`], not on every poll.
    pub config_checked: HashMap<String, ConfigChecked>,
}

/// What to do about a topic, given its spec and what the broker has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicPlan {
    Create,
    /// It exists with the requested shape.
    Matches,
    IncreasePartitions {
        from: i32,
        to: i32,
    },
    /// A decrease of partitions or a change of replication factor.
    NotSupported(String),
}

/// Pure: compares the requested shape with the existing topic.
pub fn plan_topic(
    partitions: i32,
    replication_factor: Option<i32>,
    existing: Option<TopicShape>,
) -> TopicPlan {
    let Some(existing) = existing else {
        return TopicPlan::Create;
    };
    let mut problems = Vec::new();
    if partitions < existing.partitions {
        problems.push(format!(
            "decreasing partitions from {} to {partitions} is not supported",
            existing.partitions
        ));
    }
    if let Some(rf) = replication_factor {
        if rf != existing.replication_factor {
            problems.push(format!(
                "changing the replication factor from {} to {rf} is not supported",
                existing.replication_factor
            ));
        }
    }
    if !problems.is_empty() {
        return TopicPlan::NotSupported(problems.join("; "));
    }
    if partitions > existing.partitions {
        return TopicPlan::IncreasePartitions {
            from: existing.partitions,
            to: partitions,
        };
    }
    TopicPlan::Matches
}

/// The raw and dead-letter topics of `spec` as Kafka is asked for them, with wapipe's
/// configuration defaults ([`TopicRequest::for_pipeline`]).
pub fn topic_requests(spec: &PipelineSpec) -> [TopicRequest; 2] {
    let request = |name: &str, partitions, replication_factor, config| {
        TopicRequest::for_pipeline(
            name,
            partitions,
            replication_factor,
            config,
            spec.ingress.max_body_bytes,
        )
    };
    let (raw, failed) = (&spec.topic, &spec.dead_letter_topic);
    [
        request(
            &raw.name,
            raw.partitions,
            raw.replication_factor,
            &raw.config,
        ),
        request(
            &failed.name,
            failed.partitions,
            failed.replication_factor,
            &failed.config,
        ),
    ]
}

/// What [`apply_topic`] found on the broker and did about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedTopic {
    /// The topic before any change; `None` when it did not exist.
    pub existing: Option<TopicShape>,
    /// What was done: [`TopicPlan::Create`] and [`TopicPlan::IncreasePartitions`] are done,
    /// [`TopicPlan::NotSupported`] is left for the caller to report.
    pub plan: TopicPlan,
}

/// The one topic rule, used by the operator and by `wapipe topics create` (and `wapipe up`):
/// reads the topic, decides with [`plan_topic`], then creates it with the request's shape and
/// configuration or adds partitions. An existing topic is adopted as it is; a decrease of
/// partitions or a change of replication factor is not made.
pub async fn apply_topic(
    admin: &dyn TopicAdmin,
    kafka: &KafkaConnection,
    request: &TopicRequest,
) -> Result<AppliedTopic> {
    let existing = admin
        .describe_topic(kafka, &request.name)
        .await
        .map_err(Error::topic("describing", &request.name))?;
    let plan = plan_topic(request.partitions, request.replication_factor, existing);
    match &plan {
        TopicPlan::Create => admin
            .create_topic(kafka, request)
            .await
            .map_err(Error::topic("creating", &request.name))?,
        TopicPlan::IncreasePartitions { to, .. } => admin
            .create_partitions(kafka, &request.name, *to)
            .await
            .map_err(Error::topic("adding partitions to", &request.name))?,
        TopicPlan::Matches | TopicPlan::NotSupported(_) => {}
    }
    Ok(AppliedTopic { existing, plan })
}

/// Creates the topic, adds partitions, or refuses, and keeps its configuration; `recorded` says
/// whether the pipeline's status records creating it.
pub(crate) async fn ensure_topic(
    services: &Services,
    memory: &mut TopicMemory,
    pipeline: &WhatsAppWebhookPipeline,
    kafka: &KafkaConnection,
    request: TopicRequest,
    spec_config: &BTreeMap<String, String>,
    recorded: bool,
) -> Result<TopicOutcome> {
    let name = request.name.clone();
    let created_before = recorded || memory.created.contains(&name);
    let AppliedTopic { existing, plan } =
        apply_topic(services.admin.as_ref(), kafka, &request).await?;
    let outcome = match plan {
        TopicPlan::Create => {
            let message = format!(
                "created topic {name} with {} partitions",
                request.partitions
            );
            info!(pipeline = %key(pipeline), topic = %name, "created topic");
            memory.created.insert(name.clone());
            services
                .publish(pipeline, EventType::Normal, "TopicCreated", message.clone())
                .await;
            TopicOutcome {
                ready: true,
                reason: Reason::Created,
                message,
                partitions: Some(request.partitions),
                created: true,
            }
        }
        TopicPlan::Matches => TopicOutcome {
            ready: true,
            reason: if created_before {
                Reason::Created
            } else {
                Reason::Adopted
            },
            message: format!(
                "topic {name} has {} partitions{}",
                request.partitions,
                if created_before {
                    ""
                } else {
                    " (adopted: it existed before and is never deleted by the operator)"
                }
            ),
            partitions: existing.map(|e| e.partitions),
            created: created_before,
        },
        TopicPlan::IncreasePartitions { from, to } => {
            let message = format!(
                "partitions of {name} increased from {from} to {to}: keys now map to other \
                 partitions, so per-user order is not guaranteed across the change"
            );
            services
                .publish(
                    pipeline,
                    EventType::Warning,
                    "PartitionsIncreased",
                    message.clone(),
                )
                .await;
            TopicOutcome {
                ready: true,
                reason: Reason::PartitionsIncreased,
                message,
                partitions: Some(to),
                created: created_before,
            }
        }
        TopicPlan::NotSupported(message) => {
            services
                .publish(
                    pipeline,
                    EventType::Warning,
                    "NotSupported",
                    message.clone(),
                )
                .await;
            TopicOutcome {
                ready: false,
                reason: Reason::NotSupported,
                message,
                partitions: existing.map(|e| e.partitions),
                created: created_before,
            }
        }
    };
    if existing.is_some() && outcome.ready {
        // An adopted topic belongs to whoever made it: only the keys the spec names are
        // changed, never wapipe's own defaults.
        let desired = if outcome.created {
            request.config.clone()
        } else {
            request
                .config
                .iter()
                .filter(|(key, _)| spec_config.contains_key(*key))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        return sync_topic_config(services, memory, pipeline, kafka, &name, &desired, outcome)
            .await;
    }
    Ok(outcome)
}

/// The generation whose topic configuration was found in place, and when.
pub(crate) type ConfigChecked = (Option<i64>, Instant);

/// How often a topic's configuration is read again when the spec has not changed (to undo
/// changes made outside the operator).
const CONFIG_RECHECK: Duration = Duration::from_secs(600);

/// Brings an existing topic's own configuration to `desired`: the entries whose value differs
/// are set; the topic's other entries are kept. Kafka
/// refusing a value is reported on the topic's condition and in an Event, not retried blindly.
async fn sync_topic_config(
    services: &Services,
    memory: &mut TopicMemory,
    pipeline: &WhatsAppWebhookPipeline,
    kafka: &KafkaConnection,
    name: &str,
    desired: &BTreeMap<String, String>,
    mut outcome: TopicOutcome,
) -> Result<TopicOutcome> {
    let generation = pipeline.metadata.generation;
    let recently_checked = memory
        .config_checked
        .get(name)
        .is_some_and(|(seen, at)| *seen == generation && at.elapsed() < CONFIG_RECHECK);
    if recently_checked {
        return Ok(outcome);
    }
    let current = services
        .admin
        .topic_config(kafka, name)
        .await
        .map_err(Error::topic("reading the configuration of", name))?;
    let drift = config_drift(desired, &current);
    if drift.is_empty() {
        memory
            .config_checked
            .insert(name.to_string(), (generation, Instant::now()));
        return Ok(outcome);
    }
    let mut config = current.clone();
    config.extend(drift.clone());
    let listed = drift
        .iter()
        .map(|(key, value)| match current.get(key) {
            Some(old) => format!("{key}={value} (was {old})"),
            None => format!("{key}={value}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    match services.admin.set_topic_config(kafka, name, &config).await {
        Ok(()) => {
            let message = format!("applied to topic {name}: {listed}");
            info!(pipeline = %key(pipeline), topic = %name, changes = %listed, "topic configuration applied");
            services
                .publish(
                    pipeline,
                    EventType::Normal,
                    "TopicConfigApplied",
                    message.clone(),
                )
                .await;
            outcome.message = format!("{}; {message}", outcome.message);
            memory
                .config_checked
                .insert(name.to_string(), (generation, Instant::now()));
        }
        Err(error @ (AdminError::Refused(_) | AdminError::NotApplied(_))) => {
            let message =
                format!("Kafka refused the configuration of topic {name} ({listed}): {error}");
            warn!(pipeline = %key(pipeline), topic = %name, %error, "topic configuration refused");
            services
                .publish(
                    pipeline,
                    EventType::Warning,
                    "TopicConfigRefused",
                    message.clone(),
                )
                .await;
            outcome.ready = false;
            outcome.reason = Reason::TopicConfigRefused;
            outcome.message = message;
        }
        Err(source) => return Err(Error::topic("configuring", name)(source)),
    }
    Ok(outcome)
}
