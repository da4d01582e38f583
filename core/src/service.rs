//! What every long-running wapipe process (ingress, worker, operator) does the same way: its
//! log format and subscriber, the signals that stop it, its probe endpoints (`/healthz`,
//! `/readyz`, `/metrics`: [`probe_router`] over what it implements of [`Probes`]) and the
//! process metrics in `/metrics` (CPU, memory, file descriptors, start time).

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
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
fn metrics_response(registry: &Registry) -> Response {
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

/// Why a process is not alive or not ready: the body of its 503.
pub type Reason = Cow<'static, str>;

/// What a process's probe endpoints read: its liveness, its readiness and its registry.
pub trait Probes: Send + Sync + 'static {
    /// `/healthz`: alive, or why the process should be restarted. Alive unless said otherwise.
    fn live(&self) -> Result<(), Reason> {
        Ok(())
    }

    /// `/readyz`: ready for traffic, or why not.
    fn ready(&self) -> Result<(), Reason>;

    /// `/metrics`: what is scraped.
    fn registry(&self) -> &Registry;
}

/// The probe endpoints: `/healthz` (200 `ok`, or 503 with the reason [`Probes::live`] gives),
/// `/readyz` (200 `ready`, or 503 with the reason [`Probes::ready`] gives) and `/metrics`
/// ([`Probes::registry`] in the OpenMetrics text format).
pub fn probe_router<P: Probes>(probes: Arc<P>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|State(p): State<Arc<P>>| async move { verdict(p.live(), "ok") }),
        )
        .route(
            "/readyz",
            get(|State(p): State<Arc<P>>| async move { verdict(p.ready(), "ready") }),
        )
        .route(
            "/metrics",
            get(|State(p): State<Arc<P>>| async move { metrics_response(p.registry()) }),
        )
        .with_state(probes)
}

