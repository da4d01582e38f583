//! The ingress: the only part of wapipe the internet talks to.
//!
//! `POST /webhook` reads the body in a bounded [`read_stage`], verifies the provider's
//! signature over the raw bytes, and only then takes one of the `--max-in-flight` produce
//! permits and its body's share of the `--max-in-flight-bytes` [`budget`]: splits the POST
//! into one record per event, hands them to Kafka and answers 200 only once every record is
//! acknowledged. `GET /webhook` answers Meta's verification
//! handshake. It makes no database or external API calls: whatever is slow belongs to the
//! worker.
#![forbid(unsafe_code)]

pub mod budget;
pub mod config;
pub mod metrics;
pub mod read_stage;
pub mod secrets;
pub mod sink;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::Semaphore;
use wapipe_core::service::{probe_router, Probes, Reason};
use wapipe_core::signature::{self, SignatureError};
use wapipe_core::split::split;
use wapipe_core::Provider;

use budget::ByteBudget;

pub use config::Config;
use metrics::{KindLabel, Metrics};
use read_stage::{ReadError, ReadStage};
pub use secrets::{NamedSecret, SecretStore, Secrets};
use sink::{Batch, EventSink, ProduceError};

/// Everything that can go wrong in the ingress, from startup to a single request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing secret: {0}")]
    MissingSecret(&'static str),
    #[error("reading the {what} from {path}")]
    ReadSecret {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{count} {what}s given: at most {max} are checked per request")]
    TooManySecrets {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("two {what}s are named {name:?}: names must be unique")]
    DuplicateSecretName { what: &'static str, name: String },
    #[error(transparent)]
    KafkaConfig(wapipe_core::kafka::KafkaConfigError),
    #[error("creating the Kafka producer: {0}")]
    CreateProducer(rdkafka::error::KafkaError),
    #[error("binding {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "--max-body-read-bytes ({budget}) is below --max-body-bytes ({body}): a body of the \
         largest size could never be read"
    )]
    ReadBudgetBelowBodyLimit { budget: usize, body: usize },
}

/// What a request can be answered with, other than 200.
#[derive(Debug)]
pub enum Rejection {
    Unauthorized(SignatureError),
    /// `/webhook/<app>` names no trusted secret.
    UnknownApp(String),
    Forbidden,
    TooLarge {
        limit: usize,
    },
    /// The body did not arrive whole within `--body-read-timeout`.
    BodyTimeout(Duration),
    /// The body was still arriving when newer requests needed its place in the read stage.
    BodyEvicted,
    /// Kafka refused a record as too large: the topic's or broker's limit is below the
    /// ingress's body limit. Retrying the same body cannot help.
    RecordTooLarge(String),
    BadRequest(String),
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    /// Past `--max-in-flight` requests, or `--max-in-flight-bytes` of bodies.
    Overloaded {
        reason: &'static str,
        retry_after: Duration,
    },
}

impl Rejection {
    fn outcome(&self) -> &'static str {
        match self {
            Rejection::Unauthorized(_) => "unauthorized",
            Rejection::UnknownApp(_) => "unknown_app",
            Rejection::Forbidden => "forbidden",
            Rejection::TooLarge { .. } | Rejection::RecordTooLarge(_) => "too_large",
            Rejection::BadRequest(_) => "bad_request",
            Rejection::BodyTimeout(_) => "body_timeout",
            Rejection::BodyEvicted => "body_evicted",
            Rejection::Unavailable { .. } => "unavailable",
            Rejection::Overloaded { .. } => "overloaded",
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, message, retry_after) = match &self {
            Rejection::Unauthorized(e) => (StatusCode::UNAUTHORIZED, e.to_string(), None),
            Rejection::UnknownApp(app) => (
                StatusCode::NOT_FOUND,
                format!("no app secret is named {app:?}"),
                None,
            ),
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
            Rejection::BodyTimeout(timeout) => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}",
                    humantime::format_duration(*timeout)
                ),
                None,
            ),
            Rejection::BodyEvicted => (
                StatusCode::REQUEST_TIMEOUT,
                "the body was cut off: newer requests needed its place".to_string(),
                None,
            ),
            Rejection::Unavailable {
                reason,
                retry_after,
            } => (
                StatusCode::SERVICE_UNAVAILABLE,
                reason.clone(),
                Some(*retry_after),
            ),
            Rejection::Overloaded {
                reason,
                retry_after,
            } => (
                StatusCode::SERVICE_UNAVAILABLE,
                reason.to_string(),
                Some(*retry_after),
            ),
        };
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if matches!(self, Rejection::BodyTimeout(_) | Rejection::BodyEvicted) {
            // The rest of the body may still be on its way: the connection cannot carry
            // another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
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
    /// The secrets in use; replaced whole when their files change.
    pub secrets: SecretStore,
    pub sink: Arc<dyn EventSink>,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    pub retry_after: Duration,
    pub fallback_key: String,
    /// Produce permits: taken only by requests whose signature verified.
    pub in_flight: Arc<Semaphore>,
    /// Bytes of verified bodies held from their signature check to Kafka's answer.
    pub in_flight_bytes: ByteBudget,
    /// Where bodies are read before any signature is checked.
    pub reads: ReadStage,
    /// Set once the stop signal came: readiness answers 503 while requests are still served.
    pub stopping: AtomicBool,
}

