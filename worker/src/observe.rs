//! What the worker tells the outside world: Prometheus metrics on `/metrics`, liveness on
//! `/healthz` (the consumer loop turned within the liveness bound) and readiness on `/readyz`
//! (ready while the consumer runs and the sink works).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use wapipe_core::service::{Probes, Reason};
use wapipe_core::EventKind;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub kind: KindLabel,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub reason: RetryReason,
}

/// The `kind` label: the event's kind, or `unknown` for a record that claims none.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct KindLabel(pub Option<EventKind>);

impl KindLabel {
    pub const ALL: [KindLabel; EventKind::ALL.len() + 1] = {
        let mut all = [KindLabel(None); EventKind::ALL.len() + 1];
        let mut i = 0;
        while i < EventKind::ALL.len() {
            all[i] = KindLabel(Some(EventKind::ALL[i]));
            i += 1;
        }
        all
    };

    pub fn as_str(self) -> &'static str {
        self.0.map_or("unknown", EventKind::as_str)
    }
}

/// How an event was finished.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    Written,
    DeadLettered,
}

impl Outcome {
    pub const ALL: [Outcome; 2] = [Outcome::Written, Outcome::DeadLettered];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::DeadLettered => "dead_lettered",
        }
    }
}

/// Whose fault a retried attempt was.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RetryReason {
    /// The event's own fault.
    Event,
    /// The sink (or the dead-letter topic) was unavailable.
    Sink,
}

impl RetryReason {
    pub const ALL: [RetryReason; 2] = [RetryReason::Event, RetryReason::Sink];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Event => "event",
            RetryReason::Sink => "sink",
        }
    }
}

