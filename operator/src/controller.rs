//! The reconciler: fetch → validate (pure) → topic → build (pure) → apply → scale → status.
//!
//! Children are applied with server-side apply under [`crate::FIELD_MANAGER`]; the worker
//! Deployment's `spec.replicas` is written separately under [`crate::SCALER_FIELD_MANAGER`], so
//! the template apply never fights the scaler. Topics live outside Kubernetes, so deleting them
//! (only under `deletionPolicy: Delete`, only topics the operator created) goes through a
//! finalizer.
//!
//! This file is the reconcile loop itself; each step it calls lives beside it: validation in
//! [`crate::validate`], topics in [`crate::topic`], the children in [`crate::build`], Secrets in
//! [`crate::secrets`], the scale step in `scaler::step`, conditions in
//! [`crate::status`] and deletion in [`crate::cleanup`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::build::build;
use crate::claims;
use crate::cleanup::cleanup;
pub use crate::cleanup::{CLEANUP_DEADLINE, SKIP_CLEANUP_ANNOTATION};
use crate::crd::{DeletionPolicy, PipelineStatus, WhatsAppWebhookPipeline, FINALIZER};
use crate::error::{Error, Result};
use crate::kafka::{TopicAdmin, TopicRequest};
use crate::metrics::{Metrics, PipelineLabels};
pub use crate::scaler::step::{offsets_to_keep, OFFSET_KEEPALIVE};
use crate::scaler::step::{scale, ScalerMemory};
#[cfg(doc)]
use crate::secrets::SECRET_REFRESH;
use crate::secrets::{
    check_pod_secrets, forget_kafka_secrets_on_auth_error, forget_secrets_on_spec_change,
    kafka_settings, SecretCache,
};
use crate::status::{self};
use crate::topic::{ensure_topic, ConfigChecked};
pub use crate::topic::{plan_topic, TopicPlan};
use crate::validate::{check_images, validate, Invalid};

/// Shared state of every reconcile.
pub struct Context {
    pub client: Client,
    pub admin: Arc<dyn TopicAdmin>,
    pub recorder: Recorder,
    /// Image for ingress and worker when the spec names none: the operator's own.
    pub default_image: String,
    /// Prefixes an ingress or worker image must start with; empty allows any image.
    pub allowed_image_prefixes: Vec<String>,
    pub metrics: Arc<Metrics>,
    pub(crate) scalers: Mutex<HashMap<String, ScalerMemory>>,
    /// The controller's reflector of every pipeline, once it runs.
    pipelines: std::sync::OnceLock<kube::runtime::reflector::Store<WhatsAppWebhookPipeline>>,
    /// Topics this process created, by pipeline uid: the status says so too, but a reconcile
    /// can start from a cached copy read before that status write arrived, and must not take
    /// its own topic for an adopted one (it would then never delete it).
    pub(crate) created_topics: Mutex<std::collections::HashSet<(String, String)>>,
    /// (pipeline uid, topic) → the generation whose topic configuration was last found in
    /// place, and when: the configuration is read again on a spec change or after
    /// [`CONFIG_RECHECK`], not on every poll.
    pub(crate) config_checked: Mutex<HashMap<(String, String), ConfigChecked>>,
    failures: Mutex<HashMap<String, u32>>,
    /// Secret reads kept between reconciles (see [`crate::secrets`]).
    pub(crate) secrets: SecretCache,
    /// Pipeline uid → the generation its Secrets were last read for: a new one reads them again.
    pub(crate) secrets_read_for: Mutex<HashMap<String, Option<i64>>>,
    /// How long after its deletionTimestamp a pipeline's cleanup is given up.
    pub(crate) cleanup_deadline: Duration,
}

impl Context {
    pub fn new(
        client: Client,
        admin: Arc<dyn TopicAdmin>,
        default_image: impl Into<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: crate::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            admin,
            default_image: default_image.into(),
            allowed_image_prefixes: Vec::new(),
            metrics,
            scalers: Mutex::default(),
            pipelines: std::sync::OnceLock::new(),
            created_topics: Mutex::default(),
            config_checked: Mutex::default(),
            failures: Mutex::default(),
            secrets: SecretCache::default(),
            secrets_read_for: Mutex::default(),
            cleanup_deadline: CLEANUP_DEADLINE,
        }
    }

    /// Reads Secrets again once a read is older than `refresh` ([`SECRET_REFRESH`] by default).
    pub fn with_secret_refresh(mut self, refresh: Duration) -> Self {
        self.secrets = SecretCache::new(refresh);
        self
    }

    /// Gives up a cleanup `deadline` after the deletionTimestamp ([`CLEANUP_DEADLINE`] by
    /// default).
    pub fn with_cleanup_deadline(mut self, deadline: Duration) -> Self {
        self.cleanup_deadline = deadline;
        self
    }

    /// Restricts ingress and worker images to these prefixes (empty: any image).
    pub fn with_allowed_image_prefixes(mut self, prefixes: Vec<String>) -> Self {
        self.allowed_image_prefixes = prefixes
            .into_iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        self
    }
}

