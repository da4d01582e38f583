//! What every long-running wapipe process (ingress, worker, operator) does the same way: its
//! log format and subscriber, the signals that stop it, and its `/metrics` answer.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// How log lines are written: `text` for a person, `json` for a log pipeline (what the operator
/// sets on the pods it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the tracing subscriber: `RUST_LOG` filters (default `info`), colour only on a
/// terminal ([`crate::logging::stdout_colour`]). A second call is a no-op.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(crate::logging::stdout_colour());
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Resolves when the process is asked to stop (SIGTERM from the kubelet or a supervisor,
/// Ctrl-C, SIGHUP when its terminal goes away) and names the signal.
pub async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let wait_for = |kind: SignalKind| async move {
        match signal(kind) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            // Without a handler the default action (exit) stays in place; wait on the others.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupt",
        () = wait_for(SignalKind::terminate()) => "SIGTERM",
        () = wait_for(SignalKind::hangup()) => "SIGHUP",
    }
}

/// The registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry)?;
    Ok(body)
}

/// The `/metrics` answer: the registry in the OpenMetrics text format.
pub fn metrics_response(registry: &Registry) -> Response {
    match encode(registry) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed: {error}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics_text() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        counter.inc();
        registry.register("answered", "Requests answered", counter);
        let response = metrics_response(&registry);
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("answered_total 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn log_formats_parse_from_their_names() {
        use clap::ValueEnum;
        assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
        assert!(LogFormat::from_str("yaml", false).is_err());
    }
}
