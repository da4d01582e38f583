//! The `WhatsAppWebhookPipeline` custom resource: what a user applies, and the status the
//! operator reports back. Doc comments become the schema descriptions of the generated CRD.

// The printer columns repeat `type_` by design; clippy reads them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Finalizer guarding topic deletion under `deletionPolicy: Delete`.
pub const FINALIZER: &str = "wapipe.dev/topic";

/// Annotation that pauses the scaler: `"true"` freezes the workers at their current count, a
/// number at that count (`"0"` empties the consumer group, e.g. for a replay).
pub const PAUSE_ANNOTATION: &str = "wapipe.dev/pause-scaling";

/// A WhatsApp webhook pipeline: a Kafka topic, an ingress that writes webhooks to it, and a
/// worker pool that consumes it, scaled by consumer-group lag.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "wapipe.dev",
    version = "v1alpha1",
    kind = "WhatsAppWebhookPipeline",
    plural = "whatsappwebhookpipelines",
    shortname = "wapipe",
    shortname = "wwp",
    category = "wapipe",
    namespaced,
    validation = Rule::new("self.metadata.name.size() <= 55 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "metadata.name must be at most 55 characters of lowercase letters, digits and '-', starting with a letter: the pipeline's Service is named <name>-ingress, a DNS label of at most 63 characters"
    ),
    status = "PipelineStatus",
    doc = "A WhatsApp webhook pipeline: Kafka topic, ingress Deployment and lag-autoscaled worker Deployment.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".status.partitions"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        json_path = ".status.currentWorkers"
    ),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.totalLag"),
    printcolumn(
        name = "Delay",
        type_ = "integer",
        json_path = ".status.timeLagSeconds"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredWorkers",
        priority = 1,
        description = "Workers the scaler wants"
    ),
    printcolumn(
        name = "Max",
        type_ = "integer",
        json_path = ".spec.worker.maxReplicas",
        priority = 1,
        description = "Most workers the spec allows (the partitions cap it further)"
    ),
    printcolumn(
        name = "Topic",
        type_ = "string",
        json_path = ".status.topic",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#,
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.topic) || !has(self.deadLetterTopic) || !has(self.topic.name) || !has(self.deadLetterTopic.name) || self.topic.name != self.deadLetterTopic.name",
     "message": "topic.name and deadLetterTopic.name must differ: dead letters would be read again as new events"}
]))]
pub struct PipelineSpec {
    /// How to reach the Kafka cluster. The ingress, the workers and the operator all use it.
    pub kafka: KafkaSpec,
    /// The topic incoming webhook events are written to, one record per event keyed by user.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)",
         "message": "topic.name cannot change (nor be set or removed): the records and the group's offsets stay on the old topic; create another pipeline for another topic"},
        {"rule": "self.partitions >= oldSelf.partitions",
         "message": "topic.partitions can be increased but never decreased: Kafka cannot remove partitions"},
        {"rule": "has(self.replicationFactor) == has(oldSelf.replicationFactor) && (!has(self.replicationFactor) || self.replicationFactor == oldSelf.replicationFactor)",
         "message": "topic.replicationFactor cannot change once the topic exists"}
    ]))]
    pub topic: RawTopicSpec,
    /// The topic events go to after the worker gave up on them.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)",
         "message": "deadLetterTopic.name cannot change (nor be set or removed): the dead letters stay on the old topic; create another pipeline for another topic"},
        {"rule": "self.partitions >= oldSelf.partitions",
         "message": "deadLetterTopic.partitions can be increased but never decreased: Kafka cannot remove partitions"},
        {"rule": "has(self.replicationFactor) == has(oldSelf.replicationFactor) && (!has(self.replicationFactor) || self.replicationFactor == oldSelf.replicationFactor)",
         "message": "deadLetterTopic.replicationFactor cannot change once the topic exists"}
    ]))]
    pub dead_letter_topic: DeadLetterTopicSpec,
    /// The HTTP service that receives the provider's webhooks.
    pub ingress: IngressSpec,
    /// The consumer-group worker pool and its lag-driven scaling.
    pub worker: WorkerSpec,
    /// What happens to the topics when this resource is deleted. `Retain` (default) keeps them;
    /// `Delete` stops the ingress and worker pods, then deletes the topics the operator created
    /// itself (never adopted ones). Deletion never hangs: if Kafka stays unreachable (or the
    /// Secrets to reach it are gone, as when the namespace is being deleted) the operator gives
    /// up 10 minutes after the deletion began and names what it left in a `CleanupAbandoned`
    /// Event; the annotation `wapipe.dev/skip-cleanup: "true"` releases it at once.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Kafka connection settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.sasl) || has(self.tls) || (has(self.sasl.allowWithoutTls) && self.sasl.allowWithoutTls)",
     "message": "kafka.sasl without kafka.tls would send the credentials and every record unencrypted: add kafka.tls, or set kafka.sasl.allowWithoutTls: true to accept that"}
]))]
pub struct KafkaSpec {
    /// Comma-separated `host:port` list of bootstrap brokers.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    /// SASL authentication; omit for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSpec>,
    /// TLS to the brokers; omit for plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// SASL authentication to Kafka.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaslSpec {
    /// SASL mechanism.
    pub mechanism: SaslMechanism,
    /// SASL user name.
    #[schemars(length(min = 1))]
    pub username: String,
    /// Secret key holding the SASL password; mounted into the pods, never copied. The operator
    /// reads it too (to create topics and read lag) and sends it to `bootstrapServers`: whoever
    /// may create a pipeline can have any Secret of its namespace sent to an address they
    /// choose, so creating pipelines is as powerful as reading the Secrets they reference.
    pub password_secret_ref: SecretKeyRef,
    /// Accept SASL without `kafka.tls`. Refused by default: the credentials (with PLAIN, the
    /// password itself) and every record would cross the network unencrypted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_without_tls: bool,
}

