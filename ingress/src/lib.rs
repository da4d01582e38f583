//! The ingress: the only part of wapipe the internet talks to.
//!
//! `POST /webhook` verifies the provider's signature over the raw body, splits the POST into one
//! record per event, hands them to Kafka and answers 200 only once every record is
//! acknowledged. `GET /webhook` answers Meta's verification handshake. It makes no database
//! or external API calls: whatever is slow belongs to the worker.
#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
pub mod sink;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::{BodyExt, Limited};
use tokio::sync::Semaphore;
use wapipe_core::signature::{self, constant_time_eq, SignatureError};
use wapipe_core::split::split;
use wapipe_core::Provider;

pub use config::{Config, Secrets};
use metrics::{KindLabel, Metrics};
use sink::{Batch, EventSink, ProduceError};

/// Everything that can go wrong in the ingress, from startup to a single request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing secret: {0}")]
    MissingSecret(&'static str),
    #[error("reading the {what} from {path}: {source}")]
    ReadSecret {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    KafkaConfig(wapipe_core::kafka::KafkaConfigError),
    #[error("creating the Kafka producer: {0}")]
    CreateProducer(rdkafka::error::KafkaError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What a request can be answered with, other than 200.
#[derive(Debug)]
pub enum Rejection {
    Unauthorized(SignatureError),
    Forbidden,
    TooLarge {
        limit: usize,
    },
    /// Kafka refused a record as too large: the topic's or broker's limit is below the
    /// ingress's body limit. Retrying the same body cannot help.
    RecordTooLarge(String),
    BadRequest(String),
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    Overloaded {
        retry_after: Duration,
    },
}

impl Rejection {
    fn outcome(&self) -> &'static str {
        match self {
            Rejection::Unauthorized(_) => "unauthorized",
            Rejection::Forbidden => "forbidden",
            Rejection::TooLarge { .. } | Rejection::RecordTooLarge(_) => "too_large",
            Rejection::BadRequest(_) => "bad_request",
            Rejection::Unavailable { .. } => "unavailable",
            Rejection::Overloaded { .. } => "overloaded",
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, message, retry_after) = match &self {
            Rejection::Unauthorized(e) => (StatusCode::UNAUTHORIZED, e.to_string(), None),
            Rejection::Forbidden => (
                StatusCode::FORBIDDEN,
                "verification failed".to_string(),
                None,
            ),
            Rejection::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body is larger than {limit} bytes"),
                None,
            ),
            Rejection::RecordTooLarge(reason) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{reason}: the topic's max.message.bytes is below the ingress's body limit"
                ),
                None,
            ),
            Rejection::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone(), None),
            Rejection::Unavailable {
                reason,
                retry_after,
            } => (
                StatusCode::SERVICE_UNAVAILABLE,
                reason.clone(),
                Some(*retry_after),
            ),
            Rejection::Overloaded { retry_after } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests in flight".to_string(),
                Some(*retry_after),
            ),
        };
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if let Some(after) = retry_after {
            let seconds = after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// What the handlers share.
pub struct AppState {
    pub provider: Provider,
    pub secrets: Secrets,
    pub sink: Arc<dyn EventSink>,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    pub retry_after: Duration,
    pub fallback_key: String,
    pub in_flight: Arc<Semaphore>,
}

impl AppState {
    pub fn new(config: &Config, secrets: Secrets, sink: Arc<dyn EventSink>) -> AppState {
        AppState {
            provider: config.provider,
            secrets,
            sink,
            metrics: Metrics::default(),
            max_body_bytes: config.max_body_bytes,
            retry_after: config.retry_after,
            fallback_key: config.fallback_key.clone(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        }
    }
}

/// The ingress's routes: `/webhook` (GET handshake, POST events), `/healthz`, `/readyz`,
/// `/metrics`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/webhook", get(handshake).post(receive))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Meta's verification handshake: echo `hub.challenge` when the token matches.
async fn handshake(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let token_matches = match (&state.secrets.verify_token, params.get("hub.verify_token")) {
        (Some(expected), Some(given)) => constant_time_eq(expected, given.as_bytes()),
        _ => false,
    };
    let subscribe = params.get("hub.mode").map(String::as_str) == Some("subscribe");
    match params.get("hub.challenge") {
        Some(challenge) if token_matches && subscribe => {
            state.metrics.request("verified");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                challenge.clone(),
            )
                .into_response()
        }
        _ => {
            state.metrics.request("forbidden");
            Rejection::Forbidden.into_response()
        }
    }
}

/// A webhook POST: verify, split, produce, answer.
async fn receive(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.request("overloaded");
        return Rejection::Overloaded {
            retry_after: state.retry_after,
        }
        .into_response();
    };
    // A guard, so the gauge comes down even when the client goes away mid-request.
    let _counted = InFlight::enter(&state.metrics.in_flight);
    let result = handle_post(&state, request).await;
    match result {
        Ok(events) => {
            state.metrics.request("ok");
            (
                StatusCode::OK,
                Json(serde_json::json!({ "events": events })),
            )
                .into_response()
        }
        Err(rejection) => {
            state.metrics.request(rejection.outcome());
            if let Rejection::Unavailable { reason, .. } = &rejection {
                tracing::warn!(
                    reason,
                    "webhook not acknowledged: answered 503 so the provider retries"
                );
            }
            rejection.into_response()
        }
    }
}

struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn handle_post(state: &AppState, request: Request) -> Result<usize, Rejection> {
    let received_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, state.max_body_bytes).await?;

    match state.provider {
        Provider::Meta => signature::verify_meta(
            &state.secrets.signing,
            &body,
            parts
                .headers
                .get(signature::META_SIGNATURE_HEADER)
                .map(HeaderValue::as_bytes),
        ),
        Provider::Wasender => signature::verify_wasender(
            &state.secrets.signing,
            parts
                .headers
                .get(signature::WASENDER_SIGNATURE_HEADER)
                .map(HeaderValue::as_bytes),
        ),
    }
    .map_err(Rejection::Unauthorized)?;

    let records = split(state.provider, &body, &state.fallback_key);
    let digest = signature::body_sha256(&body);
    let started = Instant::now();
    let produced = state
        .sink
        .produce(Batch {
            provider: state.provider,
            received_at_ms,
            body_sha256: &digest,
            records: &records,
        })
        .await;
    state
        .metrics
        .produce_seconds
        .observe(started.elapsed().as_secs_f64());
    match produced {
        Ok(()) => {
            for record in &records {
                state
                    .metrics
                    .events
                    .get_or_create(&KindLabel {
                        kind: record.kind.to_string(),
                    })
                    .inc();
            }
            Ok(records.len())
        }
        Err(ProduceError::TooLarge(reason)) => {
            tracing::error!(
                %reason,
                "Kafka refused a record as too large: raise the topic's max.message.bytes to the \
                 ingress's --max-body-bytes plus 64 KiB, or lower --max-body-bytes"
            );
            Err(Rejection::RecordTooLarge(reason))
        }
        Err(error) => Err(Rejection::Unavailable {
            reason: match error {
                ProduceError::QueueFull => "the producer queue is full".to_string(),
                other => other.to_string(),
            },
            retry_after: state.retry_after,
        }),
    }
}

/// Reads the body, refusing at once what announces itself as too large and stopping as soon
/// as a body without a length passes the limit.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, Rejection> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Rejection::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(Rejection::TooLarge { limit })
        }
        Err(error) => Err(Rejection::BadRequest(format!("reading the body: {error}"))),
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.sink.is_alive() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the producer hit a fatal error",
        )
            .into_response()
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.sink.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is unreachable or the topic is missing",
        )
            .into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

pub mod server;
