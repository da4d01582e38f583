//! What every reconcile step shares and nothing about one pipeline: the API client, the Kafka
//! admin, the Event recorder, the metrics, the Secret reads and the controller's cache of
//! pipelines. The steps take it, and the pipeline's own [`crate::memory`], as arguments; they
//! never see the controller's context.

use std::sync::{Arc, Mutex, OnceLock};

use kube::api::ListParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::warn;

use crate::crd::WhatsAppWebhookPipeline;
use crate::error::{Error, Result};
use crate::kafka::TopicAdmin;
use crate::metrics::Metrics;
use crate::secrets::SecretCache;
use wapipe_core::redact::redact_urls;

/// The shared half of the controller's context.
pub struct Services {
    pub client: Client,
    pub admin: Arc<dyn TopicAdmin>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Secret reads kept between reconciles (see [`crate::secrets`]).
    pub(crate) secrets: SecretCache,
    /// The namespaces the operator watches; empty for every namespace.
    pub(crate) namespaces: Vec<String>,
    /// The controllers' reflectors of the pipelines they watch (one per watched namespace, or
    /// one for the cluster), once they run.
    pub(crate) pipelines: OnceLock<Vec<Store<WhatsAppWebhookPipeline>>>,
}

impl Services {
    pub fn new(client: Client, admin: Arc<dyn TopicAdmin>, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: crate::FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Services {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            admin,
            metrics,
            secrets: SecretCache::default(),
            namespaces: Vec::new(),
            pipelines: OnceLock::new(),
        }
    }

    /// Where the operator looks: each watched namespace, or `None` for the whole cluster.
    pub(crate) fn scopes(&self) -> Vec<Option<&str>> {
        if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().map(|ns| Some(ns.as_str())).collect()
        }
    }

    /// The pipelines in the controllers' caches, `None` before they run.
    pub(crate) fn cached_pipelines(&self) -> Option<Vec<Arc<WhatsAppWebhookPipeline>>> {
        let stores = self.pipelines.get()?;
        Some(stores.iter().flat_map(|store| store.state()).collect())
    }

    /// Records an Event on the pipeline; its note has any URL's credentials redacted.
    pub(crate) async fn publish(
        &self,
        pipeline: &WhatsAppWebhookPipeline,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(redact_urls(&note)),
            action: "Reconcile".into(),
            secondary: None,
        };
        match self
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

    /// Every pipeline the operator watches (in the cluster, or in its watched namespaces):
    /// the controllers' own caches, or list calls where no controller runs (tests that call
    /// reconcile directly).
    pub(crate) async fn all_pipelines(&self) -> Result<Vec<WhatsAppWebhookPipeline>> {
        if let Some(cached) = self.cached_pipelines() {
            return Ok(cached.iter().map(|p| (**p).clone()).collect());
        }
        let mut all = Vec::new();
        for scope in self.scopes() {
            let api: Api<WhatsAppWebhookPipeline> = scoped_api(&self.client, scope);
            let listed = api
                .list(&ListParams::default())
                .await
                .map_err(Error::ListPipelines)?;
            all.extend(listed.items);
        }
        Ok(all)
    }
}

/// The API of `K` in `namespace`, or across the cluster for `None`.
pub(crate) fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// `what` as text for a log line, a condition or an Event: any URL in it with its credentials
/// redacted (an HTTP sink URL may carry a token; see [`wapipe_core::redact`]).
pub(crate) fn shown(what: &impl std::fmt::Display) -> String {
    redact_urls(&what.to_string())
}

/// `namespace/name` of a pipeline, for logs.
pub(crate) fn key(pipeline: &WhatsAppWebhookPipeline) -> String {
    format!(
        "{}/{}",
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any()
    )
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