/// SASL mechanisms librdkafka supports with a user name and password.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SaslMechanism {
    /// `PLAIN` (use only over TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS to the brokers.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret key holding a PEM CA bundle to verify the brokers; omit to use the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the pipeline's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A topic of the pipeline: the raw events topic ([`RawTopicSpec`]) or the dead-letter topic
/// ([`DeadLetterTopicSpec`]), which differ only in their default partition count,
/// `PARTITIONS`. What may change after creation is checked at admission by the rules on
/// `spec.topic` and `spec.deadLetterTopic`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec<const PARTITIONS: i32> {
    /// Topic name. Default: `wapipe-<namespace>.<name>` of the pipeline for the raw topic,
    /// with `.failed` appended for the dead-letter topic, so two pipelines left at their
    /// defaults on one Kafka cluster get distinct topics. (Pipelines created before this
    /// default kept the names the API server wrote into them then, `whatsapp_webhooks_raw`
    /// and `whatsapp_webhooks_failed`.)
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub name: String,
    /// Number of partitions; the raw topic's is the ceiling on useful workers. It can be
    /// increased (keys then map to other partitions, so per-user order breaks across the
    /// change) but never decreased.
    #[serde(default = "partitions_default::<PARTITIONS>")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: i32,
    /// Replication factor; omit for the broker's default. It cannot be changed later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    pub replication_factor: Option<i32>,
    /// Topic configuration passed to Kafka as is (e.g. `retention.ms`), at creation and on every
    /// later edit (entries set on the topic by other means are kept; a value Kafka refuses shows
    /// as `TopicReady=False`, reason `TopicConfigRefused`). Unless set here, wapipe
    /// adds `max.message.bytes` = the ingress's body limit + 64 KiB (Kafka's ~1 MB default
    /// would refuse Meta's larger bodies) and, when `replicationFactor` is given,
    /// `min.insync.replicas` = replicationFactor − 1 (at least 1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// The raw events topic: 12 partitions unless set.
pub type RawTopicSpec = TopicSpec<12>;
/// The dead-letter topic: 3 partitions unless set.
pub type DeadLetterTopicSpec = TopicSpec<3>;

impl<const PARTITIONS: i32> Default for TopicSpec<PARTITIONS> {
    fn default() -> Self {
        TopicSpec {
            name: String::new(),
            partitions: PARTITIONS,
            replication_factor: None,
            config: BTreeMap::new(),
        }
    }
}

const fn partitions_default<const PARTITIONS: i32>() -> i32 {
    PARTITIONS
}

/// Which provider signs and shapes the webhooks.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Meta WhatsApp Cloud API (`X-Hub-Signature-256`, GET verification handshake).
    #[default]
    Meta,
    /// WASenderApi.
    Wasender,
}