impl AppState {
    pub fn new(config: &Config, secrets: Secrets, sink: Arc<dyn EventSink>) -> AppState {
        let metrics = Metrics::default();
        let reads = ReadStage::new(
            read_stage::Limits {
                max_reads: config.max_body_reads,
                max_bytes: config.max_body_read_bytes,
                timeout: config.body_read_timeout,
            },
            metrics.body_reads.clone(),
            metrics.body_read_bytes.clone(),
        );
        metrics.secrets_loaded(&secrets);
        let in_flight_bytes =
            ByteBudget::new(config.max_in_flight_bytes, metrics.in_flight_bytes.clone());
        AppState {
            provider: config.provider,
            secrets: SecretStore::new(secrets),
            sink,
            metrics,
            max_body_bytes: config.max_body_bytes,
            retry_after: config.retry_after,
            fallback_key: config.fallback_key.clone(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            in_flight_bytes,
            reads,
            stopping: AtomicBool::new(false),
        }
    }

    /// Readiness fails from now on, so the pod leaves the Service's endpoints.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

/// The ingress's public routes, all that faces the internet: `/webhook` (GET handshake, POST
/// events, any trusted secret) and `/webhook/{app}` (the same, checked only against the secret
/// named `app`). Anything else is 404; health and metrics are on [`admin_router`].
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/webhook", get(handshake).post(receive))
        .route(
            "/webhook/{app}",
            get(handshake_for_app).post(receive_for_app),
        )
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The ingress's admin routes, served on their own port (`--admin-listen`) for the kubelet's
/// probes and Prometheus: `/healthz`, `/readyz`, `/metrics` (see [`Probes`] for `AppState`).
pub fn admin_router(state: Arc<AppState>) -> Router {
    probe_router(state).layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Alive until the producer hits a fatal error; ready while the broker answers with the topic,
/// until the stop signal.
impl Probes for AppState {
    fn live(&self) -> Result<(), Reason> {
        if self.sink.is_alive() {
            Ok(())
        } else {
            Err("the producer hit a fatal error".into())
        }
    }

    fn ready(&self) -> Result<(), Reason> {
        if self.stopping.load(Ordering::Relaxed) {
            Err("stopping".into())
        } else if self.sink.is_ready() {
            Ok(())
        } else {
            Err("the broker is unreachable or the topic is missing".into())
        }
    }

    fn registry(&self) -> &prometheus_client::registry::Registry {
        self.metrics.registry()
    }
}

/// Meta's verification handshake: echo `hub.challenge` when the token matches.
async fn handshake(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    answer_handshake(&state, &params)
}

/// The handshake of `/webhook/{app}`: any trusted verify token, as Meta sends the app's own.
async fn handshake_for_app(
    State(state): State<Arc<AppState>>,
    Path(_app): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    answer_handshake(&state, &params)
}

fn answer_handshake(state: &AppState, params: &HashMap<String, String>) -> Response {
    let secrets = state.secrets.current();
    let token_matches = params.get("hub.verify_token").is_some_and(|given| {
        signature::match_shared(
            &Secrets::values(&secrets.verify_tokens),
            Some(given.as_bytes()),
        )
        .is_ok()
    });
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

/// A webhook POST: read, verify, split, produce, answer.
async fn receive(State(state): State<Arc<AppState>>, request: Request) -> Response {
    answer(&state, handle_post(&state, None, request).await)
}

/// A webhook POST to `/webhook/{app}`: checked only against the secret named `app`.
async fn receive_for_app(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    request: Request,
) -> Response {
    answer(&state, handle_post(&state, Some(&app), request).await)
}

fn answer(state: &AppState, handled: Result<usize, Rejection>) -> Response {
    match handled {
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

/// Checks the signature against `candidates`, all of them, and counts the answer: a match by
/// the secret's name, a failure by its reason.
fn check_signature(
    state: &AppState,
    candidates: &[&NamedSecret],
    body: Option<&[u8]>,
    header: Option<&[u8]>,
) -> Result<(), Rejection> {
    let values: Vec<&[u8]> = candidates.iter().map(|s| s.value.as_slice()).collect();
    let matched = match body {
        Some(body) => signature::match_meta(&values, body, header),
        None => signature::match_shared(&values, header),
    };
    match matched {
        Ok(index) => {
            state.metrics.signature_matched(&candidates[index].name);
            Ok(())
        }
        Err(error) => {
            state.metrics.signature_failed(&error);
            Err(Rejection::Unauthorized(error))
        }
    }
}

async fn handle_post(
    state: &AppState,
    app: Option<&str>,
    request: Request,
) -> Result<usize, Rejection> {
    let received_at_ms = wapipe_core::time::now_ms().max(0) as u64;
    let (parts, body) = request.into_parts();
    let limit = state.max_body_bytes;
    // What the headers alone can settle is settled before a byte of the body is read.
    if declared_length(&parts.headers).is_some_and(|len| len > limit as u64) {
        return Err(Rejection::TooLarge { limit });
    }
    // One snapshot for the whole request: a reload meanwhile cannot leave it with no set.
    let secrets = state.secrets.current();
    let candidates: Vec<&NamedSecret> = match app {
        None => secrets.signing.iter().collect(),
        Some(app) => secrets.signing.iter().filter(|s| s.name == app).collect(),
    };
    if let (Some(app), true) = (app, candidates.is_empty()) {
        return Err(Rejection::UnknownApp(app.to_string()));
    }
    let header_name = match state.provider {
        Provider::Meta => signature::META_SIGNATURE_HEADER,
        Provider::Wasender => signature::WASENDER_SIGNATURE_HEADER,
    };
    let signature_header = parts.headers.get(header_name).map(HeaderValue::as_bytes);
    match state.provider {
        Provider::Meta if signature_header.is_none() => {
            state.metrics.signature_failed(&SignatureError::Missing);
            return Err(Rejection::Unauthorized(SignatureError::Missing));
        }
        Provider::Meta => {}
        // A shared secret in a header: checked in full before the body.
        Provider::Wasender => check_signature(state, &candidates, None, signature_header)?,
    }
    // A body that could not be held once read is not read: the provider retries it later.
    if declared_length(&parts.headers).is_some_and(|len| !state.in_flight_bytes.fits_now(len)) {
        return Err(overloaded_by_bytes(state));
    }

    let body = state
        .reads
        .read(body, limit)
        .await
        .map_err(|error| match error {
            ReadError::TooLarge => Rejection::TooLarge { limit },
            ReadError::TimedOut(after) => Rejection::BodyTimeout(after),
            ReadError::Evicted => Rejection::BodyEvicted,
            ReadError::Broken(reason) => {
                Rejection::BadRequest(format!("reading the body: {reason}"))
            }
        })?;
    if state.provider == Provider::Meta {
        check_signature(state, &candidates, Some(&body), signature_header)?;
    }

    // Only a signed request gets this far: unsigned load cannot hold the produce permits.
    let Some(_bytes) = state.in_flight_bytes.try_take(body.len()) else {
        return Err(overloaded_by_bytes(state));
    };
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        return Err(Rejection::Overloaded {
            reason: "too many requests in flight",
            retry_after: state.retry_after,
        });
    };
    // A guard, so the gauge comes down even when the client goes away mid-request.
    let _counted = InFlight::enter(&state.metrics.in_flight);

    let records = split(state.provider, &body, &state.fallback_key);
    let digest = signature::body_sha256(&body);
    // The records are copies: the body need not wait for Kafka with them.
    drop(body);
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
                if let Some(shape) = &record.unknown {
                    state.metrics.unknown_event(shape);
                }
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

fn overloaded_by_bytes(state: &AppState) -> Rejection {
    Rejection::Overloaded {
        reason: "too many bytes in flight (--max-in-flight-bytes)",
        retry_after: state.retry_after,
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

pub mod server;
