//! Pure validation: turns a fetched pipeline (and the other pipelines it may collide with) into a
//! [`ValidPipeline`] with every default resolved, or an [`Invalid`] outcome for the status.
//! Checks the schema cannot express live here; what the schema checks is checked again only where
//! a mistake would be costly (the operator may run against an older CRD).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::claims;
use crate::crd::{PipelineSpec, Provider, SinkType, WhatsAppWebhookPipeline, PAUSE_ANNOTATION};
use crate::scaler::policy::{Pause, PolicyConfig};
use crate::status::Reason;
use crate::template;

/// A pipeline that can be reconciled, with defaults resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidPipeline {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    /// Labels of the resource worth carrying onto children (tracking labels removed).
    pub labels: std::collections::BTreeMap<String, String>,
    pub spec: PipelineSpec,
    pub ingress_image: String,
    pub worker_image: String,
    pub consumer_group: String,
    pub policy: PolicyConfig,
}

/// Why a pipeline cannot be reconciled as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// `InvalidSpec`, `ResourceConflict` or `ImageNotAllowed`.
    pub reason: Reason,
    pub message: String,
}

impl Invalid {
    fn spec(message: impl Into<String>) -> Self {
        Invalid {
            reason: Reason::InvalidSpec,
            message: message.into(),
        }
    }
}

/// Label and annotation keys that belong to the tool that applied the resource, never to children:
/// copying Argo CD's tracking label would make Argo CD prune the children as strays.
pub fn is_tracking_key(key: &str) -> bool {
    key.starts_with("argocd.argoproj.io/")
        || key == "app.kubernetes.io/instance"
        || key.starts_with("kubectl.kubernetes.io/")
}

/// The pause annotation's value: absent, empty or `false` → not paused; `true` → paused at the
/// current count; a number → paused at that count.
pub fn parse_pause(value: Option<&str>) -> Result<Option<Pause>, String> {
    let Some(value) = value.map(str::trim) else {
        return Ok(None);
    };
    match value {
        "" | "false" => Ok(None),
        "true" => Ok(Some(Pause::Current)),
        count => count
            .parse::<u32>()
            .map(|n| Some(Pause::At(n)))
            .map_err(|_| {
                format!(
                "annotation {PAUSE_ANNOTATION}: {count:?} is neither true, false nor a worker count"
            )
            }),
    }
}