/// The ingress's provider of the same name: what the operator passes it as `--provider`.
impl From<Provider> for wapipe_core::record::Provider {
    fn from(provider: Provider) -> Self {
        match provider {
            Provider::Meta => wapipe_core::record::Provider::Meta,
            Provider::Wasender => wapipe_core::record::Provider::Wasender,
        }
    }
}

/// CPU and memory requests and limits, as Kubernetes quantities.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.requests) || self.requests.all(k, isQuantity(self.requests[k]))",
     "message": "resources.requests values must be Kubernetes quantities, e.g. cpu: 100m, memory: 128Mi"},
    {"rule": "!has(self.limits) || self.limits.all(k, isQuantity(self.limits[k]))",
     "message": "resources.limits values must be Kubernetes quantities, e.g. memory: 256Mi"},
    {"rule": "!has(self.requests) || !has(self.limits) || self.limits.all(k, !(k in self.requests) || !isQuantity(self.limits[k]) || !isQuantity(self.requests[k]) || quantity(self.requests[k]).isLessThan(quantity(self.limits[k])) || quantity(self.requests[k]) == quantity(self.limits[k]))",
     "message": "a resources.requests value must not exceed its limit"}
]))]
pub struct Resources {
    /// Requested resources, e.g. `cpu: 100m`, `memory: 128Mi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 8, "additionalProperties" = {"type": "string", "maxLength": 64}))]
    pub requests: BTreeMap<String, String>,
    /// Resource limits, e.g. `memory: 256Mi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 8, "additionalProperties" = {"type": "string", "maxLength": 64}))]
    pub limits: BTreeMap<String, String>,
}

/// The webhook ingress.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.provider != 'meta' || has(self.verifyTokenRef)",
     "message": "provider meta needs ingress.verifyTokenRef: Meta verifies the webhook URL with a GET handshake that only the right token answers"},
    {"rule": "self.provider == 'meta' || !has(self.verifyTokenRef)",
     "message": "ingress.verifyTokenRef is for provider meta only (WASenderApi has no verification handshake): remove it"}
]))]
pub struct IngressSpec {
    /// Container image running `wapipe-ingress`; defaults to the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Number of ingress pods (not autoscaled). Two or more keep webhooks flowing during a
    /// rollout; a PodDisruptionBudget keeps one available.
    #[serde(default = "default_ingress_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Webhook provider.
    #[serde(default)]
    pub provider: Provider,
    /// Secret key holding the app secret that signs webhook bodies.
    pub app_secret_ref: SecretKeyRef,
    /// Secret key holding the verify token of Meta's GET handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_token_ref: Option<SecretKeyRef>,
    /// Resources of the ingress container. With a memory limit, the ingress's byte budgets
    /// follow it: a sixteenth of the limit for verified bodies awaiting Kafka (503 past it),
    /// half (at most 64 MiB, at least the largest body) for bodies being read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Largest accepted request body in bytes; larger bodies get 413. Omit for the ingress default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_body_bytes: Option<u64>,
    /// An Ingress for the webhook, made and kept by the operator, so the provider reaches
    /// `https://<host>/webhook`. Omit it to route to the Service yourself (see
    /// docs/exposing.md); removing it deletes the Ingress the operator made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<ExposeSpec>,
    /// Settings added to the ingress pods, container and Service: scheduling, identity,
    /// metadata, extra environment, Service type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<crate::template::IngressTemplate>,
}

/// The Ingress the operator makes for the webhook: one rule, `<host>/webhook` to the ingress
/// Service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExposeSpec {
    /// The public host name the provider calls, e.g. `hooks.example.com`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub host: String,
    /// The IngressClass; the cluster's default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// The Secret holding the certificate for `host` (cert-manager writes it when the
    /// `cert-manager.io/cluster-issuer` annotation names an issuer). Meta calls only HTTPS
    /// URLs: without TLS here, the edge in front must terminate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Annotations of the Ingress: the edge's settings (body size, timeouts) and
    /// cert-manager's issuer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Where the worker delivers events.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    /// PostgreSQL (needs `databaseUrlSecretRef`).
    Postgres,
    /// HTTP POST to `httpUrl`.
    Http,
    /// Log each event (for trials).
    #[default]
    Log,
}

impl SinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::Postgres => "postgres",
            SinkType::Http => "http",
            SinkType::Log => "log",
        }
    }
}