/// Now, as a condition's transition time.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn key(pipeline: &WhatsAppWebhookPipeline) -> String {
    format!(
        "{}/{}",
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any()
    )
}

/// Runs the controller until the stream ends (shutdown signal).
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let pipelines = Api::<WhatsAppWebhookPipeline>::all(client.clone());
    let config = watcher::Config::default().any_semantic();
    // Only the children the operator made (they carry the pipeline label): the cluster's other
    // Deployments, Services and PDBs are neither watched nor cached.
    let children = config.clone().labels(crate::build::PIPELINE_LABEL);
    let controller = Controller::new(pipelines, config)
        .owns(Api::<Deployment>::all(client.clone()), children.clone())
        .owns(Api::<Service>::all(client.clone()), children.clone())
        .owns(Api::<PodDisruptionBudget>::all(client), children);
    let _ = ctx.pipelines.set(controller.store());
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                // A pipeline deleted while a reconcile of it was queued: nothing failed.
                Err(error @ kube::runtime::controller::Error::ObjectNotFound(_)) => {
                    tracing::debug!(%error, "pipeline gone before its reconcile")
                }
                Err(error) => warn!(%error, "reconcile failed"),
            }
        })
        .await;
}

/// Transient errors retry with exponential backoff (5 s doubling to 5 min); spec errors wait.
pub fn error_policy(
    pipeline: Arc<WhatsAppWebhookPipeline>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            error: error.metric_label().into(),
        })
        .inc();
    warn!(pipeline = %key(&pipeline), error = %error.message(), "reconcile failed");
    if !error.is_transient() {
        return Action::await_change();
    }
    let mut failures = lock(&ctx.failures);
    let attempts = failures.entry(key(&pipeline)).or_insert(0);
    *attempts = attempts.saturating_add(1);
    let cleanup_left =
        deleting_for(&pipeline).map(|for_| ctx.cleanup_deadline.saturating_sub(for_));
    Action::requeue(retry_delay(*attempts, cleanup_left))
}

/// Delay before retry number `attempt`: [`backoff`], but a pipeline being deleted is tried
/// again just after its cleanup deadline (`cleanup_left` from now) at the latest, so that the
/// backoff its failures built up before the deletion does not hold it (and its namespace)
/// long past the deadline.
pub fn retry_delay(attempt: u32, cleanup_left: Option<Duration>) -> Duration {
    let delay = backoff(attempt);
    match cleanup_left {
        Some(left) => delay.min(left + Duration::from_secs(1)),
        None => delay,
    }
}

/// How long ago the pipeline's deletion began, if it did.
pub(crate) fn deleting_for(pipeline: &WhatsAppWebhookPipeline) -> Option<Duration> {
    let since = pipeline.metadata.deletion_timestamp.as_ref()?;
    let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(since.0);
    Some(Duration::from_secs(
        u64::try_from(elapsed.as_secs()).unwrap_or(0),
    ))
}

/// Delay before retry number `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    wapipe_core::time::doubling_backoff(Duration::from_secs(5), Duration::from_secs(300), attempt)
}

