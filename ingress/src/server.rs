//! Running the ingress: producer, readiness probe loop, secret reloads, the two HTTP listeners
//! (the public webhook port and the admin port for probes and metrics), graceful shutdown.
//!
//! The server is hyper's HTTP/1 connection under a plain accept loop rather than
//! `axum::serve`, for the bound on how long a request's headers may take to arrive: a
//! connection that does not finish them in time is closed, whatever it holds.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures::FutureExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wapipe_core::error::Causes;

use crate::secrets::{SecretSources, Secrets};
use crate::sink::{EventSink, KafkaSink, ProducerSettings};
use crate::{admin_router, router, AppState, Config, Error};

/// Runs the ingress until `shutdown` resolves: answers not ready but keeps serving for the
/// shutdown delay, stops accepting, lets in-flight requests finish (up to the shutdown timeout),
/// then flushes the producer.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.check_limits()?;
    let sources = config.secret_sources();
    let secrets = sources.load()?;
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
    let listener = bind(config.listen).await?;
    let admin_listener = bind(config.admin_listen).await?;
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin_listen,
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
    let reload = sources.has_files().then(|| {
        tokio::spawn(reload_secrets(
            state.clone(),
            sources,
            config.secret_reload_interval,
            stop_probe.subscribe(),
        ))
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let connections = GracefulShutdown::new();
    let stopping = state.clone();
    let delay = config.shutdown_delay;
    let stop_accepting = async move {
        shutdown.await;
        stopping.begin_stopping();
        if !delay.is_zero() {
            tracing::info!(
                ?delay,
                "stop signal: answering not ready, still serving until the endpoints drop this pod"
            );
            tokio::time::sleep(delay).await;
        }
    };
    // Both listeners stop accepting at the same moment; until then the admin port answers the
    // kubelet's probes (`/readyz`: 503 while stopping) and Prometheus.
    let stop_accepting = stop_accepting.boxed().shared();
    tokio::join!(
        accept_until(
            stop_accepting.clone(),
            &listener,
            &http,
            router(state.clone()),
            &connections,
            &state.metrics.header_timeouts,
        ),
        accept_until(
            stop_accepting,
            &admin_listener,
            &http,
            admin_router(state.clone()),
            &connections,
            &state.metrics.header_timeouts,
        ),
    );
    drop(listener);
    drop(admin_listener);
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let grace = config.shutdown_timeout;
    tokio::select! {
        _ = connections.shutdown() => {},
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "in-flight requests did not finish in time");
        }
    }
    let _ = stop_probe.send(true);
    let _ = probe.await;
    if let Some(reload) = reload {
        let _ = reload.await;
    }
    let flush_sink = sink.clone();
    let _ = tokio::task::spawn_blocking(move || flush_sink.flush(grace)).await;
    tracing::info!("ingress stopped");
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Reads the secret files every `interval` and puts a changed set in use. A read that fails
/// (or finds no app secret, as an emptied Secret would) keeps the set in use: a request is
/// never checked against nothing.
async fn reload_secrets(
    state: Arc<AppState>,
    sources: SecretSources,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {},
            _ = stopped.changed() => return,
        }
        let read = sources.clone();
        let loaded = match tokio::task::spawn_blocking(move || read.load()).await {
            Ok(loaded) => loaded,
            Err(_) => continue,
        };
        match loaded {
            Ok(secrets) => {
                let names = |set: &Secrets| -> Vec<String> {
                    set.signing.iter().map(|s| s.name.clone()).collect()
                };
                let now = names(&secrets);
                state.metrics.secrets_loaded(&secrets);
                if let Some(before) = state.secrets.replace(secrets) {
                    state.metrics.reloaded("changed");
                    tracing::info!(before = ?names(&before), now = ?now, "secrets changed: the new set is in use");
                }
            }
            Err(error) => {
                state.metrics.reloaded("failed");
                tracing::warn!(error = %Causes(&error), "reading the secrets again failed: the previous set stays in use");
            }
        }
    }
}

/// Serves each accepted connection on its own task until `shutdown` resolves.
async fn accept_until(
    shutdown: impl Future<Output = ()>,
    listener: &TcpListener,
    http: &http1::Builder,
    app: Router,
    connections: &GracefulShutdown,
    header_timeouts: &Counter,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // The peer gave up between connecting and being accepted.
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Most likely out of file descriptors: wait for some to close, not spin.
                tracing::error!(%error, "accepting a connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = &mut shutdown => return,
                }
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        let header_timeouts = header_timeouts.clone();
        tokio::spawn(async move {
            match connection.await {
                Ok(()) => {}
                Err(error) if error.is_timeout() => {
                    header_timeouts.inc();
                    tracing::debug!(%peer, "closed a connection: its request headers did not arrive in time");
                }
                Err(error) => tracing::trace!(%peer, %error, "connection ended with an error"),
            }
        });
    }
}

fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