/// The worker's sink.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'postgres' || has(self.databaseUrlSecretRef)",
     "message": "sink type postgres needs sink.databaseUrlSecretRef (the Secret key holding the PostgreSQL URL)"},
    {"rule": "self.type == 'postgres' || !has(self.databaseUrlSecretRef)",
     "message": "sink.databaseUrlSecretRef is for sink type postgres only"},
    {"rule": "self.type != 'http' || has(self.httpUrl) || has(self.httpUrlSecretRef)",
     "message": "sink type http needs sink.httpUrl or sink.httpUrlSecretRef"},
    {"rule": "self.type == 'http' || !has(self.httpUrl)",
     "message": "sink.httpUrl is for sink type http only"},
    {"rule": "self.type == 'http' || !has(self.httpUrlSecretRef)",
     "message": "sink.httpUrlSecretRef is for sink type http only"},
    {"rule": "!has(self.httpUrl) || !has(self.httpUrlSecretRef)",
     "message": "sink.httpUrl and sink.httpUrlSecretRef exclude each other: give the URL inline or from a Secret"},
    {"rule": "!has(self.httpUrl) || (isURL(self.httpUrl) && url(self.httpUrl).getScheme() in ['http', 'https'] && url(self.httpUrl).getHostname() != '')",
     "message": "sink.httpUrl must be an absolute http:// or https:// URL with a host, e.g. https://hooks.example.com/whatsapp"}
]))]
pub struct SinkSpec {
    /// Sink kind.
    #[serde(rename = "type", default)]
    pub type_: SinkType,
    /// Secret key holding the PostgreSQL URL (type `postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url_secret_ref: Option<SecretKeyRef>,
    /// URL events are POSTed to (type `http`): `http://` or `https://` with a host. It is
    /// readable by anyone who can read the pipeline: a URL carrying a token or a password
    /// belongs in a Secret (`httpUrlSecretRef`). Logs, conditions and Events show it redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub http_url: Option<String>,
    /// Secret key holding the URL events are POSTed to (type `http`), instead of `httpUrl`:
    /// for a URL that carries a credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_url_secret_ref: Option<SecretKeyRef>,
}

/// The worker pool.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.maxReplicas >= self.minReplicas", "message": "maxReplicas must be at least minReplicas"},
    {"rule": "has(self.consumerGroup) == has(oldSelf.consumerGroup) && (!has(self.consumerGroup) || self.consumerGroup == oldSelf.consumerGroup)",
     "message": "worker.consumerGroup cannot change: a new group would start without the committed offsets of the old one"}
]))]
pub struct WorkerSpec {
    /// Container image running `wapipe-worker`; defaults to the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Kafka consumer group; defaults to `wapipe-<namespace>.<name>`. The group in use is
    /// recorded in `status.consumerGroup` and kept: a pipeline reconciled before the group was
    /// recorded keeps `wapipe-<name>`, the default it was started with. It cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub consumer_group: Option<String>,
    /// Fewest workers. `0` enables scale to zero: no workers while lag is at most
    /// `activationLag`. While at zero the operator commits the group's offsets again every hour,
    /// so Kafka's offset retention (`offsets.retention.minutes`, counted from the last commit of
    /// an empty group) never expires them; a group whose offsets were lost anyway (deleted by
    /// hand) starts again from the earliest retained record: at least once, never skipped.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most workers; the topic's partition count caps it further.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Lag (in offsets) one worker is expected to carry: workers = ceil(lag / lagPerReplica).
    #[serde(default = "default_lag_per_replica")]
    #[schemars(range(min = 1))]
    pub lag_per_replica: i64,
    /// Seconds a lower recommendation must hold before workers are removed.
    #[serde(default = "default_scale_down_window")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_window_seconds: i64,
    /// Seconds between lag polls.
    #[serde(default = "default_poll_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub poll_interval_seconds: i64,
    /// Attempts at an event that fails by its own fault before it is dead-lettered.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: i32,
    /// With `minReplicas: 0`, total lag above this value brings the pool back from zero.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub activation_lag: i64,
    /// Delay target in seconds: the age of the oldest unconsumed record the pool is sized to
    /// keep under. Once a drain rate per worker has been measured (while the group had a
    /// backlog), workers = ceil((arrival rate + lag / maxDelaySeconds) / rate per worker),
    /// bounded by the partitions and `maxReplicas`, replacing `lagPerReplica`, which stays the
    /// rule until a rate is known. Omit to scale on offset lag only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_delay_seconds: Option<i64>,
    /// Where events are delivered.
    #[serde(default)]
    pub sink: SinkSpec,
    /// Resources of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Settings added to the worker pods and container: scheduling, identity, metadata, extra
    /// environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<crate::template::WorkerTemplate>,
}

