//! Running the ingress: producer, readiness probe loop, HTTP server, graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::sink::{EventSink, KafkaSink, ProducerSettings};
use crate::{router, AppState, Config, Error};

/// Sets up logging as the configuration asks (text or json, filtered by `RUST_LOG`).
pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Runs the ingress until `shutdown` resolves: stops accepting, lets in-flight requests finish
/// (up to the shutdown timeout), then flushes the producer.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let secrets = config.secrets()?;
    let sink = Arc::new(KafkaSink::new(
        &config.kafka,
        ProducerSettings {
            topic: config.topic.clone(),
            produce_timeout: config.produce_timeout,
            linger: config.linger,
            queue_messages: config.producer_queue_messages,
            queue_kbytes: config.producer_queue_kbytes,
            max_record_bytes: config.max_body_bytes,
        },
    )?);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    tracing::info!(
        listen = %config.listen,
        provider = %config.provider,
        topic = %config.topic,
        brokers = %config.kafka.brokers,
        "ingress listening"
    );

    let (stop_probe, mut probe_stopped) = watch::channel(false);
    let probe_sink = sink.clone();
    let interval = config.readiness_interval;
    let probe = tokio::spawn(async move {
        loop {
            let sink = probe_sink.clone();
            let ready =
                tokio::task::spawn_blocking(move || sink.check_readiness(Duration::from_secs(2)))
                    .await
                    .unwrap_or(false);
            tracing::trace!(ready, "readiness probe");
            tokio::select! {
                _ = tokio::time::sleep(interval) => {},
                _ = probe_stopped.changed() => return,
            }
        }
    });

    let state = Arc::new(AppState::new(&config, secrets, sink.clone()));
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = signalled_tx.send(());
    };
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(graceful);
    let grace = config.shutdown_timeout;
    tokio::select! {
        served = server => served.map_err(Error::Serve)?,
        _ = async {
            let _ = signalled_rx.await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(?grace, "in-flight requests did not finish in time"),
    }
    let _ = stop_probe.send(true);
    let _ = probe.await;
    let flush_sink = sink.clone();
    let _ = tokio::task::spawn_blocking(move || flush_sink.flush(grace)).await;
    tracing::info!("ingress stopped");
    Ok(())
}
