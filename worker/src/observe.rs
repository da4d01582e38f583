//! What the worker tells the outside world: Prometheus metrics on `/metrics`, liveness on
//! `/healthz` and readiness on `/readyz` (ready while the consumer runs and the sink works).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub kind: String,
    /// `written` or `dead_lettered`.
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// `event` (the event's own fault) or `sink` (the sink was unavailable).
    pub reason: String,
}

/// The worker's metrics.
pub struct Metrics {
    pub events: Family<EventLabels, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub dead_letters: Counter,
    pub processing_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    pub assigned_partitions: Gauge,
    /// Events taken off Kafka and not yet finished (bounded by `--max-buffered`).
    pub buffered_events: Gauge,
    /// Whether fetching is paused because the buffer is full (1) or not (0).
    pub fetch_paused: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wapipe_worker");
        let events = Family::<EventLabels, Counter>::default();
        let retries = Family::<RetryLabels, Counter>::default();
        let dead_letters = Counter::default();
        let processing_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let end_to_end_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let assigned_partitions = Gauge::default();
        let buffered_events = Gauge::default();
        let fetch_paused = Gauge::default();
        registry.register(
            "events",
            "Events handled, by kind and outcome",
            events.clone(),
        );
        registry.register(
            "retries",
            "Attempts that failed and were retried, by whose fault",
            retries.clone(),
        );
        registry.register(
            "dead_letters",
            "Events written to the dead-letter topic",
            dead_letters.clone(),
        );
        registry.register(
            "processing_seconds",
            "Time from taking an event off its queue to finishing it, retries included",
            processing_seconds.clone(),
        );
        registry.register(
            "end_to_end_seconds",
            "Time from the ingress receiving an event to the worker finishing it",
            end_to_end_seconds.clone(),
        );
        registry.register(
            "assigned_partitions",
            "Partitions of the raw topic assigned to this worker",
            assigned_partitions.clone(),
        );
        registry.register(
            "buffered_events",
            "Events taken off Kafka and not yet finished",
            buffered_events.clone(),
        );
        registry.register(
            "fetch_paused",
            "1 while fetching is paused because the buffer is full",
            fetch_paused.clone(),
        );
        // Every series exists from the start at 0, so rate() and increase() see the first one.
        for kind in wapipe_core::EventKind::ALL.iter().map(|k| k.as_str()) {
            for outcome in ["written", "dead_lettered"] {
                let _ = events.get_or_create(&EventLabels {
                    kind: kind.to_string(),
                    outcome: outcome.to_string(),
                });
            }
        }
        for reason in ["event", "sink"] {
            let _ = retries.get_or_create(&RetryLabels {
                reason: reason.to_string(),
            });
        }
        Metrics {
            events,
            retries,
            dead_letters,
            processing_seconds,
            end_to_end_seconds,
            assigned_partitions,
            buffered_events,
            fetch_paused,
            registry,
        }
    }

    pub fn event(&self, kind: &str, outcome: &str) {
        self.events
            .get_or_create(&EventLabels {
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn retry(&self, reason: &str) {
        self.retries
            .get_or_create(&RetryLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Events finished so far (written or dead-lettered), over every kind.
    pub fn finished_events(&self) -> u64 {
        let mut total = 0;
        for kind in wapipe_core::EventKind::ALL
            .iter()
            .map(|k| k.as_str())
            .chain(["unknown"])
        {
            for outcome in ["written", "dead_lettered"] {
                total += self
                    .events
                    .get_or_create(&EventLabels {
                        kind: kind.to_string(),
                        outcome: outcome.to_string(),
                    })
                    .get();
            }
        }
        total
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metrics in the text format `/metrics` serves.
    pub fn encode(&self) -> String {
        wapipe_core::service::encode(&self.registry).unwrap_or_default()
    }
}

/// Liveness and readiness flags.
#[derive(Debug, Default)]
pub struct Health {
    consuming: AtomicBool,
    sink_available: AtomicBool,
}

impl Health {
    pub fn set_consuming(&self, value: bool) {
        self.consuming.store(value, Ordering::Relaxed);
    }

    pub fn set_sink_available(&self, value: bool) {
        self.sink_available.store(value, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.consuming.load(Ordering::Relaxed) && self.sink_available.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    wapipe_core::service::metrics_response(state.metrics.registry())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn readyz_answers_503_until_consuming_with_a_working_sink() {
        let state = AppState {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
        };
        let app = router(state.clone());
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let status = app.clone().oneshot(get("/readyz")).await.unwrap().status();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        state.health.set_consuming(true);
        state.health.set_sink_available(true);
        let status = app.clone().oneshot(get("/readyz")).await.unwrap().status();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            app.clone().oneshot(get("/healthz")).await.unwrap().status(),
            StatusCode::OK
        );
        state.metrics.event("message", "written");
        let response = app.oneshot(get("/metrics")).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("wapipe_worker_events_total{kind=\"message\",outcome=\"written\"} 1"),
            "{text}"
        );
    }
}
