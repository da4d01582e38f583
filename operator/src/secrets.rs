//! What the operator read from Secrets, kept between reconciles.
//!
//! The chart grants Secrets `get` only (no list, no watch), so the operator cannot be told when
//! a Secret changes. Reading every referenced Secret on every reconcile (every poll interval,
//! for every pipeline) was most of its API traffic; instead each (namespace, name) read is kept
//! and read again when
//! - the pipeline's spec changes (a new generation may name other Secrets or keys),
//! - Kafka refuses the credentials it was built from (see [`crate::kafka::AdminError::is_auth`]),
//! - or it is older than the refresh interval ([`SECRET_REFRESH`] by default),
//!
//! so a rotated password or CA takes effect at the latest one interval later. Reads that fail
//! (a missing Secret, a missing key) are never kept: the next reconcile asks again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use crate::crd::{KafkaSpec, PipelineSpec, SecretKeyRef, WhatsAppWebhookPipeline};
use crate::error::{Error, Result};
use crate::kafka::KafkaConnection;
use crate::status::ConditionType;
use wapipe_core::kafka::CaCertificates;

/// How long a Secret read is trusted before it is read again.
pub const SECRET_REFRESH: Duration = Duration::from_secs(300);

/// A Secret's data as read, by key.
pub type SecretData = BTreeMap<String, Vec<u8>>;

struct Entry {
    data: SecretData,
    read_at: Instant,
}

/// Secret reads by (namespace, name), each trusted for `refresh`.
pub struct SecretCache {
    refresh: Duration,
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl SecretCache {
    pub fn new(refresh: Duration) -> Self {
        SecretCache {
            refresh,
            entries: Mutex::default(),
        }
    }

    /// The data read for `namespace/name`, if it was read less than the refresh interval
    /// before `now`.
    pub fn fresh(&self, namespace: &str, name: &str, now: Instant) -> Option<SecretData> {
        let entries = self.lock();
        let entry = entries.get(&(namespace.to_string(), name.to_string()))?;
        (now.saturating_duration_since(entry.read_at) < self.refresh).then(|| entry.data.clone())
    }

    /// Keeps what was read for `namespace/name` at `now`.
    pub fn store(&self, namespace: &str, name: &str, data: SecretData, now: Instant) {
        let mut entries = self.lock();
        // Nothing is kept past its interval: a Secret no pipeline names any more goes too.
        let refresh = self.refresh;
        entries.retain(|_, entry| now.saturating_duration_since(entry.read_at) < refresh);
        entries.insert(
            (namespace.to_string(), name.to_string()),
            Entry { data, read_at: now },
        );
    }

    /// Drops what was read for `namespace/name`: the next use reads it again.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for SecretCache {
    fn default() -> Self {
        SecretCache::new(SECRET_REFRESH)
    }
}

/// Reads one key of a Secret in `namespace`, needed for the status condition `condition`.
/// A read is kept between reconciles (see [`crate::secrets`]); one missing the key is not.
async fn read_secret(
    client: &kube::Client,
    cache: &SecretCache,
    namespace: &str,
    secret: &SecretKeyRef,
    condition: ConditionType,
) -> Result<String> {
    let now = Instant::now();
    let data = match cache.fresh(namespace, &secret.name, now) {
        Some(data) => data,
        None => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let object = api
                .get(&secret.name)
                .await
                .map_err(|source| Error::ReadSecret {
                    condition,
                    namespace: namespace.into(),
                    name: secret.name.clone(),
                    source,
                })?;
            let data: SecretData = object
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| (key, value.0))
                .collect();
            cache.store(namespace, &secret.name, data.clone(), now);
            data
        }
    };
    match data.get(&secret.key) {
        Some(value) => Ok(String::from_utf8_lossy(value).into_owned()),
        None => {
            // The key may be added at any moment: ask again next time.
            cache.forget(namespace, &secret.name);
            Err(Error::SecretKeyMissing {
                condition,
                namespace: namespace.into(),
                name: secret.name.clone(),
                key: secret.key.clone(),
            })
        }
    }
}

/// The Secrets the operator's own Kafka connection is built from: SASL password and CA.
fn kafka_secret_refs(kafka: &KafkaSpec) -> impl Iterator<Item = &SecretKeyRef> {
    let password = kafka.sasl.as_ref().map(|sasl| &sasl.password_secret_ref);
    let ca = kafka
        .tls
        .as_ref()
        .and_then(|tls| tls.ca_secret_ref.as_ref());
    password.into_iter().chain(ca)
}

/// Every Secret the pipeline references: Kafka's, the ingress's and the sink's.
fn secret_refs(spec: &PipelineSpec) -> impl Iterator<Item = &SecretKeyRef> {
    kafka_secret_refs(&spec.kafka)
        .chain(Some(&spec.ingress.app_secret_ref))
        .chain(spec.ingress.verify_token_ref.as_ref())
        .chain(spec.worker.sink.database_url_secret_ref.as_ref())
        .chain(spec.worker.sink.http_url_secret_ref.as_ref())
}

