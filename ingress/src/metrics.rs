//! Prometheus metrics of the ingress, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// The name of a trusted secret (never its value).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabel {
    pub secret: String,
}

/// A trusted secret or verify token by name, for the gauge of what is loaded.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadedSecretLabels {
    pub kind: String,
    pub secret: String,
}

/// Why a signature was refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// A field (or WASender event) and message type wapipe does not know.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnknownLabels {
    pub field: String,
    pub r#type: String,
}

impl UnknownLabels {
    fn other() -> UnknownLabels {
        UnknownLabels {
            field: "other".into(),
            r#type: "other".into(),
        }
    }
}

/// Distinct (field, type) series the unknown-shape counter keeps; later ones, and names that
/// are long or not plain identifiers, are counted under `other`, so a sender inventing names
/// cannot grow the metrics without bound.
pub const MAX_UNKNOWN_SERIES: usize = 32;

pub struct Metrics {
    registry: Registry,
    /// Events of an unknown field or message type, produced like any other (the sink gets
    /// them as raw JSON), by field and type.
    pub unknown_events: Family<UnknownLabels, Counter>,
    unknown_series: std::sync::Mutex<std::collections::HashSet<UnknownLabels>>,
    pub requests: Family<OutcomeLabel, Counter>,
    pub events: Family<KindLabel, Counter>,
    pub produce_seconds: Histogram,
    pub in_flight: Gauge,
    pub in_flight_bytes: Gauge,
    pub body_reads: Gauge,
    pub body_read_bytes: Gauge,
    pub header_timeouts: Counter,
    /// Requests whose signature matched, by the name of the secret that signed them.
    pub signature_matches: Family<SecretLabel, Counter>,
    /// Requests refused for their signature, by reason.
    pub signature_failures: Family<ReasonLabel, Counter>,
    /// 1 for each secret in use, by kind and name; 0 once removed.
    pub secrets: Family<LoadedSecretLabels, Gauge>,
    secrets_shown: std::sync::Mutex<std::collections::HashSet<LoadedSecretLabels>>,
    /// Reads of the secret files that changed the set (`changed`) or failed (`failed`).
    pub secret_reloads: Family<OutcomeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("wapipe_ingress"),
            unknown_events: Family::default(),
            unknown_series: Default::default(),
            requests: Family::default(),
            events: Family::default(),
            // 1 ms .. ~16 s
            produce_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            in_flight: Gauge::default(),
            in_flight_bytes: Gauge::default(),
            body_reads: Gauge::default(),
            body_read_bytes: Gauge::default(),
            header_timeouts: Counter::default(),
            signature_matches: Family::default(),
            signature_failures: Family::default(),
            secrets: Family::default(),
            secrets_shown: Default::default(),
            secret_reloads: Family::default(),
        };
        let registry = &mut metrics.registry;
        wapipe_core::service::register_process_metrics(registry);
        registry.register(
            "requests",
            "Webhook requests by outcome (ok, unauthorized, unknown_app, too_large, bad_request, body_timeout, body_evicted, unavailable, overloaded, verified, forbidden)",
            metrics.requests.clone(),
        );
        registry.register(
            "events_produced",
            "Events acknowledged by Kafka, by kind",
            metrics.events.clone(),
        );
        registry.register(
            "produce_duration_seconds",
            "Time from handing a request's records to the producer until Kafka acknowledged all of them",
            metrics.produce_seconds.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Signed webhook requests holding a produce permit (out of --max-in-flight)",
            metrics.in_flight.clone(),
        );
        registry.register(
            "in_flight_bytes",
            "Bytes of verified bodies held from their signature check until Kafka answered (out of --max-in-flight-bytes, counted in KiB)",
            metrics.in_flight_bytes.clone(),
        );
        registry.register(
            "body_reads",
            "Webhook requests reading their body, before any signature is checked (out of --max-body-reads)",
            metrics.body_reads.clone(),
        );
        registry.register(
            "body_read_bytes",
            "Bytes held by the bodies being read (out of --max-body-read-bytes)",
            metrics.body_read_bytes.clone(),
        );
        registry.register(
            "header_timeouts",
            "Connections closed because a request's headers did not arrive within --header-read-timeout (idle kept-alive connections included)",
            metrics.header_timeouts.clone(),
        );
        registry.register(
            "unknown_events",
            "Events of a field or message type wapipe does not know, produced whole, by field and type (at most 32 series, then field=\"other\")",
            metrics.unknown_events.clone(),
        );
        registry.register(
            "signature_matches",
            "Webhook requests whose signature matched, by the name of the secret (never its value) that signed them",
            metrics.signature_matches.clone(),
        );
        registry.register(
            "signature_failures",
            "Webhook requests refused for their signature, by reason (missing, missing_prefix, malformed, mismatch)",
            metrics.signature_failures.clone(),
        );
        registry.register(
            "secrets",
            "1 for each app secret (kind=\"signing\") and verify token (kind=\"verify_token\") in use, by name; 0 once removed",
            metrics.secrets.clone(),
        );
        registry.register(
            "secret_reloads",
            "Reads of the secret files that put a changed set in use (changed) or failed and kept the previous set (failed)",
            metrics.secret_reloads.clone(),
        );
        for reason in ["missing", "missing_prefix", "malformed", "mismatch"] {
            let _ = metrics.signature_failures.get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            });
        }
        for outcome in ["changed", "failed"] {
            let _ = metrics.secret_reloads.get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            });
        }
        // Every series exists from the start at 0, so rate() and increase() see the first one.
        let _ = metrics
            .unknown_events
            .get_or_create(&UnknownLabels::other());
        for outcome in [
            "ok",
            "unauthorized",
            "forbidden",
            "too_large",
            "bad_request",
            "unavailable",
            "overloaded",
            "verified",
            "unknown_app",
            "body_timeout",
            "body_evicted",
        ] {
            let _ = metrics.requests.get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            });
        }
        for kind in wapipe_core::EventKind::ALL {
            let _ = metrics.events.get_or_create(&KindLabel {
                kind: kind.as_str().to_string(),
            });
        }
        metrics
    }
}

