//! The wapipe worker: consumes the raw topic in a consumer group and writes each event to a
//! sink, in order per user, at least once (idempotent sinks make it effectively once), with
//! retries and a dead-letter topic for events that cannot be handled.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod model;
pub mod observe;
pub mod replay;
pub mod route;
mod scan;
pub mod schedule;
pub mod sink;
pub mod worker;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wapipe_core::error::Causes;
use wapipe_core::time::now_ms;

pub use config::Cli;
pub use error::{Error, Result};
pub use worker::{Spawned, Worker, WorkerSettings};

use config::{Command, DlqCommand, RunArgs};
use sink::{HttpSink, LogSink, PostgresOptions, PostgresSink, SharedSink, SinkKind, SqliteSink};

/// Builds the sink `args` chooses, connecting (and migrating) where it has to.
pub async fn build_sink(args: &RunArgs) -> Result<SharedSink> {
    Ok(match args.sink {
        SinkKind::Log => Arc::new(LogSink::stdout()),
        SinkKind::Http => {
            let url = args
                .http_sink_url
                .as_deref()
                .ok_or_else(|| Error::SinkSettingMissing {
                    sink: "http",
                    needs: "--http-sink-url (WAPIPE_HTTP_SINK_URL)",
                })?;
            Arc::new(HttpSink::new(url, args.http_sink_timeout)?)
        }
        SinkKind::Sqlite => Arc::new(SqliteSink::open(&args.sqlite_file()?)?),
        SinkKind::Postgres => {
            let url = args
                .database_url()?
                .ok_or_else(|| Error::SinkSettingMissing {
                    sink: "postgres",
                    needs: "--database-url (WAPIPE_DATABASE_URL or _FILE)",
                })?;
            let options = PostgresOptions {
                schema: args.database_schema.clone(),
                connections: args.database_connections,
                ca_file: args.database_ca_file.clone(),
            };
            Arc::new(PostgresSink::connect_with(&url, options).await?)
        }
    })
}

fn settings(args: &RunArgs) -> WorkerSettings {
    let t = &args.topics;
    WorkerSettings {
        max_attempts: args.max_attempts,
        concurrency: args.concurrency as usize,
        max_buffered: args.max_buffered.map(|events| events.max(1)),
        retry_backoff: args.retry_backoff,
        max_backoff: args.max_backoff,
        drain_timeout: args.drain_timeout,
        sink_timeout: args
            .http_sink_timeout
            .max(std::time::Duration::from_secs(30)),
        group_instance_id: args.group_instance_id.clone(),
        group_protocol: args.group_protocol,
        ..WorkerSettings::new(
            t.kafka.clone(),
            &t.names.topic,
            &t.names.dead_letter_topic,
            &t.group,
        )
    }
}

/// Runs the worker with its HTTP endpoints until SIGTERM or Ctrl-C.
pub async fn run_worker(args: RunArgs) -> Result<()> {
    args.check_liveness_bound()?;
    let worker = Worker::with_liveness_bound(args.liveness_timeout);
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| Error::Serve {
            addr: args.listen,
            source,
        })?;
    let app = wapipe_core::service::probe_router(Arc::new(observe::AppState {
        metrics: worker.metrics.clone(),
        health: worker.health.clone(),
    }));
    let server_shutdown = shutdown.clone();
    let addr = args.listen;
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .await
            .map_err(|source| Error::Serve { addr, source })
    });
    let signal_shutdown = shutdown.clone();
    tokio::spawn(async move {
        async {
            wapipe_core::service::stop_signal().await;
        }
        .await;
        tracing::info!("shutdown signal received");
        signal_shutdown.cancel();
    });
    let Some(sink) = wait_for_sink(&args, &worker.health, &shutdown).await? else {
        return Ok(());
    };
    let result = worker.run(settings(&args), sink, shutdown.clone()).await;
    shutdown.cancel();
    let _ = server.await;
    result
}

