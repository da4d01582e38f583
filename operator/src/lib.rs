//! The wapipe operator: reconciles `WhatsAppWebhookPipeline` resources into a Kafka topic, an
//! ingress Deployment and a worker Deployment whose replicas follow consumer-group lag.
//!
//! The pipeline of one reconcile is fetch → [`validate`] (pure) → [`build`] (pure) → apply →
//! status, as in [`controller`]. The scaling rules live in [`scaler::policy`], free of any
//! Kubernetes type so that the local mode can reuse them.
#![forbid(unsafe_code)]

pub mod budget;
pub mod build;
pub mod children;
pub mod claims;
pub mod cleanup;
pub mod controller;
pub mod crd;
pub mod error;
pub mod kafka;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod probes;
pub mod scaler;
pub mod scaling;
pub mod secrets;
pub mod services;
pub mod status;
pub mod template;
pub mod topic;
pub mod validate;

pub use crd::{PipelineSpec, PipelineStatus, WhatsAppWebhookPipeline};
pub use error::Error;

/// Field manager of everything the reconciler applies.
pub const FIELD_MANAGER: &str = "wapipe-operator";
/// Field manager of the worker Deployment's `spec.replicas`.
pub const SCALER_FIELD_MANAGER: &str = "wapipe-scaler";