/// A new generation of the spec reads its Secrets again, whatever was kept; `read_for` is the
/// generation they were last read for, from the pipeline's memory.
pub(crate) fn forget_secrets_on_spec_change(
    cache: &SecretCache,
    read_for: &mut Option<Option<i64>>,
    pipeline: &WhatsAppWebhookPipeline,
) {
    let generation = pipeline.metadata.generation;
    let previous = read_for.replace(generation);
    if previous != Some(generation) {
        let namespace = pipeline.namespace().unwrap_or_default();
        for secret in secret_refs(&pipeline.spec) {
            cache.forget(&namespace, &secret.name);
        }
    }
}

/// Kafka refusing the credentials: the password or CA may have been rotated, read them again.
pub(crate) fn forget_kafka_secrets_on_auth_error(
    cache: &SecretCache,
    pipeline: &WhatsAppWebhookPipeline,
    error: &Error,
) {
    if !error.is_kafka_auth() {
        return;
    }
    let namespace = pipeline.namespace().unwrap_or_default();
    for secret in kafka_secret_refs(&pipeline.spec.kafka) {
        cache.forget(&namespace, &secret.name);
    }
}

/// Checks that the Secrets the ingress and worker pods mount exist with their keys: a pod
/// referencing a missing Secret never starts, and the pipeline should say why.
pub(crate) async fn check_pod_secrets(
    client: &kube::Client,
    cache: &SecretCache,
    namespace: &str,
    spec: &PipelineSpec,
) -> Result<()> {
    let ingress = [
        Some(&spec.ingress.app_secret_ref),
        spec.ingress.verify_token_ref.as_ref(),
    ];
    for secret in ingress.into_iter().flatten() {
        read_secret(
            client,
            cache,
            namespace,
            secret,
            ConditionType::IngressReady,
        )
        .await?;
    }
    let sink = &spec.worker.sink;
    for secret in [&sink.database_url_secret_ref, &sink.http_url_secret_ref]
        .into_iter()
        .flatten()
    {
        read_secret(
            client,
            cache,
            namespace,
            secret,
            ConditionType::WorkersReady,
        )
        .await?;
    }
    Ok(())
}

/// The operator's own Kafka connection for this pipeline (SASL password and CA read from Secrets).
pub(crate) async fn kafka_settings(
    client: &kube::Client,
    cache: &SecretCache,
    namespace: &str,
    kafka: &KafkaSpec,
) -> Result<KafkaConnection> {
    let mut settings = KafkaConnection {
        security_protocol: wapipe_core::kafka::security_protocol(
            kafka.sasl.is_some(),
            kafka.tls.is_some(),
        )
        .map(str::to_string),
        ..KafkaConnection::plaintext(kafka.bootstrap_servers.clone())
    };
    if let Some(sasl) = &kafka.sasl {
        settings.sasl_mechanism = Some(sasl.mechanism.as_str().to_string());
        settings.sasl_username = Some(sasl.username.clone());
        let password = read_secret(
            client,
            cache,
            namespace,
            &sasl.password_secret_ref,
            ConditionType::TopicReady,
        )
        .await?;
        settings.sasl_password = Some(password.trim_end().to_string());
    }
    if let Some(ca) = kafka
        .tls
        .as_ref()
        .and_then(|tls| tls.ca_secret_ref.as_ref())
    {
        settings.ca = Some(CaCertificates::Pem(
            read_secret(client, cache, namespace, ca, ConditionType::TopicReady).await?,
        ));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(value: &str) -> SecretData {
        BTreeMap::from([("password".to_string(), value.as_bytes().to_vec())])
    }

    #[test]
    fn a_read_is_trusted_for_the_refresh_interval_then_read_again() {
        let cache = SecretCache::new(Duration::from_secs(300));
        let t0 = Instant::now();
        assert_eq!(cache.fresh("shop", "kafka-user", t0), None, "never read");
        cache.store("shop", "kafka-user", data("one"), t0);
        let within = t0 + Duration::from_secs(299);
        assert_eq!(cache.fresh("shop", "kafka-user", within), Some(data("one")));
        let past = t0 + Duration::from_secs(300);
        assert_eq!(cache.fresh("shop", "kafka-user", past), None, "stale");
        cache.store("shop", "kafka-user", data("two"), past);
        assert_eq!(cache.fresh("shop", "kafka-user", past), Some(data("two")));
    }

    #[test]
    fn reads_are_kept_per_namespace_and_name_and_forgotten_one_by_one() {
        let cache = SecretCache::default();
        let now = Instant::now();
        cache.store("shop", "kafka-user", data("a"), now);
        cache.store("billing", "kafka-user", data("b"), now);
        cache.store("shop", "wasender", data("c"), now);
        cache.forget("shop", "kafka-user");
        assert_eq!(cache.fresh("shop", "kafka-user", now), None);
        assert_eq!(cache.fresh("billing", "kafka-user", now), Some(data("b")));
        assert_eq!(cache.fresh("shop", "wasender", now), Some(data("c")));
    }

    #[test]
    fn storing_drops_reads_past_their_interval() {
        let cache = SecretCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        cache.store("shop", "old", data("a"), t0);
        let later = t0 + Duration::from_secs(20);
        cache.store("shop", "new", data("b"), later);
        assert_eq!(cache.lock().len(), 1, "the stale read is not kept");
    }
}
