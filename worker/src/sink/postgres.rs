//! The `postgres` sink: messages, statuses and other events in tables created by embedded
//! migrations. A batch of events is written by one idempotent statement (`ON CONFLICT DO
//! NOTHING`, and a rank-guarded upsert for the current status; see [`batch`]): one transaction
//! and one commit per batch, and replays and redeliveries change nothing.
//! A few connections are shared round-robin by the concurrent writers (tokio-postgres pipelines
//! queries on each; several backends let commits overlap); a broken one is reopened on its next
//! use. A connection counts as broken once it is closed, once a request on it failed at the
//! connection level, or once a request on it was given up unanswered (the worker's sink timeout):
//! after a failover the old connections can hang half-open instead of failing, and TCP
//! keepalives alone notice that only after minutes, behind a proxy never.
//! TLS follows the URL's `sslmode` as libpq does (see [`tls`]).

mod batch;
mod tls;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::AbortHandle;
use tokio_postgres::{Client, Statement};
use wapipe_core::error::with_causes;

use crate::error::{Error, Result};
use crate::route::Event;

use super::Sink;

pub use self::tls::SslMode;
use self::tls::Tls;

/// Migrations compiled into the binary: (version, name, SQL), applied in order once each.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "status_participant",
        include_str!("../../migrations/0002_status_participant.sql"),
    ),
];

const SINK: &str = "postgres";

/// Most events written by one statement.
const MAX_BATCH: usize = 500;

struct Connection {
    client: Client,
    write_batch: Statement,
    /// Set when a request failed at the connection level or was given up unanswered.
    broken: AtomicBool,
    /// The task driving the socket; a broken connection's would wait on it forever.
    driver: AbortHandle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // A healthy connection ends itself (Terminate) once its client is gone.
        if self.broken.load(Ordering::Relaxed) {
            self.driver.abort();
        }
    }
}

/// Marks the connection broken unless the request it watches finished with an answer.
struct InFlight<'a> {
    connection: &'a Connection,
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.connection.broken.store(true, Ordering::Relaxed);
        }
    }
}

/// Writes events to PostgreSQL.
pub struct PostgresSink {
    /// The URL without `sslmode` and `sslrootcert`, which `tls` holds.
    config: tokio_postgres::Config,
    tls: Tls,
    schema: Option<String>,
    connections: Vec<Mutex<Option<Arc<Connection>>>>,
    next: AtomicUsize,
}

/// Connections opened by default.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// How the sink connects, beyond its URL.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Schema for the tables, created if missing (and put first on the search path); `None`
    /// keeps the search path.
    pub schema: Option<String>,
    /// Connections shared by the writers (at least one).
    pub connections: usize,
    /// CA certificates (PEM) the server's certificate must chain to; the URL's `sslrootcert`
    /// wins over it.
    pub ca_file: Option<PathBuf>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: None,
            connections: DEFAULT_CONNECTIONS,
            ca_file: None,
        }
    }
}

/// TCP keepalive and user timeout where the URL sets none (tokio-postgres's default idle time
/// is two hours): a peer gone silent is noticed within about a minute, also by a connection
/// that no request is waiting on.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVES_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

impl PostgresSink {
    /// Connects, creates `schema` if given (and puts it first on the search path), and runs
    /// the migrations. Fails if the database cannot be reached now.
    pub async fn connect(url: &str, schema: Option<String>) -> Result<PostgresSink> {
        let options = PostgresOptions {
            schema,
            ..PostgresOptions::default()
        };
        PostgresSink::connect_with(url, options).await
    }

    /// As [`PostgresSink::connect`], with all options. A URL that does not parse, an unknown
    /// `sslmode`, a verifying mode without a CA or an unreadable CA file fail at once (as
    /// [`Error::DatabaseTls`] or [`Error::ReadDatabaseCa`]); only reaching the server is worth
    /// retrying.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<PostgresSink> {
        let split = tls::split_url(url)?;
        let config: tokio_postgres::Config = split.rest.parse().map_err(Error::ParseDatabaseUrl)?;
        let mode = split.sslmode.unwrap_or(SslMode::Prefer);
        let ca = split
            .sslrootcert
            .map(PathBuf::from)
            .or(options.ca_file.clone());
        let tls = Tls::new(mode, ca)?;
        let sink = PostgresSink {
            config,
            tls,
            schema: options.schema,
            connections: (0..options.connections.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        };
        let (client, _) = sink
            .open_client()
            .await
            .map_err(|source| Error::ConnectDatabase {
                sslmode: mode.as_str(),
                source,
            })?;
        migrate(&client).await?;
        Ok(sink)
    }