/// Reconciles one pipeline, timing it (`reconcile_duration_seconds`).
pub async fn reconcile(
    pipeline: Arc<WhatsAppWebhookPipeline>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let started = std::time::Instant::now();
    let result = reconcile_once(pipeline, ctx.clone()).await;
    ctx.metrics
        .reconcile_seconds
        .0
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_once(
    pipeline: Arc<WhatsAppWebhookPipeline>,
    ctx: Arc<Context>,
) -> Result<Action> {
    ctx.metrics.reconciliations.inc();
    let action = if pipeline.metadata.deletion_timestamp.is_some() {
        cleanup(&pipeline, &ctx).await?
    } else {
        match apply(&pipeline, &ctx).await {
            Ok(action) => action,
            // The namespace is being deleted and takes no new child: the pipeline's own
            // deletion, which comes next, is what to act on.
            Err(error) if error.is_namespace_terminating() => {
                info!(pipeline = %key(&pipeline), "namespace being deleted; waiting for the pipeline's deletion");
                Action::await_change()
            }
            Err(error) => {
                forget_kafka_secrets_on_auth_error(&ctx, &pipeline, &error);
                if let Err(status_error) = write_failure(&ctx, &pipeline, &error).await {
                    warn!(pipeline = %key(&pipeline), %status_error, "could not record the failure in the status");
                }
                return Err(error);
            }
        }
    };
    lock(&ctx.failures).remove(&key(&pipeline));
    Ok(action)
}

pub(crate) fn created_here(ctx: &Context, pipeline: &WhatsAppWebhookPipeline, topic: &str) -> bool {
    let uid = pipeline.uid().unwrap_or_default();
    lock(&ctx.created_topics).contains(&(uid, topic.to_string()))
}

pub(crate) fn has_finalizer(pipeline: &WhatsAppWebhookPipeline) -> bool {
    pipeline.finalizers().iter().any(|f| f == FINALIZER)
}

pub(crate) async fn set_finalizers(
    pipeline: &WhatsAppWebhookPipeline,
    ctx: &Context,
    finalizers: Vec<String>,
) -> Result<()> {
    let api: Api<WhatsAppWebhookPipeline> = Api::namespaced(
        ctx.client.clone(),
        &pipeline.namespace().unwrap_or_default(),
    );
    // The resourceVersion makes this a compare-and-swap against other writers of the list.
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": pipeline.resource_version(),
    }});
    api.patch(
        &pipeline.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::PatchFinalizers)?;
    Ok(())
}

pub(crate) async fn publish(
    ctx: &Context,
    pipeline: &WhatsAppWebhookPipeline,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    match ctx
        .recorder
        .publish(&event, &pipeline.object_ref(&()))
        .await
    {
        Ok(()) => {}
        // The API server takes no new object in a namespace being deleted, Events included:
        // what the Event said goes to the log instead (a CleanupAbandoned note names the
        // topics left on Kafka).
        Err(kube::Error::Api(status)) if crate::error::namespace_terminating(&status) => {
            warn!(pipeline = %key(pipeline), reason, note = event.note.as_deref().unwrap_or_default(), "namespace being deleted: event not recorded");
        }
        // An event lost is not worth failing the reconcile for.
        Err(error) => warn!(%error, reason, "publishing event failed"),
    }
}

/// Records a failed reconcile in the status: the condition it concerns turns False with the
/// error as message, and Ready follows. Only for failures a person must see (see
/// [`Error::failure_condition`]).
async fn write_failure(
    ctx: &Context,
    pipeline: &WhatsAppWebhookPipeline,
    error: &Error,
) -> Result<()> {
    let Some(failure) = error.failure_condition() else {
        return Ok(());
    };
    publish(
        ctx,
        pipeline,
        EventType::Warning,
        failure.reason.as_str(),
        error.message(),
    )
    .await;
    let previous = pipeline.status.clone().unwrap_or_default();
    let status = status::failed(
        &previous,
        pipeline.metadata.generation,
        failure.condition,
        failure.reason,
        &error.message(),
        &now(),
    );
    write_status(ctx, pipeline, status).await
}

/// The kind of a child, as a static name for errors.
fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "Deployment" => "Deployment",
        "Service" => "Service",
        "PodDisruptionBudget" => "PodDisruptionBudget",
        _ => "object",
    }
}

/// Whether `meta` names the object with `uid` as its controller.
pub(crate) fn controlled_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| owner.controller == Some(true) && owner.uid == uid)
}

/// Who controls an object, in words, for a conflict message.
fn holder_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| format!("controlled by {} {}", owner.kind, owner.name))
        .unwrap_or_else(|| "no controller".into())
}

/// Reads the child `object` would be applied over: none, or one this pipeline controls, may be
/// applied; anything else is a [`Error::ChildNotOwned`] (force-applying over it would take its
/// fields, and the owner reference would then have it garbage-collected with the pipeline).
async fn check_child<K>(
    ctx: &Context,
    pipeline_uid: &str,
    namespace: &str,
    object: &K,
    condition: status::ConditionType,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    let kind = kind_of::<K>();
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|source| Error::ReadChild {
            kind,
            name: name.clone(),
            source,
        })?;
    match existing {
        Some(existing) if !controlled_by(existing.meta(), pipeline_uid) => {
            Err(Error::ChildNotOwned {
                kind,
                name,
                condition,
                holder: holder_of(existing.meta()),
            })
        }
        _ => Ok(()),
    }
}

