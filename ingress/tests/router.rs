//! Every answer of the router, driven through `oneshot` with a fake sink.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use futures::future::BoxFuture;
use futures::StreamExt;
use http_body_util::BodyExt;
use tower::ServiceExt;
use wapipe_core::signature::sign_meta;
use wapipe_core::{EventKind, Provider, Record};
use wapipe_ingress::sink::{Batch, EventSink, ProduceError};
use wapipe_ingress::{admin_router, router, AppState, Config, NamedSecret, Secrets};

const SECRET: &str = "app-secret";
const TOKEN: &str = "verify-me";
const TWO_SENDERS: &str = include_str!("../../core/tests/fixtures/meta/two_senders.json");

/// Records what it was given; fails on demand.
#[derive(Default)]
struct FakeSink {
    produced: Mutex<Vec<(Provider, String, Record)>>,
    fail_with: Mutex<Option<ProduceError>>,
    not_ready: bool,
    hang: bool,
    /// As a producer that hit a fatal error (librdkafka's idempotence broken) reports itself.
    fatal: bool,
}

impl EventSink for FakeSink {
    fn produce<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<(), ProduceError>> {
        Box::pin(async move {
            if self.hang {
                std::future::pending::<()>().await;
            }
            if let Some(error) = self.fail_with.lock().unwrap().clone() {
                return Err(error);
            }
            let mut produced = self.produced.lock().unwrap();
            for record in batch.records {
                produced.push((
                    batch.provider,
                    batch.body_sha256.to_string(),
                    record.clone(),
                ));
            }
            Ok(())
        })
    }
    fn is_ready(&self) -> bool {
        !self.not_ready
    }
    fn is_alive(&self) -> bool {
        !self.fatal
    }
}

fn config(args: &[&str]) -> Config {
    let mut argv = vec!["wapipe-ingress"];
    argv.extend_from_slice(args);
    Config::try_parse_from(argv).expect("valid test flags")
}

fn state_with(config: Config, sink: Arc<FakeSink>) -> Arc<AppState> {
    let secrets = Secrets::single(SECRET, Some(TOKEN.as_bytes().to_vec()));
    Arc::new(AppState::new(&config, secrets, sink))
}

fn meta_post(body: &str, signature: Option<String>) -> Request<Body> {
    let mut request = Request::post("/webhook").header("content-type", "application/json");
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

/// Sends `request` to the public (webhook) port's router.
async fn send(
    state: Arc<AppState>,
    request: Request<Body>,
) -> (StatusCode, Option<String>, String) {
    answer(router(state), request).await
}

/// Sends a GET of `path` to the admin port's router (health, readiness, metrics).
async fn admin(state: Arc<AppState>, path: &str) -> (StatusCode, String) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    let (status, _, body) = answer(admin_router(state), request).await;
    (status, body)
}

async fn answer(app: axum::Router, request: Request<Body>) -> (StatusCode, Option<String>, String) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry_after,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn signed_batch_with_two_senders_is_acknowledged_as_two_events() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&[]), sink.clone());
    let signature = sign_meta(SECRET.as_bytes(), TWO_SENDERS.as_bytes());
    let (status, _, body) = send(state, meta_post(TWO_SENDERS, Some(signature))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, r#"{"events":2}"#);
    let produced = sink.produced.lock().unwrap();
    let keys: Vec<_> = produced.iter().map(|(_, _, r)| r.key.as_str()).collect();
    assert_eq!(keys, ["5215512345678", "2348031234567"]);
    assert!(produced.iter().all(|(p, digest, _)| *p == Provider::Meta
        && *digest == wapipe_core::signature::body_sha256(TWO_SENDERS.as_bytes())));
}

/// Two apps on one endpoint, `shop-a` and `shop-b`, each with its own secret and token.
fn two_apps(provider: &str, sink: Arc<FakeSink>) -> Arc<AppState> {
    let secrets = Secrets {
        signing: vec![
            NamedSecret::new("shop-a", "secret-of-a"),
            NamedSecret::new("shop-b", "secret-of-b"),
        ],
        verify_tokens: vec![
            NamedSecret::new("shop-a", "token-of-a"),
            NamedSecret::new("shop-b", "token-of-b"),
        ],
    };
    Arc::new(AppState::new(
        &config(&["--provider", provider]),
        secrets,
        sink,
    ))
}