/// A probe's answer: 200 with `ok`, or 503 with the reason.
fn verdict(verdict: Result<(), Reason>, ok: &'static str) -> Response {
    match verdict {
        Ok(()) => (StatusCode::OK, ok).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// The process's own figures, read from `/proc/self` at each scrape, under the names the
/// Prometheus client libraries use (`process_cpu_seconds_total`, ...), prefixed like the
/// registry they are registered in. Where `/proc` is missing, nothing is reported.
#[derive(Debug)]
struct ProcessCollector;

/// Figures of this process from `/proc/self`.
#[derive(Debug, Default, PartialEq)]
struct ProcessFigures {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

/// Clock ticks per second of `/proc`'s times: USER_HZ, 100 on every Linux architecture wapipe
/// is built for.
const USER_HZ: f64 = 100.0;

fn process_figures() -> ProcessFigures {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15, starttime 22 (1-based, the state is field 3).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu_seconds = field(14).zip(field(15)).map(|(u, s)| (u + s) / USER_HZ);
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let start_time_seconds = field(22)
        .zip(boot_time)
        .map(|(ticks, boot)| boot + ticks / USER_HZ);
    let resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|v| v.parse::<u64>().ok())
        });
    ProcessFigures {
        cpu_seconds,
        resident_bytes,
        open_fds,
        max_fds,
        start_time_seconds,
    }
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let figures = process_figures();
        if let Some(seconds) = figures.cpu_seconds {
            let metric = ConstCounter::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time the process has used, in seconds",
                None,
                metric.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory of the process, in bytes",
                figures.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "File descriptors the process has open",
                figures.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Most file descriptors the process may open (its soft limit)",
                figures.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "When the process started, in seconds since the Unix epoch",
                figures.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let metric = ConstGauge::new(value);
                metric.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    metric.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

/// Adds the process metrics to `registry`, under its prefix.
pub fn register_process_metrics(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn the_process_metrics_are_this_processs_figures() {
        let figures = process_figures();
        assert!(figures.resident_bytes.unwrap() > 1024 * 1024, "{figures:?}");
        assert!(figures.open_fds.unwrap() >= 3, "{figures:?}");
        assert!(
            figures.max_fds.unwrap() >= figures.open_fds.unwrap(),
            "{figures:?}"
        );
        assert!(figures.cpu_seconds.unwrap() >= 0.0, "{figures:?}");
        let now = crate::time::now_ms() as f64 / 1000.0;
        let started = figures.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{figures:?}"
        );

        let mut registry = Registry::with_prefix("wapipe_test");
        register_process_metrics(&mut registry);
        let text = encode(&registry).unwrap();
        for name in [
            "wapipe_test_process_cpu_seconds_total",
            "wapipe_test_process_resident_memory_bytes",
            "wapipe_test_process_open_fds",
            "wapipe_test_process_max_fds",
            "wapipe_test_process_start_time_seconds",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} in {text}");
        }
    }

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

    /// Probes whose verdicts the test sets.
    struct Fixed {
        live: Result<(), Reason>,
        ready: Result<(), Reason>,
        registry: Registry,
    }

    impl Probes for Fixed {
        fn live(&self) -> Result<(), Reason> {
            self.live.clone()
        }
        fn ready(&self) -> Result<(), Reason> {
            self.ready.clone()
        }
        fn registry(&self) -> &Registry {
            &self.registry
        }
    }

    /// Status, content type and body of `GET path`.
    async fn probe(probes: Fixed, path: &str) -> (StatusCode, String, String) {
        use tower::ServiceExt;
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = probe_router(Arc::new(probes))
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    fn fixed(live: Result<(), Reason>, ready: Result<(), Reason>) -> Fixed {
        let mut registry = Registry::with_prefix("probed");
        let counter: Counter = Counter::default();
        counter.inc_by(3);
        registry.register("scrapes", "Scrapes", counter);
        Fixed {
            live,
            ready,
            registry,
        }
    }

    #[tokio::test]
    async fn the_probes_answer_200_with_ok_and_ready_or_503_with_the_reason() {
        let text = "text/plain; charset=utf-8".to_string();
        let up = || fixed(Ok(()), Ok(()));
        assert_eq!(
            probe(up(), "/healthz").await,
            (StatusCode::OK, text.clone(), "ok".into())
        );
        assert_eq!(
            probe(up(), "/readyz").await,
            (StatusCode::OK, text.clone(), "ready".into())
        );

        // A static reason and a formatted one, each on its own endpoint only.
        let down = || {
            fixed(
                Err("stuck".into()),
                Err(format!("{} brokers down", 2).into()),
            )
        };
        assert_eq!(
            probe(down(), "/healthz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                text.clone(),
                "stuck".into()
            )
        );
        assert_eq!(
            probe(down(), "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                text.clone(),
                "2 brokers down".into()
            )
        );
        let alive_unready = || fixed(Ok(()), Err("starting".into()));
        assert_eq!(probe(alive_unready(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            probe(alive_unready(), "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, text, "starting".into())
        );
        assert_eq!(
            probe(up(), "/other").await.0,
            StatusCode::NOT_FOUND,
            "only the three endpoints are served"
        );
    }

    #[tokio::test]
    async fn the_probe_router_serves_the_registry_on_metrics_whatever_the_verdicts() {
        for probes in [
            fixed(Ok(()), Ok(())),
            fixed(Err("stuck".into()), Err("stopping".into())),
        ] {
            let (status, content_type, body) = probe(probes, "/metrics").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                content_type,
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            );
            assert!(body.contains("\nprobed_scrapes_total 3\n"), "{body}");
            assert!(body.ends_with("# EOF\n"), "{body}");
        }
    }

    /// Alive unless the implementation says otherwise.
    #[test]
    fn probes_are_live_by_default() {
        struct NeverReady(Registry);
        impl Probes for NeverReady {
            fn ready(&self) -> Result<(), Reason> {
                Err("starting".into())
            }
            fn registry(&self) -> &Registry {
                &self.0
            }
        }
        assert_eq!(NeverReady(Registry::default()).live(), Ok(()));
    }

    #[test]
    fn log_formats_parse_from_their_names() {
        use clap::ValueEnum;
        assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
        assert!(LogFormat::from_str("yaml", false).is_err());
    }
}