/// Each label type is written as its `as_str`.
macro_rules! encode_as_str {
    ($($label:ty),*) => {$(
        impl EncodeLabelValue for $label {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}

encode_as_str!(KindLabel, Outcome, RetryReason);

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
        wapipe_core::service::register_process_metrics(&mut registry);
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
        for kind in EventKind::ALL.map(|k| KindLabel(Some(k))) {
            for outcome in Outcome::ALL {
                let _ = events.get_or_create(&EventLabels { kind, outcome });
            }
        }
        for reason in RetryReason::ALL {
            let _ = retries.get_or_create(&RetryLabels { reason });
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

    pub fn event(&self, kind: KindLabel, outcome: Outcome) {
        self.events
            .get_or_create(&EventLabels { kind, outcome })
            .inc();
    }

    /// Counts `events` written, by kind, one counter update per kind of the batch.
    pub fn written(&self, events: &[crate::route::Event]) {
        let mut counts: Vec<(EventKind, u64)> = Vec::new();
        for event in events {
            let kind = event.event_kind();
            match counts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind, 1)),
            }
        }
        for (kind, n) in counts {
            self.events
                .get_or_create(&EventLabels {
                    kind: KindLabel(Some(kind)),
                    outcome: Outcome::Written,
                })
                .inc_by(n);
        }
    }

    pub fn retry(&self, reason: RetryReason) {
        self.retries.get_or_create(&RetryLabels { reason }).inc();
    }

    /// Events finished so far (written or dead-lettered), over every kind.
    pub fn finished_events(&self) -> u64 {
        let mut total = 0;
        for kind in KindLabel::ALL {
            for outcome in Outcome::ALL {
                total += self
                    .events
                    .get_or_create(&EventLabels { kind, outcome })
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

/// How long the consumer loop may go without a turn before `/healthz` fails, unless
/// `--liveness-timeout` says otherwise.
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Liveness and readiness flags.
///
/// Liveness is the consumer loop turning: it marks [`Health::mark_polled`] each time its wait
/// returns (a record, a receive error, the 100 ms offset-store tick, freed buffer space), so it
/// goes stale only when the loop is stuck. The loop never waits for the sink (writes and their
/// retries run on tasks of their own; a full buffer pauses fetching while the tick keeps the
/// loop turning), so a database outage leaves liveness fresh and only readiness fails. The
/// longest legitimate gap is a partition revocation, which waits inside the poll up to
/// `--drain-timeout` plus 10 s for abandoned writes; the bound must be longer (checked at
/// startup).
#[derive(Debug)]
pub struct Health {
    consuming: AtomicBool,
    sink_available: AtomicBool,
    /// Writes now waiting out a sink failure (see [`Health::failing_write`]).
    failing_writes: std::sync::atomic::AtomicUsize,
    started: Instant,
    /// Milliseconds from `started` to the loop's last turn.
    last_poll_ms: AtomicU64,
    liveness_bound: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(DEFAULT_LIVENESS_TIMEOUT)
    }
}

/// `/healthz`'s verdict when the consumer loop has not turned within the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    pub since: Duration,
    pub bound: Duration,
}

impl Health {
    /// Fresh from now: the loop has `liveness_bound` to make its first turn.
    pub fn new(liveness_bound: Duration) -> Health {
        Health {
            consuming: AtomicBool::new(false),
            sink_available: AtomicBool::new(false),
            failing_writes: std::sync::atomic::AtomicUsize::new(0),
            started: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
            liveness_bound,
        }
    }

    /// The consumer loop turned: called each time its wait returns.
    pub fn mark_polled(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_poll_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the consumer loop last turned.
    pub fn since_last_poll(&self) -> Duration {
        let last = Duration::from_millis(self.last_poll_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Alive while the consumer loop turned within the liveness bound.
    pub fn liveness(&self) -> Result<(), Stale> {
        let since = self.since_last_poll();
        if since > self.liveness_bound {
            Err(Stale {
                since,
                bound: self.liveness_bound,
            })
        } else {
            Ok(())
        }
    }

    pub fn set_consuming(&self, value: bool) {
        self.consuming.store(value, Ordering::Relaxed);
    }

    pub fn set_sink_available(&self, value: bool) {
        self.sink_available.store(value, Ordering::Relaxed);
    }

    /// Ready while consuming with a sink that works: the sink was reached and no write is
    /// waiting out a sink failure. A write that waits and is then given up (its partition
    /// handed over) no longer counts, so a worker left with nothing to write is ready again.
    pub fn is_ready(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
            && self.sink_available.load(Ordering::Relaxed)
            && self.failing_writes.load(Ordering::Relaxed) == 0
    }

    /// Marks a write as waiting out a sink failure until the returned guard is dropped
    /// (written, split, dead-lettered or given up: every way out of the write's loop).
    pub fn failing_write(self: &Arc<Self>) -> FailingWrite {
        self.failing_writes.fetch_add(1, Ordering::Relaxed);
        FailingWrite(self.clone())
    }
}

/// A write waiting out a sink failure; see [`Health::failing_write`].
pub struct FailingWrite(Arc<Health>);

impl Drop for FailingWrite {
    fn drop(&mut self) {
        self.0.failing_writes.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the worker's endpoints read: served by [`wapipe_core::service::probe_router`].
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// Alive while the consumer loop turns within the liveness bound; ready while consuming with a
/// sink that works ([`Health::is_ready`]).
impl Probes for AppState {
    fn live(&self) -> Result<(), Reason> {
        self.health.liveness().map_err(|Stale { since, bound }| {
            format!(
                "the consumer loop has not polled Kafka for {} (bound {}): it is stuck",
                whole_ms(since),
                whole_ms(bound)
            )
            .into()
        })
    }

    fn ready(&self) -> Result<(), Reason> {
        if self.health.is_ready() {
            Ok(())
        } else {
            Err("not ready".into())
        }
    }

    fn registry(&self) -> &Registry {
        self.metrics.registry()
    }
}

fn whole_ms(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(duration.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    use wapipe_core::service::probe_router;

    async fn healthz_of(health: Arc<Health>) -> (StatusCode, String) {
        let app = probe_router(Arc::new(AppState {
            metrics: Arc::new(Metrics::new()),
            health,
        }));
        let request = Request::get("/healthz").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn healthz_fails_when_the_consumer_loop_stopped_polling_and_passes_when_it_polls() {
        let health = Arc::new(Health::new(Duration::from_millis(200)));
        // Fresh at start: the loop has the whole bound for its first turn.
        assert_eq!(healthz_of(health.clone()).await.0, StatusCode::OK);
        health.mark_polled();
        assert_eq!(healthz_of(health.clone()).await.0, StatusCode::OK);

        // No turn for longer than the bound: stuck, and the body says so.
        std::thread::sleep(Duration::from_millis(300));
        let (status, body) = healthz_of(health.clone()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body.contains("has not polled Kafka") && body.contains("(bound 200ms)"),
            "{body}"
        );
        assert!(health.liveness().is_err());

        // One turn and it is alive again.
        health.mark_polled();
        let (status, body) = healthz_of(health.clone()).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        assert!(health.since_last_poll() < Duration::from_millis(200));
    }

    #[test]
    fn a_write_waiting_out_a_sink_failure_makes_the_worker_not_ready_until_it_ends_any_way() {
        let health = Arc::new(Health::default());
        health.set_consuming(true);
        health.set_sink_available(true);
        assert!(health.is_ready());
        let first = health.failing_write();
        let second = health.failing_write();
        assert!(!health.is_ready(), "a write waits out a sink failure");
        drop(first);
        assert!(!health.is_ready(), "another one still waits");
        // Given up (its partition handed over) rather than written: the worker, left with
        // nothing to write, must not stay unready for want of a successful write.
        drop(second);
        assert!(health.is_ready());
    }

    #[tokio::test]
    async fn readyz_answers_503_until_consuming_with_a_working_sink() {
        let state = Arc::new(AppState {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
        });
        let app = probe_router(state.clone());
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(&body[..], b"not ready");
        state.health.set_consuming(true);
        state.health.set_sink_available(true);
        let status = app.clone().oneshot(get("/readyz")).await.unwrap().status();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            app.clone().oneshot(get("/healthz")).await.unwrap().status(),
            StatusCode::OK
        );
        state
            .metrics
            .event(KindLabel(Some(EventKind::Message)), Outcome::Written);
        state.metrics.event(KindLabel(None), Outcome::DeadLettered);
        state.metrics.retry(RetryReason::Sink);
        let response = app.oneshot(get("/metrics")).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("wapipe_worker_events_total{kind=\"message\",outcome=\"written\"} 1"),
            "{text}"
        );
        // The typed labels are written as the strings dashboards and alerts name.
        assert!(
            text.contains(
                "wapipe_worker_events_total{kind=\"unknown\",outcome=\"dead_lettered\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("wapipe_worker_retries_total{reason=\"sink\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wapipe_worker_retries_total{reason=\"event\"} 0"),
            "{text}"
        );
    }
}
