//! The reconciler: fetch → validate (pure) → topic → build (pure) → apply → scale → status.
//!
//! Children are applied with server-side apply under [`crate::FIELD_MANAGER`]; the worker
//! Deployment's `spec.replicas` is written separately under [`crate::SCALER_FIELD_MANAGER`], so
//! the template apply never fights the scaler. Topics live outside Kubernetes, so deleting them
//! (only under `deletionPolicy: Delete`, only topics the operator created) goes through a
//! finalizer.
//!
//! This file is the reconcile loop itself; each step it calls lives beside it and takes what it
//! needs (the shared [`Services`], its own part of the pipeline's memory) and returns values,
//! never this context: validation in [`crate::validate`], topics in [`crate::topic`], the
//! children in [`crate::build`] and [`crate::children`], Secrets in [`crate::secrets`], the
//! scale step in [`crate::scaling`], conditions in [`crate::status`] and deletion in
//! [`crate::cleanup`]. What is remembered about a pipeline between reconciles is one
//! [`crate::memory`] per uid, forgotten with its metric series when the pipeline leaves.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use crate::build::{build, ingress_name};
use crate::children::{has_finalizer, set_finalizers, write_status, ChildScope};
use crate::claims;
use crate::cleanup::{cleanup, deleting_for, Cleanup, CLEANUP_DEADLINE};
use crate::crd::{DeletionPolicy, PipelineStatus, WhatsAppWebhookPipeline, FINALIZER};
use crate::error::{Error, Result};
use crate::kafka::TopicAdmin;
use crate::memory::{Memories, PipelineMemory};
use crate::metrics::{Metrics, PipelineLabels};
use crate::scaling::scale;
#[cfg(doc)]
use crate::secrets::SECRET_REFRESH;
use crate::secrets::{
    check_pod_secrets, forget_kafka_secrets_on_auth_error, forget_secrets_on_spec_change,
    kafka_settings, SecretCache,
};
use crate::services::Services;
use crate::services::{key, scoped_api, shown};
use crate::status::{self, Reason};
use crate::topic::ensure_topic;
use crate::validate::{check_images, validate, Invalid};
use k8s_openapi::api::networking::v1::Ingress;

/// Shared state of every reconcile: the [`Services`] the steps use, each pipeline's memory
/// (see [`crate::memory`]), and the operator's settings.
pub struct Context {
    pub services: Services,
    /// Image for ingress and worker when the spec names none: the operator's own.
    pub default_image: String,
    /// Prefixes an ingress or worker image must start with; empty allows any image.
    pub allowed_image_prefixes: Vec<String>,
    /// One memory per pipeline uid.
    memories: Memories,
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
        Context {
            services: Services::new(client, admin, metrics),
            default_image: default_image.into(),
            allowed_image_prefixes: Vec::new(),
            memories: Memories::default(),
            cleanup_deadline: CLEANUP_DEADLINE,
        }
    }

    /// The operator's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.services.metrics
    }

    /// Reads Secrets again once a read is older than `refresh` ([`SECRET_REFRESH`] by default).
    pub fn with_secret_refresh(mut self, refresh: Duration) -> Self {
        self.services.secrets = SecretCache::new(refresh);
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

    /// Watches only these namespaces (the chart's `watchNamespaces`), reading pipelines,
    /// their children and their Secrets there alone; empty watches every namespace.
    pub fn with_watch_namespaces(mut self, namespaces: Vec<String>) -> Self {
        let mut namespaces: Vec<String> = namespaces
            .into_iter()
            .map(|ns| ns.trim().to_string())
            .filter(|ns| !ns.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        self.services.namespaces = namespaces;
        self
    }

    /// Forgets every pipeline not in `present` (the controller's cache), with its metric
    /// series: a pipeline that left without a cleanup (`Retain` has no finalizer) leaves no
    /// memory and no series behind.
    pub fn forget_departed(&self, present: &[Arc<WhatsAppWebhookPipeline>]) {
        let uids: BTreeSet<String> = present.iter().filter_map(|p| p.uid()).collect();
        self.memories.keep_only(&uids, self.metrics());
    }

    /// How many pipelines the operator remembers.
    pub fn remembered(&self) -> usize {
        self.memories.len()
    }
}

/// Now, as a condition's transition time.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Runs the controllers until their streams end (shutdown signal): one for the cluster, or
/// one per watched namespace.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.services.client.clone();
    let config = watcher::Config::default().any_semantic();
    // Only the children the operator made (they carry the pipeline label): the cluster's other
    // Deployments, Services and PDBs are neither watched nor cached.
    let children = config.clone().labels(crate::build::PIPELINE_LABEL);
    let controllers: Vec<_> = ctx
        .services
        .scopes()
        .into_iter()
        .map(|scope| {
            Controller::new(
                scoped_api::<WhatsAppWebhookPipeline>(&client, scope),
                config.clone(),
            )
            .owns(scoped_api::<Deployment>(&client, scope), children.clone())
            .owns(scoped_api::<Service>(&client, scope), children.clone())
            .owns(
                scoped_api::<PodDisruptionBudget>(&client, scope),
                children.clone(),
            )
        })
        .collect();
    let stores = controllers.iter().map(Controller::store).collect();
    let _ = ctx.services.pipelines.set(stores);
    let runs = controllers.into_iter().map(|controller| {
        controller
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| {
                let ctx = ctx.clone();
                async move {
                    match result {
                        Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                        // A pipeline deleted while a reconcile of it was queued: nothing
                        // failed, and what was remembered about it goes.
                        Err(error @ kube::runtime::controller::Error::ObjectNotFound(_)) => {
                            tracing::debug!(%error, "pipeline gone before its reconcile");
                            let present = ctx.services.cached_pipelines().unwrap_or_default();
                            ctx.forget_departed(&present);
                        }
                        Err(error) => warn!(error = %shown(&wapipe_core::error::with_causes(&error)), "reconcile failed"),
                    }
                }
            })
    });
    futures::future::join_all(runs).await;
}

