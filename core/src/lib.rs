//! Code shared by the ingress, the worker and the tools: the contract of a record on the raw
//! topic (headers, event kinds, providers), splitting a provider's POST into single-event
//! records with their partition keys, and webhook signature checks.
#![forbid(unsafe_code)]

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod record;
pub mod signature;
pub mod split;

pub use record::{EventKind, Provider, Record};

/// Default name of the topic that receives one record per webhook event.
pub const DEFAULT_RAW_TOPIC: &str = "whatsapp_webhooks_raw";
/// Default name of the dead-letter topic.
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "whatsapp_webhooks_failed";
