//! The pipeline `wapipe up` runs: a `WhatsAppWebhookPipeline` read from YAML and checked by the
//! operator's own validation, plus what local mode does differently from a cluster (one broker,
//! one ingress, processes instead of pods).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use wapipe_operator::crd::{PipelineSpec, Provider};
use wapipe_operator::scaler::policy::PolicyConfig;
use wapipe_operator::validate::validate;
use wapipe_operator::WhatsAppWebhookPipeline;

/// The pipeline used when `wapipe up` is given no file.
pub const EXAMPLE: &str = include_str!("../../examples/pipeline.yaml");

/// A validated pipeline with the settings local mode needs.
#[derive(Clone, Debug)]
pub struct LocalPipeline {
    pub name: String,
    pub spec: PipelineSpec,
    pub consumer_group: String,
    /// The operator's scaling policy, as the operator would configure it for this resource.
    pub policy: PolicyConfig,
    pub poll_interval: Duration,
    /// What local mode changes or ignores in the spec, to tell the user once at start.
    pub notes: Vec<String>,
}

impl LocalPipeline {
    pub fn provider(&self) -> wapipe_core::Provider {
        match self.spec.ingress.provider {
            Provider::Meta => wapipe_core::Provider::Meta,
            Provider::Wasender => wapipe_core::Provider::Wasender,
        }
    }

    pub fn partitions(&self) -> i32 {
        self.spec.topic.partitions
    }
}

/// Reads `path`, or the bundled example when `None`.
pub fn load(path: Option<&Path>) -> anyhow::Result<LocalPipeline> {
    match path {
        Some(path) => {
            let yaml = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse(&yaml).with_context(|| format!("pipeline {}", path.display()))
        }
        None => parse(EXAMPLE).context("the bundled example pipeline"),
    }
}

/// Parses and validates one `WhatsAppWebhookPipeline` document with the operator's rules.
pub fn parse(yaml: &str) -> anyhow::Result<LocalPipeline> {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).context("not valid YAML")?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    if kind != "WhatsAppWebhookPipeline" || api_version != "wapipe.dev/v1alpha1" {
        bail!(
            "expected apiVersion wapipe.dev/v1alpha1, kind WhatsAppWebhookPipeline; \
             found apiVersion {api_version:?}, kind {kind:?}"
        );
    }
    let mut pipeline: WhatsAppWebhookPipeline =
        serde_yaml::from_value(value).context("the resource does not match the CRD schema")?;
    // Validation wants what the API server would have filled in.
    pipeline
        .metadata
        .namespace
        .get_or_insert_with(|| "default".to_string());
    pipeline
        .metadata
        .uid
        .get_or_insert_with(|| "local".to_string());
    if pipeline.metadata.name.as_deref().is_none_or(str::is_empty) {
        bail!("metadata.name is missing");
    }
    let valid = validate(&pipeline, &[], "local")
        .map_err(|invalid| anyhow::anyhow!("{}: {}", invalid.reason, invalid.message))?;

    let spec = &valid.spec;
    let mut notes = Vec::new();
    if spec.topic.replication_factor.is_some_and(|r| r != 1)
        || spec
            .dead_letter_topic
            .replication_factor
            .is_some_and(|r| r != 1)
    {
        notes.push("replication factor 1 (one local broker)".to_string());
    }
    if spec.topic.config.contains_key("min.insync.replicas")
        || spec
            .dead_letter_topic
            .config
            .contains_key("min.insync.replicas")
    {
        notes.push("min.insync.replicas dropped (one local broker)".to_string());
    }
    if spec.ingress.replicas != 1 {
        notes.push(format!(
            "one ingress process instead of {} replicas",
            spec.ingress.replicas
        ));
    }
    if spec.ingress.template.is_some() || spec.worker.template.is_some() {
        notes.push("template (pod settings) ignored: local processes are not pods".to_string());
    }
    let poll_seconds = u64::try_from(spec.worker.poll_interval_seconds).unwrap_or(1);
    Ok(LocalPipeline {
        name: valid.name.clone(),
        consumer_group: valid.consumer_group.clone(),
        policy: valid.policy.clone(),
        poll_interval: Duration::from_secs(poll_seconds.max(1)),
        spec: valid.spec,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_example_passes_the_operators_validation() {
        let pipeline = parse(EXAMPLE).unwrap();
        assert_eq!(pipeline.name, "local-demo");
        assert_eq!(pipeline.consumer_group, "wapipe-local-demo");
        assert_eq!(pipeline.policy.max_replicas, 4);
        assert_eq!(pipeline.policy.lag_per_replica, 500);
        assert_eq!(pipeline.partitions(), 6);
        assert_eq!(pipeline.poll_interval, Duration::from_secs(2));
    }

    #[test]
    fn the_cluster_examples_parse_and_say_what_local_mode_changes() {
        let yaml = include_str!("../../../examples/meta-postgres.yaml");
        let pipeline = parse(yaml).unwrap();
        assert_eq!(pipeline.consumer_group, "orders-postgres");
        assert!(pipeline.notes.iter().any(|n| n.contains("replication")));
        assert!(pipeline.notes.iter().any(|n| n.contains("min.insync")));
        assert!(pipeline.notes.iter().any(|n| n.contains("template")));
    }

    #[test]
    fn a_pipeline_the_operator_would_refuse_is_refused_with_its_reason() {
        let yaml = EXAMPLE.replace("maxReplicas: 4", "maxReplicas: 0");
        let error = format!("{:#}", parse(&yaml).unwrap_err());
        assert!(error.contains("InvalidSpec"), "{error}");
        let yaml = EXAMPLE.replace("kind: WhatsAppWebhookPipeline", "kind: Deployment");
        let error = format!("{:#}", parse(&yaml).unwrap_err());
        assert!(error.contains("kind"), "{error}");
    }
}