/// The two-sender batch, signed with the app secret.
fn signed_two_senders() -> Request<Body> {
    meta_post(
        TWO_SENDERS,
        Some(sign_meta(SECRET.as_bytes(), TWO_SENDERS.as_bytes())),
    )
}

/// The two-sender batch, signed with `secret`, posted to `path`.
async fn post_two_senders_to(
    state: &Arc<AppState>,
    path: &str,
    secret: &str,
) -> (StatusCode, Option<String>, String) {
    send(state.clone(), meta_post_to(path, TWO_SENDERS, secret)).await
}

/// WASender's group-messages fixture posted to `/webhook` with `secret` as its shared-secret
/// header.
fn wasender_post(secret: &str) -> Request<Body> {
    Request::post("/webhook")
        .header("x-webhook-signature", secret)
        .body(Body::from(include_str!(
            "../../core/tests/fixtures/wasender/group_messages.json"
        )))
        .unwrap()
}

fn meta_post_to(path: &str, body: &str, secret: &str) -> Request<Body> {
    Request::post(path)
        .header(
            "x-hub-signature-256",
            sign_meta(secret.as_bytes(), body.as_bytes()),
        )
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn two_apps_signing_with_their_own_secrets_get_200_and_a_third_secret_gets_401() {
    let sink = Arc::new(FakeSink::default());
    let state = two_apps("meta", sink.clone());
    for secret in ["secret-of-a", "secret-of-b"] {
        let (status, _, body) = post_two_senders_to(&state, "/webhook", secret).await;
        assert_eq!(status, StatusCode::OK, "{secret}: {body}");
    }
    let (status, _, body) = post_two_senders_to(&state, "/webhook", "secret-of-c").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(sink.produced.lock().unwrap().len(), 4);
    // Matches are counted by the secret's name, never its value.
    let (_, metrics) = admin(state, "/metrics").await;
    for line in [
        r#"wapipe_ingress_signature_matches_total{secret="shop-a"} 1"#,
        r#"wapipe_ingress_signature_matches_total{secret="shop-b"} 1"#,
        r#"wapipe_ingress_signature_failures_total{reason="mismatch"} 1"#,
        r#"wapipe_ingress_secrets{kind="signing",secret="shop-a"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(!metrics.contains("secret-of-"), "{metrics}");
}

#[tokio::test]
async fn two_wasender_sessions_with_their_own_secrets_get_200_and_a_third_gets_401() {
    let sink = Arc::new(FakeSink::default());
    let state = two_apps("wasender", sink.clone());
    assert_eq!(
        send(state.clone(), wasender_post("secret-of-a")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(state.clone(), wasender_post("secret-of-b")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(state, wasender_post("secret-of-c")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_per_app_path_accepts_only_its_own_apps_secret_and_an_unknown_app_is_404() {
    let sink = Arc::new(FakeSink::default());
    let state = two_apps("meta", sink.clone());
    let (status, _, _) = post_two_senders_to(&state, "/webhook/shop-a", "secret-of-a").await;
    assert_eq!(status, StatusCode::OK);
    // shop-b's secret is trusted on /webhook, but not on shop-a's own path.
    let (status, _, _) = post_two_senders_to(&state, "/webhook/shop-a", "secret-of-b").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = post_two_senders_to(&state, "/webhook/shop-z", "secret-of-a").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(sink.produced.lock().unwrap().len(), 2);
    // Each app's handshake on its own path, with any trusted token.
    let handshake = Request::get(
        "/webhook/shop-b?hub.mode=subscribe&hub.verify_token=token-of-b&hub.challenge=42",
    )
    .body(Body::empty())
    .unwrap();
    let (status, _, body) = send(state, handshake).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "42"));
}

#[tokio::test]
async fn wrong_or_missing_signature_is_401_and_nothing_is_produced() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&[]), sink.clone());
    let wrong = sign_meta(b"another-secret", TWO_SENDERS.as_bytes());
    let (status, _, body) = send(state.clone(), meta_post(TWO_SENDERS, Some(wrong))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("does not match"), "{body}");
    let (status, _, body) = send(state, meta_post(TWO_SENDERS, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("missing"), "{body}");
    assert!(sink.produced.lock().unwrap().is_empty());
}

#[tokio::test]
async fn body_over_the_limit_is_413_before_signature_or_produce() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&["--max-body-bytes", "64"]), sink.clone());
    let body = "x".repeat(65);
    let signature = sign_meta(SECRET.as_bytes(), body.as_bytes());
    let (status, _, _) = send(state.clone(), meta_post(&body, Some(signature))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Without a Content-Length (chunked), the limit still holds while streaming.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..10)
        .map(|_| Ok(bytes::Bytes::from_static(b"0123456789")))
        .collect();
    let streamed = Request::post("/webhook")
        .header("x-hub-signature-256", "sha256=00")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let (status, _, _) = send(state, streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(sink.produced.lock().unwrap().is_empty());
}

#[tokio::test]
async fn broker_failures_answer_503_with_retry_after() {
    for error in [
        ProduceError::QueueFull,
        ProduceError::Timeout(Duration::from_secs(3)),
        ProduceError::Broker("all brokers down".into()),
    ] {
        let sink = Arc::new(FakeSink {
            fail_with: Mutex::new(Some(error.clone())),
            ..FakeSink::default()
        });
        let state = state_with(config(&["--retry-after", "7s"]), sink);
        let (status, retry_after, _) = send(state, signed_two_senders()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error:?}");
        assert_eq!(retry_after.as_deref(), Some("7"), "{error:?}");
    }
}

#[tokio::test]
async fn requests_past_the_in_flight_bound_are_shed_with_503() {
    let sink = Arc::new(FakeSink {
        hang: true,
        ..FakeSink::default()
    });
    let state = state_with(config(&["--max-in-flight", "1"]), sink);
    let signature = sign_meta(SECRET.as_bytes(), TWO_SENDERS.as_bytes());
    // The first request holds the only slot (its produce never completes).
    let first = tokio::spawn(send(
        state.clone(),
        meta_post(TWO_SENDERS, Some(signature.clone())),
    ));
    while state.in_flight.available_permits() > 0 {
        tokio::task::yield_now().await;
    }
    let (status, retry_after, body) = send(state, meta_post(TWO_SENDERS, Some(signature))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after.is_some());
    assert!(body.contains("in flight"), "{body}");
    first.abort();
}

/// A body that sends its first bytes and then nothing more, never ending.
fn stalled_body() -> Body {
    let first: Result<bytes::Bytes, std::io::Error> = Ok(bytes::Bytes::from_static(b"{\"obj"));
    Body::from_stream(futures::stream::iter([first]).chain(futures::stream::pending()))
}

fn stalled_post(signature: &str) -> Request<Body> {
    Request::post("/webhook")
        .header("x-hub-signature-256", signature)
        .header("content-length", "3000000")
        .body(stalled_body())
        .unwrap()
}

/// A signed POST whose body never finishes arriving, sent in the background; returns once the
/// router is reading it.
async fn start_stalled(
    state: &Arc<AppState>,
) -> tokio::task::JoinHandle<Result<axum::response::Response, std::convert::Infallible>> {
    let slow = tokio::spawn(
        router(state.clone()).oneshot(stalled_post(&sign_meta(SECRET.as_bytes(), b""))),
    );
    until_reading(state, 1).await;
    slow
}

async fn until_reading(state: &AppState, reads: i64) {
    while state.metrics.body_reads.get() < reads {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408_and_nothing_is_produced() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&["--body-read-timeout", "100ms"]), sink.clone());
    let response = router(state.clone())
        .oneshot(stalled_post(&sign_meta(SECRET.as_bytes(), b"")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    // The rest of the body may still come: the connection cannot serve another request.
    assert_eq!(response.headers()["connection"], "close");
    assert!(sink.produced.lock().unwrap().is_empty());
    assert_eq!(state.metrics.body_reads.get(), 0);
    assert_eq!(state.metrics.body_read_bytes.get(), 0);
    assert_eq!(state.metrics.in_flight.get(), 0);
}

#[tokio::test]
async fn a_request_still_reading_its_body_holds_no_produce_permit() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&["--max-in-flight", "1"]), sink.clone());
    let slow = start_stalled(&state).await;
    assert_eq!(state.in_flight.available_permits(), 1);
    let (status, _, _) = send(state.clone(), signed_two_senders()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sink.produced.lock().unwrap().len(), 2);
    slow.abort();
}