/// Validates `pipeline` against its own rules and against `others` (every pipeline in the
/// cluster, itself included or not). `default_image` is the operator's own image.
pub fn validate(
    pipeline: &WhatsAppWebhookPipeline,
    others: &[WhatsAppWebhookPipeline],
    default_image: &str,
) -> Result<ValidPipeline, Invalid> {
    let mut resolved = pipeline.spec.clone();
    (resolved.topic.name, resolved.dead_letter_topic.name) = claims::topic_names(pipeline);
    let spec = &resolved;
    let name = pipeline.name_any();
    let namespace = pipeline
        .namespace()
        .ok_or_else(|| Invalid::spec("the resource has no namespace"))?;
    let owner = pipeline
        .controller_owner_ref(&())
        .ok_or_else(|| Invalid::spec("the resource has no uid yet"))?;

    if !is_child_name_base(&name) {
        return Err(Invalid::spec(format!(
            "name {name:?} must be at most 55 characters of lowercase letters, digits and '-', \
             starting with a letter: the Service {name}-ingress must be a DNS label of at most 63"
        )));
    }
    if spec.kafka.bootstrap_servers.trim().is_empty() {
        return Err(Invalid::spec("kafka.bootstrapServers is empty"));
    }
    if let Some(sasl) = &spec.kafka.sasl {
        if spec.kafka.tls.is_none() && !sasl.allow_without_tls {
            return Err(Invalid::spec(format!(
                "kafka.sasl ({}) without kafka.tls would send the credentials and every record \
                 to the brokers unencrypted; add kafka.tls, or set kafka.sasl.allowWithoutTls: \
                 true to accept that",
                sasl.mechanism.as_str()
            )));
        }
    }
    if spec.topic.name == spec.dead_letter_topic.name {
        return Err(Invalid::spec(format!(
            "topic and deadLetterTopic are both {}",
            spec.topic.name
        )));
    }
    for topic in [&spec.topic.name, &spec.dead_letter_topic.name] {
        if !is_valid_topic_name(topic) {
            return Err(Invalid::spec(format!(
                "{topic:?} is not a valid Kafka topic name"
            )));
        }
    }
    if spec.topic.partitions < 1 || spec.dead_letter_topic.partitions < 1 {
        return Err(Invalid::spec("partitions must be at least 1"));
    }
    let worker = &spec.worker;
    if worker.min_replicas < 0 || worker.max_replicas < 1 {
        return Err(Invalid::spec(
            "worker replicas must be minReplicas ≥ 0, maxReplicas ≥ 1",
        ));
    }
    if worker.max_replicas < worker.min_replicas {
        return Err(Invalid::spec(format!(
            "worker.maxReplicas {} is below worker.minReplicas {}",
            worker.max_replicas, worker.min_replicas
        )));
    }
    if worker.lag_per_replica < 1 || worker.poll_interval_seconds < 1 {
        return Err(Invalid::spec(
            "lagPerReplica and pollIntervalSeconds must be at least 1",
        ));
    }
    match worker.sink.type_ {
        SinkType::Postgres if worker.sink.database_url_secret_ref.is_none() => {
            return Err(Invalid::spec(
                "sink type postgres needs sink.databaseUrlSecretRef",
            ));
        }
        SinkType::Http
            if worker.sink.http_url.is_some() && worker.sink.http_url_secret_ref.is_some() =>
        {
            return Err(Invalid::spec(
                "sink.httpUrl and sink.httpUrlSecretRef exclude each other",
            ));
        }
        SinkType::Http if worker.sink.http_url_secret_ref.is_some() => {}
        SinkType::Http if worker.sink.http_url.as_deref().is_none_or(str::is_empty) => {
            return Err(Invalid::spec(
                "sink type http needs sink.httpUrl or sink.httpUrlSecretRef",
            ));
        }
        SinkType::Http
            if !worker
                .sink
                .http_url
                .as_deref()
                .is_some_and(has_http_scheme_and_host) =>
        {
            return Err(Invalid::spec(
                "sink.httpUrl must be an absolute http:// or https:// URL with a host",
            ));
        }
        _ => {}
    }
    if spec.ingress.provider == Provider::Meta && spec.ingress.verify_token_ref.is_none() {
        return Err(Invalid::spec(
            "provider meta needs ingress.verifyTokenRef for the GET verification handshake",
        ));
    }
    for (component, container) in [
        (
            "ingress",
            spec.ingress
                .template
                .as_ref()
                .and_then(|t| t.container.as_ref()),
        ),
        (
            "worker",
            worker.template.as_ref().and_then(|t| t.container.as_ref()),
        ),
    ] {
        let reserved = template::reserved_env_names(container);
        if !reserved.is_empty() {
            return Err(Invalid::spec(format!(
                "{component}.template.container.env sets {}: names starting with {} are set by \
                 the operator from the spec; use the spec's fields instead",
                reserved.join(", "),
                template::RESERVED_ENV_PREFIX
            )));
        }
    }
    let ingress_image = image_or_default(spec.ingress.image.as_deref(), default_image)
        .ok_or_else(|| Invalid::spec("ingress.image is unset and the operator has no image"))?;
    let worker_image = image_or_default(worker.image.as_deref(), default_image)
        .ok_or_else(|| Invalid::spec("worker.image is unset and the operator has no image"))?;

    // By bootstrap address here; by Kafka's cluster id again once Kafka has answered.
    if let Some(conflict) = claims::conflicting_claim(pipeline, None, others) {
        return Err(Invalid {
            reason: Reason::ResourceConflict,
            message: conflict.message(),
        });
    }

    let labels = pipeline
        .labels()
        .iter()
        .filter(|(key, _)| !is_tracking_key(key) && !key.starts_with("app.kubernetes.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let min_replicas = u32::try_from(worker.min_replicas).unwrap_or(0);
    let policy = PolicyConfig {
        min_replicas,
        max_replicas: u32::try_from(worker.max_replicas).unwrap_or(1),
        lag_per_replica: u64::try_from(worker.lag_per_replica).unwrap_or(1),
        scale_down_window: std::time::Duration::from_secs(
            u64::try_from(worker.scale_down_window_seconds).unwrap_or(0),
        ),
        activation_lag: u64::try_from(worker.activation_lag).unwrap_or(0),
        scale_to_zero: min_replicas == 0,
        max_delay: worker
            .max_delay_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|&s| s > 0)
            .map(std::time::Duration::from_secs),
        pause: parse_pause(
            pipeline
                .annotations()
                .get(PAUSE_ANNOTATION)
                .map(String::as_str),
        )
        .map_err(Invalid::spec)?,
        ..PolicyConfig::default()
    };
    Ok(ValidPipeline {
        consumer_group: claims::consumer_group(pipeline),
        name,
        namespace,
        owner,
        labels,
        spec: spec.clone(),
        ingress_image,
        worker_image,
        policy,
    })
}

/// Refuses a pipeline whose ingress or worker image starts with none of `allowed_prefixes`
/// (the operator's `--allowed-image-prefixes`; empty allows any image): a pipeline must not run
/// an arbitrary image with the pipeline's Secrets mounted.
pub fn check_images(
    valid: ValidPipeline,
    allowed_prefixes: &[String],
) -> Result<ValidPipeline, Invalid> {
    if allowed_prefixes.is_empty() {
        return Ok(valid);
    }
    for (field, image) in [
        ("ingress.image", &valid.ingress_image),
        ("worker.image", &valid.worker_image),
    ] {
        if !allowed_prefixes
            .iter()
            .any(|prefix| image.starts_with(prefix.as_str()))
        {
            return Err(Invalid {
                reason: Reason::ImageNotAllowed,
                message: format!(
                    "{field} {image:?} starts with none of the operator's allowed image prefixes ({})",
                    allowed_prefixes.join(", ")
                ),
            });
        }
    }
    Ok(valid)
}

fn image_or_default(image: Option<&str>, default_image: &str) -> Option<String> {
    match image {
        Some(image) if !image.trim().is_empty() => Some(image.to_string()),
        _ if !default_image.trim().is_empty() => Some(default_image.to_string()),
        _ => None,
    }
}

fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether `name` leaves room for the children's names: `<name>-ingress` is a Service name, a
/// DNS label (RFC 1035) of at most 63 characters.
fn is_child_name_base(name: &str) -> bool {
    name.len() <= 55
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `url` starts with `http://` or `https://` followed by a host.
fn has_http_scheme_and_host(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            && url[scheme.len()..]
                .split(['/', '?', '#'])
                .next()
                .is_some_and(|host| !host.is_empty())
    })
}