/// What happens to the topics when the pipeline is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum DeletionPolicy {
    /// Keep the topics and their records.
    #[default]
    Retain,
    /// Delete the topics the operator created (adopted topics are always kept).
    Delete,
}

/// Observed state of a pipeline.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions `Ready`, `TopicReady`, `IngressReady`, `WorkersReady` and `Scaling`, at most
    /// one of each type (a list-map keyed by `type`, as `metav1.Condition` lists are).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Partitions of the topic as last seen on the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Whether the operator created the topics (only then may it delete them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_created: Option<bool>,
    /// Whether the operator created the dead-letter topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic_created: Option<bool>,
    /// Every topic the operator created for this pipeline, by name, kept across edits: under
    /// `deletionPolicy: Delete` these, and only these, are deleted (unless another pipeline
    /// claims one by then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_topics: Option<Vec<String>>,
    /// The id of the Kafka cluster the pipeline's topics live on, as Kafka reports it: claims on
    /// topics and consumer groups are compared by it, not by bootstrap address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_cluster_id: Option<String>,
    /// The consumer group the workers join, recorded when first chosen: a pipeline keeps it for
    /// its whole life, whatever the default for new pipelines becomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// Total consumer-group lag at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_lag: Option<i64>,
    /// Age in seconds of the oldest unconsumed record over every partition (0 when caught up):
    /// how late the pipeline is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_lag_seconds: Option<i64>,
    /// The partition holding that oldest unconsumed record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_partition: Option<i32>,
    /// Records per second the group committed since the previous poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_rate: Option<i64>,
    /// Records per second arriving since the previous poll (drain rate plus lag growth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_rate: Option<i64>,
    /// Records per second one worker drains, measured while the group had a backlog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_rate_per_worker: Option<i64>,
    /// The partitions whose state is not `Ok` (`Lagging`: lag and no progress since the
    /// previous poll; `Stalled`: no progress for several polls), most lag first, at most 20.
    /// Rewritten only when that list of partitions and states changes, so each entry's figures
    /// are those of its latest change of state; the current per-partition figures are in the
    /// metrics (`wapipe_operator_partition_lag`, `wapipe_operator_partition_time_lag_seconds`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_lag: Vec<PartitionLagStatus>,
    /// Where the webhook is served inside the cluster: the ingress Service's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_address: Option<String>,
    /// The public URL of the webhook, when `ingress.expose` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The raw topic in use: `spec.topic.name`, or its default `wapipe-<namespace>.<name>`.
    /// Kept for the pipeline's life, like `consumerGroup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The dead-letter topic in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Workers the scaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_workers: Option<i32>,
    /// Workers the Deployment runs (ready pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_workers: Option<i32>,
}

/// Lag of one partition.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLagStatus {
    /// Partition number.
    pub partition: i32,
    /// Offsets not yet committed by the group.
    pub lag: i64,
    /// `Ok`, `Lagging`, or `Stalled` (committed offset stuck with lag: likely a poison event).
    pub status: String,
    /// Age in seconds of the oldest unconsumed record (0 without lag); absent when not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_lag_seconds: Option<i64>,
    /// Records per second committed here since the previous poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_rate: Option<i64>,
}

/// A status condition in the Kubernetes convention.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
    /// The generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn default_ingress_replicas() -> i32 {
    2
}
fn default_min_replicas() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    12
}
fn default_lag_per_replica() -> i64 {
    1000
}
fn default_scale_down_window() -> i64 {
    300
}
fn default_poll_interval() -> i64 {
    10
}
fn default_max_attempts() -> i32 {
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_a_pipeline_names_is_the_ingress_provider_of_that_name() {
        // The CRD's value (what users write) is passed to the ingress as `--provider`: an
        // ingress that parsed it as another provider would check the wrong signature header.
        for provider in [Provider::Meta, Provider::Wasender] {
            let written = serde_json::to_value(provider).unwrap();
            let ingress = wapipe_core::record::Provider::from(provider);
            assert_eq!(written, ingress.as_str(), "{provider:?}");
            assert_eq!(written.as_str().unwrap().parse(), Ok(ingress));
        }
    }
}
