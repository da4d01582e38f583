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