#[tokio::test]
async fn a_full_read_stage_cuts_off_its_oldest_read_with_408_to_let_a_new_request_in() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&["--max-body-reads", "1"]), sink.clone());
    let slow = start_stalled(&state).await;
    let (status, _, _) = send(state.clone(), signed_two_senders()).await;
    assert_eq!(status, StatusCode::OK);
    let cut_off = slow.await.unwrap().unwrap();
    assert_eq!(cut_off.status(), StatusCode::REQUEST_TIMEOUT);
    let body = cut_off.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("cut off"));
    assert_eq!(state.metrics.body_reads.get(), 0);
}

#[tokio::test]
async fn a_post_without_its_signature_header_is_401_before_its_body_is_read() {
    // The body never ends: only an answer that does not wait for it can come back.
    let state = state_with(config(&[]), Arc::new(FakeSink::default()));
    let request = Request::post("/webhook").body(stalled_body()).unwrap();
    let (status, _, body) = send(state, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("missing"), "{body}");

    let state = state_with(
        config(&["--provider", "wasender"]),
        Arc::new(FakeSink::default()),
    );
    let request = Request::post("/webhook")
        .header("x-webhook-signature", "not-the-secret")
        .body(stalled_body())
        .unwrap();
    assert_eq!(send(state, request).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signed_garbage_is_produced_whole_not_dropped() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&["--fallback-key", "poison"]), sink.clone());
    let body = "definitely not json";
    let signature = sign_meta(SECRET.as_bytes(), body.as_bytes());
    let (status, _, _) = send(state, meta_post(body, Some(signature))).await;
    assert_eq!(status, StatusCode::OK);
    let produced = sink.produced.lock().unwrap();
    assert_eq!(produced.len(), 1);
    assert_eq!(produced[0].2.kind, EventKind::Unparsed);
    assert_eq!(produced[0].2.key, "poison");
    assert_eq!(produced[0].2.value, body.as_bytes());
}

