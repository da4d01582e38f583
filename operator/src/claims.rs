//! Who owns what on Kafka (pure): the topics and consumer group a pipeline claims, whether two
//! pipelines talk to the same Kafka cluster, which pipeline wins a contested claim, and which
//! topics a pipeline created (the only ones its cleanup may delete).
//!
//! A pipeline claims its spec's two topics, every topic its status says it created, and its
//! consumer group, for as long as the resource exists, its deletion included: a replacement
//! pipeline must not adopt a topic whose old owner's cleanup is about to delete it.

use kube::ResourceExt;

use crate::crd::WhatsAppWebhookPipeline;

/// The consumer group the pipeline's workers join:
/// 1. the spec's `worker.consumerGroup`;
/// 2. else the group its status recorded: a pipeline keeps the group it already uses (a new
///    group would start without its committed offsets);
/// 3. else, for a pipeline an older operator reconciled (its status has the topic's state but
///    records no group), that operator's default `wapipe-<name>`, the group it uses;
/// 4. else `wapipe-<namespace>.<name>`: pipelines of one name in two namespaces on one Kafka
///    cluster get two groups (namespaces and names have no dot, so the pair is unambiguous).
pub fn consumer_group(pipeline: &WhatsAppWebhookPipeline) -> String {
    if let Some(group) = &pipeline.spec.worker.consumer_group {
        return group.clone();
    }
    let status = pipeline.status.as_ref();
    if let Some(group) = status.and_then(|s| s.consumer_group.as_ref()) {
        return group.clone();
    }
    let reconciled_before =
        status.is_some_and(|s| s.topic_created.is_some() || s.partitions.is_some());
    if reconciled_before {
        return format!("wapipe-{}", pipeline.name_any());
    }
    format!(
        "wapipe-{}.{}",
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any()
    )
}

/// The names of the pipeline's raw and dead-letter topics, each:
/// 1. the spec's, when it names one;
/// 2. else the one its status records (`status.topic`, `status.deadLetterTopic`): a pipeline
///    keeps the topic its records are on;
/// 3. else, for a pipeline an operator reconciled before the defaults came from the pipeline's
///    name (its status has the topics' state but records no name), that operator's defaults
///    `whatsapp_webhooks_raw` and `whatsapp_webhooks_failed`;
/// 4. else `wapipe-<namespace>.<name>` and the same with `.failed` (namespaces and names have
///    no dot, so two pipelines never get the same default).
pub fn topic_names(pipeline: &WhatsAppWebhookPipeline) -> (String, String) {
    let status = pipeline.status.as_ref();
    let reconciled_before =
        status.is_some_and(|s| s.topic_created.is_some() || s.partitions.is_some());
    let own = format!(
        "wapipe-{}.{}",
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any()
    );
    let pick = |spec: &str, recorded: Option<&String>, legacy: &str, own: String| {
        if !spec.is_empty() {
            spec.to_string()
        } else if let Some(recorded) = recorded {
            recorded.clone()
        } else if reconciled_before {
            legacy.to_string()
        } else {
            own
        }
    };
    (
        pick(
            &pipeline.spec.topic.name,
            status.and_then(|s| s.topic.as_ref()),
            wapipe_core::DEFAULT_RAW_TOPIC,
            own.clone(),
        ),
        pick(
            &pipeline.spec.dead_letter_topic.name,
            status.and_then(|s| s.dead_letter_topic.as_ref()),
            wapipe_core::DEFAULT_DEAD_LETTER_TOPIC,
            format!("{own}.failed"),
        ),
    )
}

/// The bootstrap list as a set, so `a:9092,b:9092` and `b:9092, a:9092` name the same cluster.
fn bootstrap_key(bootstrap: &str) -> Vec<String> {
    let mut servers: Vec<String> = bootstrap
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    servers.sort();
    servers.dedup();
    servers
}

/// The Kafka cluster id the pipeline's status recorded, if any.
pub fn recorded_cluster_id(pipeline: &WhatsAppWebhookPipeline) -> Option<&str> {
    pipeline
        .status
        .as_ref()
        .and_then(|s| s.kafka_cluster_id.as_deref())
        .filter(|id| !id.is_empty())
}

/// Whether `pipeline` (whose Kafka answered with `cluster_id`, when known) and `other` use the
/// same Kafka cluster: the same cluster id (`kafka.svc:9092` and `kafka.svc.cluster.local:9092`
/// are one cluster), or, while either id is unknown, the same bootstrap list.
pub fn same_cluster(
    pipeline: &WhatsAppWebhookPipeline,
    cluster_id: Option<&str>,
    other: &WhatsAppWebhookPipeline,
) -> bool {
    let mine = cluster_id.or_else(|| recorded_cluster_id(pipeline));
    match (mine, recorded_cluster_id(other)) {
        (Some(mine), Some(theirs)) => mine == theirs,
        _ => {
            bootstrap_key(&pipeline.spec.kafka.bootstrap_servers)
                == bootstrap_key(&other.spec.kafka.bootstrap_servers)
        }
    }
}