/// Transient errors retry with exponential backoff (5 s doubling to 5 min, with jitter: see
/// [`retry_delay`]); spec errors wait.
pub fn error_policy(
    pipeline: Arc<WhatsAppWebhookPipeline>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics()
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            error: error.metric_label().into(),
        })
        .inc();
    warn!(pipeline = %key(&pipeline), error = %shown(&error.message()), "reconcile failed");
    if !error.is_transient() {
        return Action::await_change();
    }
    let attempts = ctx.memories.failed(&pipeline.uid().unwrap_or_default());
    let cleanup_left =
        deleting_for(&pipeline).map(|for_| ctx.cleanup_deadline.saturating_sub(for_));
    Action::requeue(retry_delay(attempts, cleanup_left, rand::random::<f64>()))
}

/// Delay before retry number `attempt`: [`backoff`] with jitter, drawn by `chance` in [0, 1)
/// between half the backoff and all of it ("equal jitter"). Fifty pipelines failing together
/// (a Kafka outage) would otherwise retry in lockstep, every time, against a Kafka just coming
/// back. A pipeline being deleted is tried again just after its cleanup deadline (`cleanup_left`
/// from now) at the latest, so that the backoff its failures built up before the deletion does
/// not hold it (and its namespace) long past the deadline.
pub fn retry_delay(attempt: u32, cleanup_left: Option<Duration>, chance: f64) -> Duration {
    let delay = jittered(backoff(attempt), chance);
    match cleanup_left {
        Some(left) => delay.min(left + Duration::from_secs(1)),
        None => delay,
    }
}

