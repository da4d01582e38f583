//! `wapipe-operator`: parses configuration, serves metrics and health, wins the leader Lease and
//! runs the controller.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::registry::Registry;
use wapipe_core::service::probe_router;
use wapipe_operator::controller::{self, Context};
use wapipe_operator::kafka::RdKafkaAdmin;
use wapipe_operator::leader::{LeaderElector, LeaseTiming};
use wapipe_operator::metrics::Metrics;
use wapipe_operator::probes::AppState;

/// Kubernetes operator for WhatsAppWebhookPipeline resources.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "WAPIPE_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Image for ingress and worker pods when a pipeline names none (the operator's own image).
    #[arg(long, env = "WAPIPE_IMAGE", default_value = "")]
    image: String,
    /// Prefixes every ingress and worker image must start with (comma-separated, e.g.
    /// `registry.example.com/wapipe/`); a pipeline naming another image is refused with
    /// `ImageNotAllowed`. Empty allows any image.
    #[arg(long, env = "WAPIPE_ALLOWED_IMAGE_PREFIXES", value_delimiter = ',')]
    allowed_image_prefixes: Vec<String>,
    /// Namespaces to watch (comma-separated): pipelines, their children and the Secrets they
    /// name are read there alone, and the operator needs rights only there. Empty watches
    /// every namespace.
    #[arg(long, env = "WAPIPE_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "WAPIPE_LEASE_NAME",
        default_value = "wapipe-operator-leader"
    )]
    lease_name: String,
    /// Identity in the Lease; defaults to the pod name, else the host name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays valid for other replicas after they last saw it change; the holder
    /// steps down when it has not renewed for two thirds of it, and renews every seventh.
    #[arg(long, env = "WAPIPE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds after a pipeline's deletionTimestamp at which a cleanup that keeps failing
    /// (Secrets gone with their namespace, Kafka unreachable) is given up: the finalizer is
    /// released and what was left on Kafka is reported in a CleanupAbandoned Event.
    #[arg(long, env = "WAPIPE_CLEANUP_DEADLINE_SECONDS", default_value_t = wapipe_operator::cleanup::CLEANUP_DEADLINE.as_secs())]
    cleanup_deadline_seconds: u64,
    /// Log format: `text` or `json`.
    #[arg(long, env = "WAPIPE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: wapipe_core::service::LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    wapipe_core::service::init_tracing(args.log_format);

    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let state = Arc::new(AppState {
        registry,
        ready: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let app = probe_router(state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API server")?;
    state.ready.store(true, Ordering::Relaxed);

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("wapipe-operator-{}", std::process::id()));
    let timing = LeaseTiming::for_duration(Duration::from_secs(args.lease_duration_seconds));
    let elector = LeaderElector::new(
        client.clone(),
        &args.namespace,
        &args.lease_name,
        identity,
        timing,
    );
    let mut shutdown = std::pin::pin!(wapipe_core::service::stop_signal());
    tracing::info!(identity = elector.identity(), lease = %args.lease_name, ?timing, "waiting for leadership");
    tokio::select! {
        () = elector.acquire() => {}
        signal = &mut shutdown => {
            tracing::info!(signal, "shutdown before becoming leader");
            server.abort();
            return Ok(());
        }
    }
    let acquired = tokio::time::Instant::now();
    tracing::info!(identity = elector.identity(), "became leader");
    metrics.leader.set(1);

    let watched: Vec<&str> = args
        .watch_namespaces
        .iter()
        .map(|ns| ns.trim())
        .filter(|ns| !ns.is_empty())
        .collect();
    if watched.is_empty() {
        tracing::info!("watching every namespace");
    } else {
        tracing::info!(namespaces = %watched.join(","), "watching these namespaces only");
    }
    let ctx = Arc::new(
        Context::new(client, Arc::new(RdKafkaAdmin), args.image, metrics)
            .with_allowed_image_prefixes(args.allowed_image_prefixes)
            .with_watch_namespaces(args.watch_namespaces)
            .with_cleanup_deadline(Duration::from_secs(args.cleanup_deadline_seconds)),
    );
    // Biased: after any pause (a frozen process, a starved runtime) the Lease is checked
    // before the controller may act again.
    tokio::select! {
        biased;
        lost = elector.hold(acquired) => {
            // Another replica may already reconcile: stop at once rather than race it.
            tracing::error!(?lost, "lost leadership; exiting");
            std::process::exit(1);
        }
        signal = &mut shutdown => {
            // Stop reconciling (the controller future is dropped here), then hand the Lease
            // over so the next replica starts at once instead of waiting out the lease.
            tracing::info!(signal, "shutting down: releasing the Lease");
            if let Err(error) = elector.release().await {
                tracing::warn!(%error, "releasing the Lease failed; the next leader waits it out");
            }
        }
        () = controller::run(ctx) => tracing::info!("controller stopped"),
    }
    server.abort();
    Ok(())
}