/// The topics `pipeline` created, as its status records them. A status written before
/// `createdTopics` existed falls back to the spec's names flagged `topicCreated` /
/// `deadLetterTopicCreated`.
pub fn created_topics(pipeline: &WhatsAppWebhookPipeline) -> Vec<String> {
    let Some(status) = pipeline.status.as_ref() else {
        return Vec::new();
    };
    if let Some(created) = &status.created_topics {
        return created.clone();
    }
    let (topic, dead_letter) = topic_names(pipeline);
    [
        (topic, status.topic_created),
        (dead_letter, status.dead_letter_topic_created),
    ]
    .into_iter()
    .filter(|(_, created)| *created == Some(true))
    .map(|(topic, _)| topic)
    .collect()
}

/// Every topic `pipeline` claims: its spec's two and those it created.
pub fn claimed_topics(pipeline: &WhatsAppWebhookPipeline) -> Vec<String> {
    let (topic, dead_letter) = topic_names(pipeline);
    let mut topics = vec![topic, dead_letter];
    for topic in created_topics(pipeline) {
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    topics
}

fn is_itself(pipeline: &WhatsAppWebhookPipeline, other: &WhatsAppWebhookPipeline) -> bool {
    match (pipeline.uid(), other.uid()) {
        (Some(mine), Some(theirs)) => mine == theirs,
        _ => other.namespace() == pipeline.namespace() && other.name_any() == pipeline.name_any(),
    }
}

/// A claim another pipeline holds on something `pipeline` wants.
#[derive(Debug)]
pub struct Conflict<'a> {
    pub holder: &'a WhatsAppWebhookPipeline,
    /// What is contested, e.g. `topic whatsapp_webhooks_raw`.
    pub what: String,
}

impl Conflict<'_> {
    /// A sentence for the status and the Event.
    pub fn message(&self) -> String {
        format!(
            "pipeline {}/{} already claims {} on the same Kafka cluster",
            self.holder.namespace().unwrap_or_default(),
            self.holder.name_any(),
            self.what
        )
    }
}

/// The older pipeline that claims one of `pipeline`'s topics or its consumer group on the same
/// cluster, if any (a pipeline being deleted still holds its claims). As in Strimzi, the oldest
/// claim wins. Creation times have a resolution of one second; in a tie, a pipeline the operator
/// has admitted (a reconcile got past the claims and recorded `status.topic`) wins over one it
/// has not, then the lexically smaller namespace/name. Being refused does not admit a pipeline,
/// so the order of two pipelines never flips once one of them has been refused.
pub fn conflicting_claim<'a>(
    pipeline: &WhatsAppWebhookPipeline,
    cluster_id: Option<&str>,
    others: &'a [WhatsAppWebhookPipeline],
) -> Option<Conflict<'a>> {
    let rank = |p: &WhatsAppWebhookPipeline| {
        let admitted = p.status.as_ref().is_some_and(|s| s.topic.is_some());
        (
            p.metadata.creation_timestamp.clone().map(|t| t.0),
            !admitted,
            p.namespace().unwrap_or_default(),
            p.name_any(),
        )
    };
    let mine = claimed_topics(pipeline);
    let group = consumer_group(pipeline);
    others
        .iter()
        .filter(|other| !is_itself(pipeline, other))
        .filter(|other| rank(other) < rank(pipeline))
        .filter(|other| same_cluster(pipeline, cluster_id, other))
        .filter_map(|other| {
            let what = claimed_topics(other)
                .into_iter()
                .find(|theirs| mine.contains(theirs))
                .map(|topic| format!("topic {topic}"))
                .or_else(|| {
                    (consumer_group(other) == group).then(|| format!("consumer group {group}"))
                })?;
            Some((
                rank(other),
                Conflict {
                    holder: other,
                    what,
                },
            ))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, conflict)| conflict)
}