async fn apply_child<K>(ctx: &Context, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    let kind = kind_of::<K>();
    let mut value = serde_json::to_value(object).map_err(|e| Error::Serialize(kind, e))?;
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    api.patch(
        &name,
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|source| Error::ApplyChild { kind, name, source })
}

async fn write_status(
    ctx: &Context,
    pipeline: &WhatsAppWebhookPipeline,
    status: PipelineStatus,
) -> Result<()> {
    let api: Api<WhatsAppWebhookPipeline> = Api::namespaced(
        ctx.client.clone(),
        &pipeline.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": WhatsAppWebhookPipeline::api_version(&()),
        "kind": WhatsAppWebhookPipeline::kind(&()),
        "status": status,
    });
    api.patch_status(
        &pipeline.name_any(),
        &PatchParams::apply(crate::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::PatchStatus)?;
    Ok(())
}

/// Every pipeline in the cluster: the controller's own cache, or a list call where no controller
/// runs (tests that call reconcile directly).
pub(crate) async fn all_pipelines(ctx: &Context) -> Result<Vec<WhatsAppWebhookPipeline>> {
    Ok(match ctx.pipelines.get() {
        Some(store) => store.state().iter().map(|p| (**p).clone()).collect(),
        None => {
            Api::<WhatsAppWebhookPipeline>::all(ctx.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(Error::ListPipelines)?
                .items
        }
    })
}

/// A pipeline that cannot be reconciled as written: an Event, and its status says why.
async fn refuse(ctx: &Context, pipeline: &WhatsAppWebhookPipeline, invalid: Invalid) -> Result<()> {
    warn!(pipeline = %key(pipeline), reason = %invalid.reason, message = %invalid.message, "cannot reconcile");
    publish(
        ctx,
        pipeline,
        EventType::Warning,
        invalid.reason.as_str(),
        invalid.message.clone(),
    )
    .await;
    let previous = pipeline.status.clone().unwrap_or_default();
    let status = status::invalid(
        &previous,
        pipeline.metadata.generation,
        invalid.reason,
        &invalid.message,
        &now(),
    );
    write_status(ctx, pipeline, status).await
}

/// How soon a pipeline refused for a claim another pipeline holds looks again: the holder's
/// deletion changes nothing in this pipeline, so no change would wake it.
const CONFLICT_RECHECK: Duration = Duration::from_secs(30);

async fn apply(pipeline: &WhatsAppWebhookPipeline, ctx: &Context) -> Result<Action> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    let previous = pipeline.status.clone().unwrap_or_default();
    let others = all_pipelines(ctx).await?;
    let valid = match validate(pipeline, &others, &ctx.default_image)
        .and_then(|valid| check_images(valid, &ctx.allowed_image_prefixes))
    {
        Ok(valid) => valid,
        Err(invalid) => {
            let conflict = invalid.reason == status::Reason::ResourceConflict;
            refuse(ctx, pipeline, invalid).await?;
            // A spec error waits for the next change of the resource.
            return Ok(if conflict {
                Action::requeue(CONFLICT_RECHECK)
            } else {
                Action::await_change()
            });
        }
    };
    // Only a valid pipeline gets the finalizer: its cleanup touches only what it created.
    let wants_finalizer = pipeline.spec.deletion_policy == DeletionPolicy::Delete;
    if wants_finalizer && !has_finalizer(pipeline) {
        let mut finalizers = pipeline.finalizers().to_vec();
        finalizers.push(FINALIZER.into());
        set_finalizers(pipeline, ctx, finalizers).await?;
    }
    let spec = &valid.spec;
    forget_secrets_on_spec_change(ctx, pipeline);
    let kafka = kafka_settings(ctx, &namespace, &spec.kafka).await?;
    check_pod_secrets(ctx, &namespace, spec).await?;

    // Claims again, now by the cluster id Kafka reports: two bootstrap names of one cluster.
    let cluster_id = ctx
        .admin
        .cluster_id(&kafka)
        .await
        .map_err(Error::KafkaClusterId)?;
    if let Some(conflict) = claims::conflicting_claim(pipeline, cluster_id.as_deref(), &others) {
        refuse(
            ctx,
            pipeline,
            Invalid {
                reason: status::Reason::ResourceConflict,
                message: conflict.message(),
            },
        )
        .await?;
        return Ok(Action::requeue(CONFLICT_RECHECK));
    }

    let mut created = claims::created_topics(pipeline);
    let topic = ensure_topic(
        ctx,
        pipeline,
        &kafka,
        TopicRequest::for_pipeline(
            &spec.topic.name,
            spec.topic.partitions,
            spec.topic.replication_factor,
            &spec.topic.config,
            spec.ingress.max_body_bytes,
        ),
        &spec.topic.config,
        created.contains(&spec.topic.name) || created_here(ctx, pipeline, &spec.topic.name),
    )
    .await?;
    let dead_letter = ensure_topic(
        ctx,
        pipeline,
        &kafka,
        TopicRequest::for_pipeline(
            &spec.dead_letter_topic.name,
            spec.dead_letter_topic.partitions,
            spec.dead_letter_topic.replication_factor,
            &spec.dead_letter_topic.config,
            spec.ingress.max_body_bytes,
        ),
        &spec.dead_letter_topic.config,
        created.contains(&spec.dead_letter_topic.name)
            || created_here(ctx, pipeline, &spec.dead_letter_topic.name),
    )
    .await?;
    for (name, outcome) in [
        (&spec.topic.name, &topic),
        (&spec.dead_letter_topic.name, &dead_letter),
    ] {
        if outcome.created && !created.contains(name) {
            created.push(name.clone());
        }
    }

    let children = build(&valid);
    let uid = pipeline.uid().unwrap_or_default();
    {
        use status::ConditionType::{IngressReady, WorkersReady};
        // Every child is checked before any is applied: a conflict leaves nothing half-applied.
        check_child(
            ctx,
            &uid,
            &namespace,
            &children.ingress_deployment,
            IngressReady,
        )
        .await?;
        check_child(
            ctx,
            &uid,
            &namespace,
            &children.ingress_service,
            IngressReady,
        )
        .await?;
        check_child(ctx, &uid, &namespace, &children.ingress_pdb, IngressReady).await?;
        check_child(
            ctx,
            &uid,
            &namespace,
            &children.worker_deployment,
            WorkersReady,
        )
        .await?;
    }
    let ingress = apply_child(ctx, &namespace, &children.ingress_deployment).await?;
    apply_child(ctx, &namespace, &children.ingress_service).await?;
    apply_child(ctx, &namespace, &children.ingress_pdb).await?;
    let worker = apply_child(ctx, &namespace, &children.worker_deployment).await?;

    // Replicas the Deployment asks for now (the API server defaults an unset count to 1).
    let running = worker.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    // Lag that cannot be read (Kafka down, the group's offsets unreadable) does not stop the
    // status: the rest is written, with Scaling=False LagUnavailable, and replicas stay put.
    let (decision, lag_error) = match scale(
        ctx,
        pipeline,
        &valid,
        &kafka,
        u32::try_from(running).unwrap_or(0),
    )
    .await
    {
        Ok(decision) => (decision, None),
        Err(error) => {
            warn!(pipeline = %key(pipeline), error = %error.message(), "reading lag failed; replicas left as they are");
            forget_kafka_secrets_on_auth_error(ctx, pipeline, &error);
            ctx.metrics
                .reconcile_errors
                .get_or_create(&crate::metrics::ErrorLabels {
                    error: error.metric_label().into(),
                })
                .inc();
            (None, Some(error.message()))
        }
    };

    let workers_ready = worker
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let observed = status::Observed {
        generation,
        topic: &topic,
        dead_letter: &dead_letter,
        ingress_available: ingress
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0),
        ingress_replicas: spec.ingress.replicas,
        workers_ready,
        decision: decision.as_ref(),
        lag_error: lag_error.as_deref(),
        consumer_group: &valid.consumer_group,
        created_topics: &created,
        kafka_cluster_id: cluster_id.as_deref(),
    };
    write_status(
        ctx,
        pipeline,
        status::assemble(&previous, &observed, &now()),
    )
    .await?;

    let labels = PipelineLabels {
        namespace: namespace.clone(),
        pipeline: valid.name.clone(),
    };
    ctx.metrics
        .current_workers
        .get_or_create(&labels)
        .set(i64::from(workers_ready));
    Ok(Action::requeue(Duration::from_secs(
        u64::try_from(spec.worker.poll_interval_seconds).unwrap_or(10),
    )))
}