impl Metrics {
    pub fn request(&self, outcome: &str) {
        self.requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a request signed by the secret named `secret`.
    pub fn signature_matched(&self, secret: &str) {
        self.signature_matches
            .get_or_create(&SecretLabel {
                secret: secret.to_string(),
            })
            .inc();
    }

    /// Counts a request refused for its signature.
    pub fn signature_failed(&self, error: &wapipe_core::signature::SignatureError) {
        use wapipe_core::signature::SignatureError;
        let reason = match error {
            SignatureError::Missing => "missing",
            SignatureError::MissingPrefix => "missing_prefix",
            SignatureError::Malformed => "malformed",
            SignatureError::Mismatch => "mismatch",
        };
        self.signature_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Shows `secrets` as the set in use: 1 for each of its names, 0 for names no longer in it.
    pub fn secrets_loaded(&self, secrets: &crate::Secrets) {
        let loaded: Vec<LoadedSecretLabels> = [
            ("signing", &secrets.signing),
            ("verify_token", &secrets.verify_tokens),
        ]
        .into_iter()
        .flat_map(|(kind, list)| {
            list.iter().map(move |s| LoadedSecretLabels {
                kind: kind.to_string(),
                secret: s.name.clone(),
            })
        })
        .collect();
        // Set the new names before clearing the old, so a scrape never sees none.
        for labels in &loaded {
            self.secrets.get_or_create(labels).set(1);
        }
        // Each signing secret's match counter exists from the start (at 0), so rate() and
        // increase() see a secret's first matches rather than a series appearing late.
        for secret in &secrets.signing {
            let _ = self.signature_matches.get_or_create(&SecretLabel {
                secret: secret.name.clone(),
            });
        }
        let mut shown = self
            .secrets_shown
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for labels in shown.iter().filter(|labels| !loaded.contains(labels)) {
            self.secrets.get_or_create(labels).set(0);
        }
        shown.extend(loaded);
    }

    /// Counts a read of the secret files by outcome (`changed` or `failed`).
    pub fn reloaded(&self, outcome: &str) {
        self.secret_reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts an event of a shape wapipe does not know.
    pub fn unknown_event(&self, shape: &wapipe_core::record::UnknownShape) {
        let plain = |name: &str| {
            !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        let labels = UnknownLabels {
            field: shape.field.clone(),
            r#type: shape.message_type.clone(),
        };
        let labels = if plain(&labels.field) && plain(&labels.r#type) {
            let mut series = self
                .unknown_series
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if series.contains(&labels) || series.len() < MAX_UNKNOWN_SERIES {
                series.insert(labels.clone());
                labels
            } else {
                UnknownLabels::other()
            }
        } else {
            UnknownLabels::other()
        };
        self.unknown_events.get_or_create(&labels).inc();
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wapipe_core::record::UnknownShape;

    fn shape(field: &str, message_type: &str) -> UnknownShape {
        UnknownShape {
            field: field.into(),
            message_type: message_type.into(),
        }
    }

    fn count(metrics: &Metrics, field: &str, r#type: &str) -> u64 {
        metrics
            .unknown_events
            .get_or_create(&UnknownLabels {
                field: field.into(),
                r#type: r#type.into(),
            })
            .get()
    }

    #[test]
    fn unknown_shapes_are_counted_by_field_and_type_in_a_bounded_number_of_series() {
        let metrics = Metrics::default();
        metrics.unknown_event(&shape("messages", "hologram"));
        metrics.unknown_event(&shape("messages", "hologram"));
        metrics.unknown_event(&shape("brand_new_field", "-"));
        assert_eq!(count(&metrics, "messages", "hologram"), 2);
        assert_eq!(count(&metrics, "brand_new_field", "-"), 1);
        // Names that are not plain identifiers, and series past the cap, go to `other`.
        metrics.unknown_event(&shape("messages", "a type with spaces"));
        for i in 0..100 {
            metrics.unknown_event(&shape(&format!("field_{i}"), "-"));
        }
        let series = metrics.unknown_series.lock().unwrap().len();
        assert_eq!(series, MAX_UNKNOWN_SERIES);
        assert_eq!(
            count(&metrics, "other", "other"),
            1 + 100 - (MAX_UNKNOWN_SERIES as u64 - 2)
        );
        let text = wapipe_core::service::encode(metrics.registry()).unwrap();
        assert!(
            text.contains(
                "wapipe_ingress_unknown_events_total{field=\"messages\",type=\"hologram\"} 2"
            ),
            "{text}"
        );
    }
}
