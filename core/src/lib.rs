//! The domain every wapipe binary shares. Its modules:
//!
//! - [`record`]: the contract of a record on the raw topic (key, headers, event kinds,
//!   providers);
//! - [`split`]: one provider POST into one record per event, each keyed by its user;
//! - [`signature`]: webhook signature checks over the raw body;
//! - [`secret`]: secrets given inline or in a (mounted) file;
//! - [`error`]: an error and its causes on one line, for status conditions, Events and logs;
//! - [`env`](mod@env): the environment variables the binaries read and the operator and `wapipe up`
//!   write;
//! - [`kafka`] (feature `kafka`): Kafka connection settings and client configuration;
//! - [`service`] (feature `service`): what every long-running process does the same way (log
//!   setup, stop signals, the probe endpoints `/healthz`, `/readyz` and `/metrics`);
//! - [`logging`]: whether log lines may carry colour;
//! - [`time`]: clock readings and retry delays.
//!
//! Tooling that only the CLI and tests need (the local Kafka launcher) lives in
//! `wapipe-kafka-local`, outside the production binaries.
#![forbid(unsafe_code)]

pub mod env;
pub mod error;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod logging;
pub mod record;
pub mod redact;
pub mod secret;
#[cfg(feature = "service")]
pub mod service;
pub mod signature;
pub mod split;
pub mod time;

pub use record::{EventKind, Provider, Record};

/// The ingress's default body limit: Meta sends bodies up to 3 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Bytes a Kafka record may need beyond its value (key, headers, batch framing). A topic that
/// takes the ingress's records needs `max.message.bytes` of at least the body limit plus this.
pub const RECORD_OVERHEAD_BYTES: usize = 64 * 1024;
/// `message.max.bytes` of the producers that copy records already in Kafka (dead letters,
/// replays): anything a topic accepted must fit, whatever its own limit.
pub const COPY_MAX_RECORD_BYTES: &str = "33554432";

/// Default name of the topic that receives one record per webhook event.
pub const DEFAULT_RAW_TOPIC: &str = "whatsapp_webhooks_raw";
/// Default name of the dead-letter topic.
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "whatsapp_webhooks_failed";