    async fn open_client(
        &self,
    ) -> std::result::Result<(Client, AbortHandle), tokio_postgres::Error> {
        let mut config = self.config.clone();
        config.ssl_mode(self.tls.mode.negotiation());
        config.connect_timeout(Duration::from_secs(5));
        config.application_name("wapipe-worker");
        if config.get_keepalives_idle() == tokio_postgres::Config::new().get_keepalives_idle() {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVES_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVES_RETRIES);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        let (client, connection) = match config.connect(self.tls.connector()).await {
            Err(error) if self.tls.mode == SslMode::Prefer && Tls::handshake_failed(&error) => {
                tracing::warn!(
                    error = %with_causes(&error),
                    "sslmode=prefer: the TLS handshake failed; connecting without TLS"
                );
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                config.connect(self.tls.connector()).await?
            }
            result => result?,
        };
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "PostgreSQL connection closed");
            }
        })
        .abort_handle();
        if let Some(schema) = &self.schema {
            let quoted = quote_identifier(schema);
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {quoted}; SET search_path TO {quoted}"
                ))
                .await?;
        }
        Ok((client, driver))
    }

    async fn connection(&self) -> Result<Arc<Connection>> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        let mut slot = self.connections[index].lock().await;
        if let Some(connection) = slot.as_ref() {
            if !connection.client.is_closed() && !connection.broken.load(Ordering::Relaxed) {
                return Ok(connection.clone());
            }
            tracing::info!(
                slot = index,
                "replacing a PostgreSQL connection that closed, failed or went unanswered"
            );
        }
        *slot = None;
        let (client, driver) =
            self.open_client()
                .await
                .map_err(|error| Error::SinkUnavailable {
                    sink: SINK,
                    reason: format!(
                        "connecting (sslmode={}): {}",
                        self.tls.mode,
                        with_causes(&error)
                    ),
                })?;
        let connection = Arc::new(Connection {
            write_batch: client
                .prepare(&batch::statement())
                .await
                .map_err(classify)?,
            client,
            broken: AtomicBool::new(false),
            driver,
        });
        *slot = Some(connection.clone());
        Ok(connection)
    }
}

#[async_trait::async_trait]
impl Sink for PostgresSink {
    fn name(&self) -> &'static str {
        SINK
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn max_concurrent_batches(&self) -> usize {
        // One statement per connection: more would only queue behind each other.
        self.connections.len()
    }

    async fn write_batch(&self, events: &[Event]) -> Result<()> {
        let rows = batch::BatchRows::new(events);
        let c = self.connection().await?;
        // Dropped unanswered when the worker gives up waiting: the connection is then suspect.
        let mut in_flight = InFlight {
            connection: &c,
            answered: false,
        };
        let result = c.client.execute(&c.write_batch, &rows.params()).await;
        in_flight.answered = !result.as_ref().is_err_and(breaks_connection);
        result.map(|_| ()).map_err(classify)
    }
}

/// Data errors (class 22) and constraint violations (class 23) are the event's fault; anything
/// else (connection lost, server shutting down, missing table) is the database's.
fn classify(error: tokio_postgres::Error) -> Error {
    let event_fault = error
        .code()
        .map(|code| {
            let code = code.code();
            code.starts_with("22") || code.starts_with("23")
        })
        .unwrap_or(false);
    let reason = match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => with_causes(&error),
    };
    if event_fault {
        Error::SinkRejected { sink: SINK, reason }
    } else {
        Error::SinkUnavailable { sink: SINK, reason }
    }
}

/// Whether the connection is unusable after this error and must be replaced: no answer from
/// the server (I/O, closed, protocol), a connection exception (class 08), the server shutting
/// down (57P), or a read-only transaction (25006: the old primary, demoted, still connected).
fn breaks_connection(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        None => true,
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P") || code == "25006"
        }
    }
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Applies the embedded migrations that are not applied yet, under an advisory lock so that
/// replicas starting together migrate once.
pub async fn migrate(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "SELECT pg_advisory_lock(hashtext(current_schema() || '.wapipe_schema_migrations'));
             CREATE TABLE IF NOT EXISTS wapipe_schema_migrations (
                 version bigint PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(Error::MigrateDatabase)?;
    let result = apply_migrations(client).await;
    let unlock = client
        .batch_execute(
            "SELECT pg_advisory_unlock(hashtext(current_schema() || '.wapipe_schema_migrations'))",
        )
        .await
        .map_err(Error::MigrateDatabase);
    result.and(unlock)
}

async fn apply_migrations(client: &Client) -> Result<()> {
    for (version, name, sql) in MIGRATIONS {
        let applied = client
            .query_opt(
                "SELECT 1 FROM wapipe_schema_migrations WHERE version = $1",
                &[version],
            )
            .await
            .map_err(Error::MigrateDatabase)?;
        if applied.is_some() {
            continue;
        }
        tracing::info!(version, name, "applying migration");
        client
            .batch_execute(&format!(
                "BEGIN; {sql}; INSERT INTO wapipe_schema_migrations (version, name) \
                 VALUES ({version}, '{name}'); COMMIT;"
            ))
            .await
            .map_err(Error::MigrateDatabase)?;
    }
    Ok(())
}
