//! The pipeline's children in the API server (`ChildScope`): reading one before it is applied
//! (never taking over an object this pipeline does not control), applying them with server-side
//! apply, deleting one; the status write and the finalizer list.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{PipelineStatus, WhatsAppWebhookPipeline, FINALIZER};
use crate::error::{Error, Result};
use crate::status;

pub(crate) fn has_finalizer(pipeline: &WhatsAppWebhookPipeline) -> bool {
    pipeline.finalizers().iter().any(|f| f == FINALIZER)
}

pub(crate) async fn set_finalizers(
    client: &Client,
    pipeline: &WhatsAppWebhookPipeline,
    finalizers: Vec<String>,
) -> Result<()> {
    let api: Api<WhatsAppWebhookPipeline> =
        Api::namespaced(client.clone(), &pipeline.namespace().unwrap_or_default());
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

/// What a child of a pipeline is to the API: a namespaced object of a kind known at compile
/// time, read and written as JSON.
pub(crate) trait Child:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Child for K where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// The kind of a child, as a static name for errors.
fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "Deployment" => "Deployment",
        "Service" => "Service",
        "PodDisruptionBudget" => "PodDisruptionBudget",
        "Ingress" => "Ingress",
        _ => "object",
    }
}

/// A pipeline's children in its namespace: each is read before it is applied (never taking
/// over an object the pipeline does not control), applied, or deleted, always on behalf of the
/// pipeline with `pipeline_uid`.
pub(crate) struct ChildScope<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub pipeline_uid: &'a str,
}

impl ChildScope<'_> {
    /// Reads the child `object` would be applied over: none, or one this pipeline controls, may be
    /// applied; anything else is a [`Error::ChildNotOwned`] (force-applying over it would take its
    /// fields, and the owner reference would then have it garbage-collected with the pipeline).
    pub(crate) async fn check<K>(&self, object: &K, condition: status::ConditionType) -> Result<()>
    where
        K: Child,
    {
        let (client, namespace, pipeline_uid) = (self.client, self.namespace, self.pipeline_uid);
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
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

    /// Applies `object` under [`crate::FIELD_MANAGER`]; `condition` is the one a refusal concerns.
    pub(crate) async fn apply<K>(&self, object: &K, condition: status::ConditionType) -> Result<K>
    where
        K: Child + serde::Serialize,
    {
        let (client, namespace) = (self.client, self.namespace);
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
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
        .map_err(|source| Error::ApplyChild {
            kind,
            name,
            condition,
            source,
        })
    }

    /// Deletes the child `name` of kind `K` if, and only if, the pipeline with `pipeline_uid`
    /// controls it, with that object's uid as a precondition (a same-named object made since is
    /// someone else's), and `params`' propagation. Gone already is fine. Says whether a child of
    /// the pipeline was there: its deletion asked for, or it was replaced meanwhile (look again).
    pub(crate) async fn delete<K>(
        &self,
        name: &str,
        params: kube::api::DeleteParams,
    ) -> Result<bool>
    where
        K: Child,
    {
        let (client, namespace, pipeline_uid) = (self.client, self.namespace, self.pipeline_uid);
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        let failed = |source| Error::DeleteChild {
            name: name.to_string(),
            source,
        };
        let Some(existing) = api.get_opt(name).await.map_err(failed)? else {
            return Ok(false);
        };
        if !controlled_by(existing.meta(), pipeline_uid) {
            return Ok(false);
        }
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: existing.meta().uid.clone(),
                resource_version: None,
            }),
            ..params
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            // The uid precondition failed: it was replaced since it was read.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(true),
            Err(source) => Err(failed(source)),
        }
    }
}

/// Whether `meta` names the object with `uid` as its controller.
pub(crate) fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| owner.controller == Some(true) && owner.uid == uid)
}

/// Who controls an object, in words, for a conflict message.
fn holder_of(meta: &ObjectMeta) -> String {
    meta.owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| format!("controlled by {} {}", owner.kind, owner.name))
        .unwrap_or_else(|| "no controller".into())
}

/// Writes the pipeline's status; condition messages have any URL's credentials redacted. A
/// status equal to the one the pipeline already has is not sent (an idle pipeline's poll costs
/// no write).
pub(crate) async fn write_status(
    client: &Client,
    pipeline: &WhatsAppWebhookPipeline,
    mut status: PipelineStatus,
) -> Result<()> {
    for condition in &mut status.conditions {
        condition.message = crate::services::shown(&condition.message);
    }
    if pipeline.status.as_ref() == Some(&status) {
        // Nothing changed since the status this reconcile started from: no request.
        return Ok(());
    }
    let api: Api<WhatsAppWebhookPipeline> =
        Api::namespaced(client.clone(), &pipeline.namespace().unwrap_or_default());
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