#[tokio::test]
async fn handshake_echoes_the_challenge_byte_for_byte_when_the_token_matches() {
    let state = state_with(config(&[]), Arc::new(FakeSink::default()));
    let ok = Request::get(format!(
        "/webhook?hub.mode=subscribe&hub.verify_token={TOKEN}&hub.challenge=1158201444%2Eabc"
    ))
    .body(Body::empty())
    .unwrap();
    let (status, _, body) = send(state.clone(), ok).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "1158201444.abc");

    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=1",
        "hub.mode=subscribe&hub.challenge=1",
        "hub.mode=subscribe&hub.verify_token=verify-me",
    ] {
        let request = Request::get(format!("/webhook?{query}"))
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = send(state.clone(), request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{query}");
    }
}

#[tokio::test]
async fn wasender_uses_its_shared_secret_header() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&["--provider", "wasender"]), sink.clone());
    let (status, _, _) = send(state.clone(), wasender_post("nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, response) = send(state, wasender_post(SECRET)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response, r#"{"events":2}"#);
    assert!(sink
        .produced
        .lock()
        .unwrap()
        .iter()
        .all(|(p, _, _)| *p == Provider::Wasender));
}

#[tokio::test]
async fn health_readiness_and_metrics_say_what_they_mean() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&[]), sink);
    send(state.clone(), signed_two_senders()).await;
    send(state.clone(), meta_post(TWO_SENDERS, None)).await;

    assert_eq!(admin(state.clone(), "/healthz").await.0, StatusCode::OK);
    assert_eq!(admin(state.clone(), "/readyz").await.0, StatusCode::OK);
    let (status, metrics) = admin(state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains(r#"wapipe_ingress_requests_total{outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"wapipe_ingress_requests_total{outcome="unauthorized"} 1"#));
    assert!(metrics.contains(r#"wapipe_ingress_events_produced_total{kind="message"} 2"#));
    assert!(metrics.contains("wapipe_ingress_produce_duration_seconds_count 1"));
    assert!(metrics.contains("wapipe_ingress_in_flight_requests 0"));

    // Unready while the broker cannot take records; not alive (the kubelet restarts the pod)
    // once the producer hit a fatal error, which it cannot recover from by itself.
    let unready = FakeSink {
        not_ready: true,
        ..FakeSink::default()
    };
    let dead = FakeSink {
        fatal: true,
        ..FakeSink::default()
    };
    for (sink, path, reason) in [
        (
            unready,
            "/readyz",
            "the broker is unreachable or the topic is missing",
        ),
        (dead, "/healthz", "the producer hit a fatal error"),
    ] {
        let (status, body) = admin(state_with(config(&[]), Arc::new(sink)), path).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, reason),
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_public_port_serves_only_the_webhook_and_the_admin_port_the_rest() {
    // What faces the internet is only the webhook: health, readiness and metrics (which name
    // the secrets in use and the traffic) are answered on the admin port alone.
    let state = state_with(config(&[]), Arc::new(FakeSink::default()));
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    for path in ["/metrics", "/readyz", "/healthz"] {
        let (status, _, body) = send(state.clone(), get(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "public {path}: {body}");
        let (status, body) = admin(state.clone(), path).await;
        assert_eq!(status, StatusCode::OK, "admin {path}: {body}");
    }
    // The webhook answers on the public port only.
    let handshake = "/webhook?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=42";
    let (status, _, body) = send(state.clone(), get(handshake)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "42"));
    let (status, _, _) = answer(admin_router(state.clone()), get(handshake)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = answer(admin_router(state), signed_two_senders()).await;
    assert_ne!(status, StatusCode::OK);
    // The admin port has a default apart from the public one, and a flag of its own.
    let defaults = config(&[]);
    assert_eq!(defaults.listen.port(), 8080);
    assert_eq!(defaults.admin_listen.port(), 9090);
    let moved = config(&["--admin-listen", "127.0.0.1:9191"]);
    assert_eq!(moved.admin_listen.to_string(), "127.0.0.1:9191");
}

#[tokio::test]
async fn once_stopping_readiness_fails_while_webhooks_are_still_acknowledged() {
    // The pod must leave the Service's endpoints before it stops accepting: readiness says so
    // at once, and what still arrives through a proxy that has not caught up is served.
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&[]), sink.clone());
    state.begin_stopping();
    let (status, body) = admin(state.clone(), "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    );
    let (status, body) = admin(state.clone(), "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let (status, _, body) = send(state, signed_two_senders()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(sink.produced.lock().unwrap().len(), 2);
}

/// A signed body of `len` bytes (not JSON: produced whole under the fallback key).
fn signed_body(len: usize) -> (String, String) {
    let body = "x".repeat(len);
    let signature = sign_meta(SECRET.as_bytes(), body.as_bytes());
    (body, signature)
}

/// Waits until `kib` KiB of the byte budget are held.
async fn until_bytes_held(state: &AppState, kib: usize) {
    let budget = &state.in_flight_bytes;
    while budget.capacity_kib() - budget.available_kib() < kib {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn metric_line(metrics: &str, name: &str) -> String {
    metrics
        .lines()
        .find(|line| line.starts_with(name))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn bodies_past_the_byte_budget_are_shed_with_503_and_retry_after_until_it_is_given_back() {
    // Memory is bounded by bytes held, not only by requests: 3 KiB of a 4 KiB budget are held
    // by a request waiting for Kafka, so a 2 KiB body cannot be taken on.
    let sink = Arc::new(FakeSink {
        hang: true,
        ..FakeSink::default()
    });
    let state = state_with(
        config(&["--max-in-flight-bytes", "4096", "--retry-after", "7s"]),
        sink,
    );
    let (large, large_signature) = signed_body(3000);
    let first = tokio::spawn(send(
        state.clone(),
        meta_post(&large, Some(large_signature)),
    ));
    until_bytes_held(&state, 3).await;

    // Refused on its Content-Length, before its body is read.
    let (body, signature) = signed_body(2000);
    let (status, retry_after, answer) =
        send(state.clone(), meta_post(&body, Some(signature.clone()))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("7"));
    assert!(answer.contains("bytes in flight"), "{answer}");
    // Without a Content-Length, refused once the body is read and verified.
    let streamed = Request::post("/webhook")
        .header("x-hub-signature-256", signature)
        .body(Body::from_stream(futures::stream::iter([Ok::<
            _,
            std::io::Error,
        >(
            bytes::Bytes::from(body.clone()),
        )])))
        .unwrap();
    let (status, retry_after, _) = send(state.clone(), streamed).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("7"));
    // A body that fits what is left still gets through to the producer.
    let (small, small_signature) = signed_body(500);
    let second = tokio::spawn(send(
        state.clone(),
        meta_post(&small, Some(small_signature)),
    ));
    until_bytes_held(&state, 4).await;

    // The client that held the budget goes away mid-produce: its bytes come back.
    first.abort();
    let _ = first.await;
    second.abort();
    let _ = second.await;
    assert_eq!(state.in_flight_bytes.available_kib(), 4);
    let (_, metrics) = admin(state.clone(), "/metrics").await;
    assert_eq!(
        metric_line(
            &metrics,
            "wapipe_ingress_requests_total{outcome=\"overloaded\"}"
        ),
        r#"wapipe_ingress_requests_total{outcome="overloaded"} 2"#
    );
    assert!(
        metrics.contains("wapipe_ingress_in_flight_bytes 0"),
        "{metrics}"
    );
}

/// A signed POST of `body` is answered 200 and gives back every byte of the 4 KiB budget.
async fn accepted_with_budget_back(state: &Arc<AppState>, body: &str, signature: String) {
    let (status, _, answer) = send(state.clone(), meta_post(body, Some(signature))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(state.in_flight_bytes.available_kib(), 4);
}

#[tokio::test]
async fn the_byte_budget_is_given_back_when_a_request_completes_or_fails() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&["--max-in-flight-bytes", "4096"]), sink.clone());
    for _ in 0..3 {
        let (body, signature) = signed_body(3000);
        accepted_with_budget_back(&state, &body, signature).await;
    }
    *sink.fail_with.lock().unwrap() = Some(ProduceError::Broker("down".into()));
    let (body, signature) = signed_body(3000);
    let (status, _, _) = send(state.clone(), meta_post(&body, Some(signature))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(state.in_flight_bytes.available_kib(), 4);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_body_leaves_the_byte_budget_whole() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&["--max-in-flight-bytes", "4096"]), sink.clone());
    let (body, signature) = signed_body(3000);
    // The client goes away after 1000 of its 3000 bytes: the body ends in an error.
    let broken: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::from(body[..1000].to_string())),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ];
    let request = Request::post("/webhook")
        .header("x-hub-signature-256", signature.clone())
        .header("content-length", "3000")
        .body(Body::from_stream(futures::stream::iter(broken)))
        .unwrap();
    let (status, _, _) = send(state.clone(), request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // And one that is dropped while still sending.
    let stalled = tokio::spawn(router(state.clone()).oneshot(stalled_post(&signature)));
    until_reading(&state, 1).await;
    stalled.abort();
    let _ = stalled.await;
    assert_eq!(state.in_flight_bytes.available_kib(), 4);
    // The whole budget is there for the next body.
    accepted_with_budget_back(&state, &body, signature).await;
}

#[tokio::test]
async fn a_lone_body_larger_than_the_byte_budget_is_accepted_when_nothing_else_holds_it() {
    // Within --max-body-bytes but over the budget: refusing it always would mean the provider
    // retries it forever. It takes the whole budget instead.
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&["--max-in-flight-bytes", "2048"]), sink.clone());
    let (body, signature) = signed_body(10_000);
    let (status, _, answer) = send(state.clone(), meta_post(&body, Some(signature))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(sink.produced.lock().unwrap()[0].2.value.len(), 10_000);
    assert_eq!(state.in_flight_bytes.available_kib(), 2);
}

#[tokio::test]
async fn a_body_arriving_in_many_frames_is_produced_byte_for_byte() {
    let sink = Arc::new(FakeSink::default());
    let state = state_with(config(&[]), sink.clone());
    let (body, signature) = signed_body(5000);
    for declared in [true, false] {
        let frames: Vec<Result<bytes::Bytes, std::io::Error>> = body
            .as_bytes()
            .chunks(1500)
            .map(|chunk| Ok(bytes::Bytes::copy_from_slice(chunk)))
            .collect();
        let mut request = Request::post("/webhook").header("x-hub-signature-256", &signature);
        if declared {
            request = request.header("content-length", body.len());
        }
        let request = request
            .body(Body::from_stream(futures::stream::iter(frames)))
            .unwrap();
        let (status, _, answer) = send(state.clone(), request).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let produced = sink.produced.lock().unwrap();
    assert_eq!(produced.len(), 2);
    assert!(produced.iter().all(|(_, _, r)| r.value == body.as_bytes()));
}
