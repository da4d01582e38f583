//! The operator's endpoints through `oneshot`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use tower::ServiceExt;
use wapipe_core::service::probe_router;
use wapipe_operator::metrics::Metrics;
use wapipe_operator::probes::AppState;

async fn get(state: &Arc<AppState>, path: &str) -> (StatusCode, String) {
    let response = probe_router(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn readiness_follows_the_api_server_connection_and_metrics_are_exported() {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let state = Arc::new(AppState {
        registry,
        ready: AtomicBool::new(false),
    });
    assert_eq!(get(&state, "/healthz").await, (StatusCode::OK, "ok".into()));
    assert_eq!(
        get(&state, "/readyz").await,
        (StatusCode::SERVICE_UNAVAILABLE, "starting".into())
    );
    state.ready.store(true, Ordering::Relaxed);
    assert_eq!(
        get(&state, "/readyz").await,
        (StatusCode::OK, "ready".into())
    );
    assert_eq!(get(&state, "/healthz").await, (StatusCode::OK, "ok".into()));

    let (status, text) = get(&state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE"),
        "the operator's metrics are registered: {text}"
    );
}