/// `delay` scaled to between half of it (`chance` 0) and all of it (`chance` 1).
pub fn jittered(delay: Duration, chance: f64) -> Duration {
    let chance = if chance.is_finite() {
        chance.clamp(0.0, 1.0)
    } else {
        0.0
    };
    delay.mul_f64(0.5 + 0.5 * chance)
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
    ctx.metrics()
        .reconcile_seconds
        .0
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_once(
    pipeline: Arc<WhatsAppWebhookPipeline>,
    ctx: Arc<Context>,
) -> Result<Action> {
    ctx.metrics().reconciliations.inc();
    let uid = pipeline.uid().unwrap_or_default();
    let memory = ctx.memories.of(&pipeline, ctx.metrics());
    let mut memory = memory.lock().await;
    let action = if pipeline.metadata.deletion_timestamp.is_some() {
        let created_here = memory.topics.created.clone();
        drop(memory);
        match cleanup(
            &ctx.services,
            &pipeline,
            &created_here,
            ctx.cleanup_deadline,
        )
        .await?
        {
            Cleanup::Waiting(action) => action,
            Cleanup::Released => {
                ctx.memories.forget(&uid, ctx.metrics());
                return Ok(Action::await_change());
            }
        }
    } else {
        match apply(&pipeline, &ctx, &mut memory).await {
            Ok(action) => action,
            // The namespace is being deleted and takes no new child: the pipeline's own
            // deletion, which comes next, is what to act on.
            Err(error) if error.is_namespace_terminating() => {
                info!(pipeline = %key(&pipeline), "namespace being deleted; waiting for the pipeline's deletion");
                Action::await_change()
            }
            Err(error) => {
                forget_kafka_secrets_on_auth_error(&ctx.services.secrets, &pipeline, &error);
                if let Err(status_error) = write_failure(&ctx.services, &pipeline, &error).await {
                    warn!(pipeline = %key(&pipeline), status_error = %shown(&status_error.message()), "could not record the failure in the status");
                }
                return Err(error);
            }
        }
    };
    ctx.memories.succeeded(&uid);
    Ok(action)
}

/// Records a failed reconcile in the status: the condition it concerns turns False with the
/// error as message, and Ready follows. Only for failures a person must see (see
/// [`Error::failure_condition`]).
async fn write_failure(
    services: &Services,
    pipeline: &WhatsAppWebhookPipeline,
    error: &Error,
) -> Result<()> {
    let Some(failure) = error.failure_condition() else {
        return Ok(());
    };
    let message = error.message();
    let previous = pipeline.status.clone().unwrap_or_default();
    let status = status::failed(
        &previous,
        pipeline.metadata.generation,
        failure.condition,
        failure.reason,
        &message,
        &now(),
    );
    warn_in_status(services, pipeline, failure.reason, message, status).await
}

/// A pipeline that cannot be reconciled as written: an Event, and its status says why.
async fn refuse(
    services: &Services,
    pipeline: &WhatsAppWebhookPipeline,
    invalid: Invalid,
) -> Result<()> {
    warn!(pipeline = %key(pipeline), reason = %invalid.reason, message = %shown(&invalid.message), "cannot reconcile");
    let previous = pipeline.status.clone().unwrap_or_default();
    let status = status::invalid(
        &previous,
        pipeline.metadata.generation,
        invalid.reason,
        &invalid.message,
        &now(),
    );
    warn_in_status(services, pipeline, invalid.reason, invalid.message, status).await
}

/// Publishes a Warning Event with `reason` and `message`, then writes `status`, which says the
/// same.
async fn warn_in_status(
    services: &Services,
    pipeline: &WhatsAppWebhookPipeline,
    reason: Reason,
    message: String,
    status: PipelineStatus,
) -> Result<()> {
    services
        .publish(pipeline, EventType::Warning, reason.as_str(), message)
        .await;
    write_status(&services.client, pipeline, status).await
}

/// How soon a pipeline refused for a claim another pipeline holds looks again: the holder's
/// deletion changes nothing in this pipeline, so no change would wake it.
const CONFLICT_RECHECK: Duration = Duration::from_secs(30);

async fn apply(
    pipeline: &WhatsAppWebhookPipeline,
    ctx: &Context,
    memory: &mut PipelineMemory,
) -> Result<Action> {
    let services = &ctx.services;
    let client = &services.client;
    let namespace = pipeline.namespace().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    let previous = pipeline.status.clone().unwrap_or_default();
    let others = services.all_pipelines().await?;
    let valid = match validate(pipeline, &others, &ctx.default_image)
        .and_then(|valid| check_images(valid, &ctx.allowed_image_prefixes))
    {
        Ok(valid) => valid,
        Err(invalid) => {
            let conflict = invalid.reason == status::Reason::ResourceConflict;
            refuse(services, pipeline, invalid).await?;
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
        set_finalizers(client, pipeline, finalizers).await?;
    }
    let spec = &valid.spec;
    forget_secrets_on_spec_change(&services.secrets, &mut memory.secrets_read_for, pipeline);
    let kafka = kafka_settings(client, &services.secrets, &namespace, &spec.kafka).await?;
    check_pod_secrets(client, &services.secrets, &namespace, spec).await?;

    // Claims again, now by the cluster id Kafka reports: two bootstrap names of one cluster.
    let cluster_id = services
        .admin
        .cluster_id(&kafka)
        .await
        .map_err(Error::KafkaClusterId)?;
    if let Some(conflict) = claims::conflicting_claim(pipeline, cluster_id.as_deref(), &others) {
        refuse(
            services,
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
    // The raw topic, then the dead-letter topic.
    let mut outcomes = Vec::with_capacity(2);
    let spec_configs = [&spec.topic.config, &spec.dead_letter_topic.config];
    for (request, spec_config) in crate::topic::topic_requests(spec)
        .into_iter()
        .zip(spec_configs)
    {
        let name = request.name.clone();
        let recorded = created.contains(&name);
        let outcome = ensure_topic(
            services,
            &mut memory.topics,
            pipeline,
            &kafka,
            request,
            spec_config,
            recorded,
        )
        .await?;
        if outcome.created && !recorded {
            created.push(name);
        }
        outcomes.push(outcome);
    }
    let [topic, dead_letter]: [_; 2] = outcomes
        .try_into()
        .unwrap_or_else(|_| unreachable!("two topic requests, two outcomes"));

    let children = build(&valid);
    let uid = pipeline.uid().unwrap_or_default();
    use status::ConditionType::{IngressReady, WorkersReady};
    let scope = ChildScope {
        client,
        namespace: &namespace,
        pipeline_uid: &uid,
    };
    // Every child is checked before any is applied: a conflict leaves nothing half-applied.
    scope
        .check(&children.ingress_deployment, IngressReady)
        .await?;
    scope.check(&children.ingress_service, IngressReady).await?;
    scope.check(&children.ingress_pdb, IngressReady).await?;
    scope
        .check(&children.worker_deployment, WorkersReady)
        .await?;
    if let Some(route) = &children.webhook_ingress {
        scope.check(route, IngressReady).await?;
    }
    let ingress = scope
        .apply(&children.ingress_deployment, IngressReady)
        .await?;
    scope.apply(&children.ingress_service, IngressReady).await?;
    scope.apply(&children.ingress_pdb, IngressReady).await?;
    match &children.webhook_ingress {
        Some(route) => {
            scope.apply(route, IngressReady).await?;
        }
        // Exposed before (the status has its URL), not any more: the Ingress it made goes.
        None if pipeline.status.as_ref().is_some_and(|s| s.url.is_some()) => {
            let name = ingress_name(&valid.name);
            scope
                .delete::<Ingress>(&name, kube::api::DeleteParams::default())
                .await?;
        }
        None => {}
    }
    let worker = scope
        .apply(&children.worker_deployment, WorkersReady)
        .await?;

    // Replicas the Deployment asks for now (the API server defaults an unset count to 1).
    let running = worker.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    // Lag that cannot be read (Kafka down, the group's offsets unreadable) does not stop the
    // status: the rest is written, with Scaling=False LagUnavailable, and replicas stay put.
    let (decision, lag_error) = match scale(
        services,
        &mut memory.scaler,
        pipeline,
        &valid,
        &kafka,
        u32::try_from(running).unwrap_or(0),
    )
    .await
    {
        Ok(decision) => (decision, None),
        Err(error) => {
            warn!(pipeline = %key(pipeline), error = %shown(&error.message()), "reading lag failed; replicas left as they are");
            forget_kafka_secrets_on_auth_error(&services.secrets, pipeline, &error);
            services
                .metrics
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
        webhook_address: &crate::build::webhook_address(&valid),
        url: crate::build::public_url(&valid),
        topic_name: &valid.spec.topic.name,
        dead_letter_topic_name: &valid.spec.dead_letter_topic.name,
        created_topics: &created,
        kafka_cluster_id: cluster_id.as_deref(),
    };
    write_status(
        client,
        pipeline,
        status::assemble(&previous, &observed, &now()),
    )
    .await?;

    let labels = PipelineLabels {
        namespace: namespace.clone(),
        pipeline: valid.name.clone(),
    };
    services
        .metrics
        .current_workers
        .get_or_create(&labels)
        .set(i64::from(workers_ready));
    Ok(Action::requeue(Duration::from_secs(
        u64::try_from(spec.worker.poll_interval_seconds).unwrap_or(10),
    )))
}