/// Another pipeline on the same cluster that claims `topic` (whatever its age, being deleted or
/// not): while one does, `pipeline`'s cleanup must not delete the topic.
pub fn other_claimant<'a>(
    pipeline: &WhatsAppWebhookPipeline,
    topic: &str,
    others: &'a [WhatsAppWebhookPipeline],
) -> Option<&'a WhatsAppWebhookPipeline> {
    others.iter().find(|other| {
        !is_itself(pipeline, other)
            && same_cluster(pipeline, None, other)
            && claimed_topics(other).iter().any(|t| t == topic)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pipeline(name: &str, created: &str, spec: serde_json::Value) -> WhatsAppWebhookPipeline {
        let mut value = json!({
            "apiVersion": "wapipe.dev/v1alpha1", "kind": "WhatsAppWebhookPipeline",
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                         "creationTimestamp": created},
            "spec": {
                "kafka": {"bootstrapServers": "kafka.kafka.svc:9092"},
                "ingress": {"provider": "wasender", "appSecretRef": {"name": "s", "key": "k"}},
                "worker": {},
                // The names the API server wrote into pipelines created before the default
                // came from the pipeline's name: shared by every pipeline of that time.
                "topic": {"name": "whatsapp_webhooks_raw"},
                "deadLetterTopic": {"name": "whatsapp_webhooks_failed"}
            }
        });
        if let (Some(into), serde_json::Value::Object(from)) = (value["spec"].as_object_mut(), spec)
        {
            into.extend(from);
        }
        serde_json::from_value(value).unwrap()
    }

    fn with_cluster_id(mut p: WhatsAppWebhookPipeline, id: &str) -> WhatsAppWebhookPipeline {
        p.status
            .get_or_insert_with(Default::default)
            .kafka_cluster_id = Some(id.into());
        p
    }

    #[test]
    fn two_bootstrap_names_of_one_cluster_are_one_cluster_once_its_id_is_known() {
        let old = with_cluster_id(pipeline("old", "2026-01-01T00:00:00Z", json!({})), "lkc-1");
        let new = pipeline(
            "new",
            "2026-02-01T00:00:00Z",
            json!({"kafka": {"bootstrapServers": "kafka.kafka.svc.cluster.local:9092"}, "worker": {"consumerGroup": "g"}}),
        );
        let others = [old.clone()];
        assert!(
            conflicting_claim(&new, None, &others).is_none(),
            "unknown id: compared by string"
        );
        let conflict = conflicting_claim(&new, Some("lkc-1"), &others).expect("same cluster id");
        assert_eq!(conflict.what, "topic whatsapp_webhooks_raw");
        assert!(conflicting_claim(&new, Some("lkc-2"), &others).is_none());
    }

    #[test]
    fn a_pipeline_being_deleted_still_holds_its_topics_and_wins_against_a_replacement() {
        let mut old = pipeline("old", "2026-01-01T00:00:00Z", json!({}));
        old.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        let new = pipeline(
            "new",
            "2026-02-01T00:00:00Z",
            json!({"worker": {"consumerGroup": "g"}}),
        );
        let others = [old.clone(), new.clone()];
        assert!(conflicting_claim(&new, None, &others).is_some());
        assert_eq!(
            other_claimant(&old, "whatsapp_webhooks_raw", &others).map(|p| p.name_any()),
            Some("new".into()),
            "the replacement's claim keeps the old cleanup from deleting the topic"
        );
    }

    #[test]
    fn pipelines_left_at_the_default_topics_get_their_own_and_never_collide() {
        let mut orders = pipeline("orders", "2026-01-01T00:00:00Z", json!({}));
        let mut billing = pipeline("billing", "2026-02-01T00:00:00Z", json!({}));
        for p in [&mut orders, &mut billing] {
            p.spec.topic.name.clear();
            p.spec.dead_letter_topic.name.clear();
        }
        assert_eq!(
            topic_names(&orders),
            (
                "wapipe-shop.orders".into(),
                "wapipe-shop.orders.failed".into()
            )
        );
        assert_eq!(
            claimed_topics(&billing),
            ["wapipe-shop.billing", "wapipe-shop.billing.failed"]
        );
        assert!(conflicting_claim(&billing, Some("lkc-1"), &[orders.clone()]).is_none());
        // A pipeline that names its topic keeps it.
        let named = pipeline("named", "2026-03-01T00:00:00Z", json!({}));
        assert_eq!(topic_names(&named).0, "whatsapp_webhooks_raw");
        // One an older operator reconciled on its defaults (between the new CRD and the new
        // operator): its status has the topic's state and no `topic`, so it keeps the old names.
        let status = orders.status.get_or_insert_with(Default::default);
        status.partitions = Some(12);
        status.topic_created = Some(true);
        assert_eq!(
            topic_names(&orders),
            (
                "whatsapp_webhooks_raw".into(),
                "whatsapp_webhooks_failed".into()
            )
        );
        // What the status records wins over every default.
        let status = orders.status.as_mut().unwrap();
        status.topic = Some("whatsapp_webhooks_raw".into());
        status.dead_letter_topic = Some("whatsapp_webhooks_failed".into());
        assert_eq!(topic_names(&orders).1, "whatsapp_webhooks_failed");
        billing.status = Some(crate::crd::PipelineStatus {
            partitions: Some(12),
            topic: Some("wapipe-shop.billing".into()),
            dead_letter_topic: Some("wapipe-shop.billing.failed".into()),
            ..Default::default()
        });
        assert_eq!(topic_names(&billing).0, "wapipe-shop.billing");
    }

    #[test]
    fn in_a_tie_of_creation_times_the_admitted_pipeline_keeps_its_claim() {
        // Created within the same second (the timestamps' resolution): "old" is the one the
        // operator admitted, and being deleted it still holds the topic against "new",
        // although "new" comes first by name.
        let mut old = pipeline("old", "2026-01-01T00:00:00Z", json!({}));
        old.status = Some(crate::crd::PipelineStatus {
            observed_generation: Some(1),
            topic: Some(topic_names(&old).0),
            ..Default::default()
        });
        old.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        let mut new = pipeline(
            "new",
            "2026-01-01T00:00:00Z",
            json!({"topic": {"name": topic_names(&old).0}, "worker": {"consumerGroup": "g"}}),
        );
        let conflict_of = |new: &WhatsAppWebhookPipeline| {
            let others = [old.clone(), new.clone()];
            assert!(conflicting_claim(&old, None, &others).is_none());
            conflicting_claim(new, None, &others).map(|c| c.holder.name_any())
        };
        assert_eq!(conflict_of(&new).as_deref(), Some("old"));
        // The refusal is written with an observed generation: "new" is reconciled now, but
        // not admitted, and the next reconcile refuses it again instead of handing it the topic.
        new.status = Some(crate::crd::PipelineStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        assert_eq!(conflict_of(&new).as_deref(), Some("old"));
    }

    #[test]
    fn same_named_pipelines_in_two_namespaces_get_two_default_groups() {
        let shop = pipeline("orders", "2026-01-01T00:00:00Z", json!({}));
        let mut billing = pipeline(
            "orders",
            "2026-02-01T00:00:00Z",
            json!({"topic": {"name": "billing_raw"}, "deadLetterTopic": {"name": "billing_failed"}}),
        );
        billing.metadata.namespace = Some("billing".into());
        assert_eq!(consumer_group(&shop), "wapipe-shop.orders");
        assert_eq!(consumer_group(&billing), "wapipe-billing.orders");
        assert!(conflicting_claim(&billing, Some("lkc-1"), &[shop]).is_none());
    }

    #[test]
    fn an_existing_pipeline_keeps_the_group_it_already_uses() {
        let mut recorded = pipeline("orders", "2026-01-01T00:00:00Z", json!({}));
        let mut legacy = recorded.clone();
        recorded.status = Some(crate::crd::PipelineStatus {
            consumer_group: Some("wapipe-orders".into()),
            ..Default::default()
        });
        assert_eq!(consumer_group(&recorded), "wapipe-orders", "as recorded");
        // Reconciled by an operator that recorded no group: its default, the group in use.
        legacy.status = Some(crate::crd::PipelineStatus {
            topic_created: Some(true),
            partitions: Some(12),
            ..Default::default()
        });
        assert_eq!(consumer_group(&legacy), "wapipe-orders");
        // Only refused so far (conditions, no topic state): still a new pipeline.
        legacy.status = Some(crate::crd::PipelineStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        assert_eq!(consumer_group(&legacy), "wapipe-shop.orders");
    }

    #[test]
    fn a_shared_consumer_group_is_a_conflict_even_with_other_topics() {
        let old = pipeline(
            "old",
            "2026-01-01T00:00:00Z",
            json!({"worker": {"consumerGroup": "orders"}}),
        );
        let new = pipeline(
            "new",
            "2026-02-01T00:00:00Z",
            json!({"topic": {"name": "t2"}, "deadLetterTopic": {"name": "t2-dlq"},
                   "worker": {"consumerGroup": "orders"}}),
        );
        let others = [old];
        let conflict = conflicting_claim(&new, None, &others).expect("group claimed");
        assert_eq!(conflict.what, "consumer group orders");
    }

    #[test]
    fn created_topics_are_the_recorded_names_not_the_spec_after_a_rename() {
        let mut renamed = pipeline(
            "p",
            "2026-01-01T00:00:00Z",
            json!({"topic": {"name": "adopted"}}),
        );
        let status = renamed.status.get_or_insert_with(Default::default);
        status.topic_created = Some(true);
        status.created_topics = Some(vec!["original".into()]);
        assert_eq!(created_topics(&renamed), ["original"]);
        assert_eq!(
            claimed_topics(&renamed),
            ["adopted", "whatsapp_webhooks_failed", "original"]
        );
        // A status from before createdTopics: the flags still count.
        renamed.status.as_mut().unwrap().created_topics = None;
        assert_eq!(created_topics(&renamed), ["adopted"]);
    }
}