/// Builds the sink, retrying while the database cannot be reached; `None` when shutdown came
/// first. Until the sink is up the worker is not ready, but it is alive: liveness is marked
/// all along (a database down at startup must not get the pod restarted, which would not bring
/// the database back), and the consumer loop takes over marking it once it runs.
async fn wait_for_sink(
    args: &RunArgs,
    health: &Arc<observe::Health>,
    shutdown: &CancellationToken,
) -> Result<Option<SharedSink>> {
    let alive = tokio::spawn({
        let health = health.clone();
        async move {
            loop {
                health.mark_polled();
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    });
    let sink = loop {
        match build_sink(args).await {
            Ok(sink) => break Ok(Some(sink)),
            Err(error @ (Error::ConnectDatabase { .. } | Error::MigrateDatabase(_))) => {
                tracing::warn!(error = %Causes(&error), "sink not reachable yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    _ = shutdown.cancelled() => break Ok(None),
                }
            }
            Err(error) => break Err(error),
        }
    };
    alive.abort();
    sink
}

/// Runs what the command line asks for.
pub async fn run_cli(cli: Cli) -> Result<()> {
    match cli.command {
        None => {
            wapipe_core::service::init_tracing(cli.run.topics.log_format);
            run_worker(cli.run).await
        }
        Some(Command::Run(args)) => {
            wapipe_core::service::init_tracing(args.topics.log_format);
            run_worker(*args).await
        }
        Some(Command::Dlq(DlqCommand::Replay(args))) => {
            wapipe_core::service::init_tracing(args.topics.log_format);
            let now = now_ms();
            let filter = replay::DeadLetterFilter {
                since_ms: args
                    .since
                    .as_deref()
                    .map(|s| config::parse_point_in_time(s, now))
                    .transpose()?,
                until_ms: args
                    .until
                    .as_deref()
                    .map(|s| config::parse_point_in_time(s, now))
                    .transpose()?,
                key: args.key.clone(),
            };
            let (kafka, names) = (&args.topics.kafka, &args.topics.names);
            let summary =
                replay::replay_dead_letters(kafka, &names.dead_letter_topic, &names.topic, &filter)
                    .await?;
            println!(
                "replayed {} of {} dead letters from {} to {}",
                summary.replayed, summary.scanned, names.dead_letter_topic, names.topic
            );
            Ok(())
        }
        Some(Command::Replay(args)) => {
            wapipe_core::service::init_tracing(args.topics.log_format);
            let since = config::parse_point_in_time(&args.since, now_ms())?;
            let t = args.topics.clone();
            let offsets = tokio::task::spawn_blocking(move || {
                replay::reset_offsets_to_time(&t.kafka, &t.names.topic, &t.group, since, args.force)
            })
            .await
            .map_err(Error::ResetTask)??;
            for (partition, offset) in offsets {
                println!(
                    "{} partition {partition}: group {} rewound to offset {offset}",
                    args.topics.names.topic, args.topics.group
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[tokio::test]
    async fn waiting_for_an_unreachable_database_at_startup_keeps_the_worker_alive() {
        let cli = Cli::try_parse_from([
            "wapipe-worker",
            "--sink",
            "postgres",
            "--database-url",
            "postgres://wapipe@127.0.0.1:1/wapipe?sslmode=disable",
        ])
        .unwrap();
        let health = Arc::new(observe::Health::new(Duration::from_millis(300)));
        let shutdown = CancellationToken::new();
        let waiting = tokio::spawn({
            let (health, shutdown) = (health.clone(), shutdown.clone());
            async move { wait_for_sink(&cli.run, &health, &shutdown).await }
        });
        // Several bounds pass while the connection is refused and retried: alive throughout.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(health.liveness().is_ok(), "{:?}", health.since_last_poll());
        }
        assert!(!health.is_ready());
        shutdown.cancel();
        let sink = waiting
            .await
            .unwrap()
            .expect("no error but the retried one");
        assert!(sink.is_none(), "shutdown came first");
    }
}
