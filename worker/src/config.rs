//! Command line and environment configuration of the `wapipe-worker` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wapipe_core::kafka::{KafkaArgs, TopicNames};

use crate::sink::SinkKind;

/// Consumes the raw topic and writes events to a sink; also replays dead letters.
#[derive(Debug, clap::Parser)]
#[command(
    name = "wapipe-worker",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Without a subcommand the worker runs (same as `run`).
    #[command(flatten)]
    pub run: RunArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Consume the raw topic and write events to the sink (the default).
    Run(Box<RunArgs>),
    /// Dead-letter topic tools.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Reset the group's offsets on the raw topic to a point in time, so the worker processes
    /// everything since then again. Refused while the group has active members.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Produce dead letters back to the raw topic (all, or filtered by time or key).
    Replay(DlqReplayArgs),
}

/// The consumer group protocol of the worker's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupProtocol {
    /// The group coordinator of KIP-848 (`group.protocol=consumer`): incremental, server-side
    /// assignment.
    Consumer,
    /// The classic protocol (`group.protocol=classic`), eager rebalances.
    Classic,
}

impl GroupProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Consumer => "consumer",
            GroupProtocol::Classic => "classic",
        }
    }
}

/// How long a hand-over waits for abandoned writes to stop (a dropped future stops at its next
/// poll, so this only guards against a runtime that cannot run them). A bound on the liveness
/// timeout ([`RunArgs::check_liveness_bound`]).
pub(crate) const ABANDON_WAIT: Duration = Duration::from_secs(10);

/// Where the worker reads and which group it belongs to.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub names: TopicNames,

    /// Consumer group of the workers.
    #[arg(long, env = wapipe_core::env::GROUP, default_value = "wapipe-worker")]
    pub group: String,

    /// Log format: text or json.
    #[arg(long, env = wapipe_core::env::LOG_FORMAT, default_value = "text")]
    pub log_format: LogFormat,
}

pub use wapipe_core::service::LogFormat;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub topics: TopicArgs,

    /// Where events are written.
    #[arg(long, env = wapipe_core::env::SINK, default_value = "log")]
    pub sink: SinkKind,

    /// PostgreSQL URL for the postgres sink (postgres://user@host/db).
    #[arg(long, env = wapipe_core::env::DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<String>,

    /// File holding the PostgreSQL URL (a mounted Secret); wins over --database-url.
    #[arg(long, env = "WAPIPE_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// PostgreSQL schema for the tables, created if missing; default: the search path.
    #[arg(long, env = "WAPIPE_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,

    /// CA certificates (PEM) that the PostgreSQL server's certificate must chain to: needed by
    /// sslmode=verify-ca and verify-full, and makes require verify the chain too (as libpq).
    /// An `sslrootcert=PATH` in the URL wins over it.
    #[arg(long, env = "WAPIPE_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,

    /// PostgreSQL connections of the postgres sink (writes are spread over them).
    #[arg(long, env = "WAPIPE_DATABASE_CONNECTIONS", default_value_t = crate::sink::DEFAULT_CONNECTIONS)]
    pub database_connections: usize,

    /// Database file of the sqlite sink (local mode), created if missing; a
    /// `--database-url sqlite://PATH` wins over it.
    #[arg(long, env = wapipe_core::env::SQLITE_PATH, default_value = "wapipe.db")]
    pub sqlite_path: PathBuf,

    /// URL the http sink POSTs each event to.
    #[arg(long, env = wapipe_core::env::HTTP_SINK_URL)]
    pub http_sink_url: Option<String>,

    /// Timeout of one http sink request.
    #[arg(long, env = "WAPIPE_HTTP_SINK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http_sink_timeout: Duration,

    /// Attempts for an event that fails by its own fault before it is dead-lettered.
    #[arg(long, env = wapipe_core::env::MAX_ATTEMPTS, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,

    /// Sink writes in flight at the same time, each a batch of events (the http sink: one
    /// event each; postgres: at most one per connection). A user's events are always written
    /// in order, one batch at a time.
    #[arg(long, env = "WAPIPE_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Events received but not finished before fetching pauses. By default twice what the sink
    /// writes at once (its batch size times the batches it takes in flight, at most
    /// --concurrency), at least 1,000 and at most 4,000: 4,000 for postgres (4 connections of
    /// 500), sqlite and log, 1,000 for http. Also sizes librdkafka's prefetch: two and a half
    /// times as many messages a partition and 4 KiB an event (at least 1,000 and 4 MiB, at
    /// most librdkafka's defaults), unless WAPIPE_KAFKA_OPTIONS sets it.
    #[arg(long, env = "WAPIPE_MAX_BUFFERED")]
    pub max_buffered: Option<usize>,

    /// First backoff between attempts; doubles per attempt up to --max-backoff.
    #[arg(long, env = "WAPIPE_RETRY_BACKOFF", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,

    /// Longest backoff, also while waiting for an unavailable sink.
    #[arg(long, env = "WAPIPE_MAX_BACKOFF", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,

    /// How long shutdown and partition revocation wait for in-flight events.
    #[arg(long, env = wapipe_core::env::DRAIN_TIMEOUT, default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Static group membership id (e.g. the pod name of a StatefulSet): a replica restarted
    /// under the same id gets its partitions back at once instead of after a session timeout.
    #[arg(long, env = "WAPIPE_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,

    /// Consumer group protocol: `classic` (every member stops for a rebalance, which takes
    /// about a second) or `consumer` (KIP-848: the broker moves only the partitions that change
    /// owner, but a moved partition waits for the heartbeats of both owners, 5 s apart by
    /// default, so a 1 → 8 step stalled longer in docs/scaling.md's measurement). `consumer`
    /// needs Kafka 4.0+ (or 3.7+ with the new coordinator enabled); on brokers without it the
    /// worker falls back to `classic` by itself.
    #[arg(long, env = "WAPIPE_GROUP_PROTOCOL", value_enum, default_value_t = GroupProtocol::Classic)]
    pub group_protocol: GroupProtocol,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = wapipe_core::env::LISTEN, default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// `/healthz` answers 503 once the consumer loop has not polled Kafka for this long. The
    /// loop never waits for the sink (an outage fails readiness only); its longest legitimate
    /// wait is a partition revocation, up to --drain-timeout plus 10 s, so this must be longer.
    #[arg(long, env = wapipe_core::env::LIVENESS_TIMEOUT, default_value = "60s", value_parser = humantime::parse_duration)]
    pub liveness_timeout: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DlqReplayArgs {
    #[command(flatten)]
    pub topics: TopicArgs,

    /// Only dead letters written at or after this point: a duration ago (`24h`), an RFC 3339
    /// time, or unix milliseconds.
    #[arg(long)]
    pub since: Option<String>,

    /// Only dead letters written before this point (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,

    /// Only dead letters with this key (user).
    #[arg(long)]
    pub key: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub topics: TopicArgs,

    /// Point in time to rewind to: a duration ago (`24h`), an RFC 3339 time, or unix ms.
    #[arg(long)]
    pub since: String,

    /// Reset even when the group's members cannot be listed (a principal without Describe on
    /// the group). A group with live members is always refused: Kafka moves a group's offsets
    /// only while it is empty.
    #[arg(long)]
    pub force: bool,
}

impl RunArgs {
    /// The database URL from the file or the flag.
    pub fn database_url(&self) -> crate::Result<Option<String>> {
        wapipe_core::secret::file_or_inline(
            self.database_url.as_deref(),
            self.database_url_file.as_deref(),
        )
        .map_err(|e| crate::Error::ReadDatabaseUrl {
            path: e.path,
            source: e.source,
        })
    }

    /// The sqlite sink's file: the path of a `sqlite://PATH` database URL, else --sqlite-path.
    pub fn sqlite_file(&self) -> crate::Result<PathBuf> {
        Ok(self
            .database_url()?
            .as_deref()
            .and_then(|url| url.strip_prefix("sqlite://"))
            .filter(|path| !path.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| self.sqlite_path.clone()))
    }
}

/// Parses a point in time: a duration ago (`24h`, `90m`), an RFC 3339 time, or unix ms.
pub fn parse_point_in_time(raw: &str, now_ms: i64) -> crate::Result<i64> {
    let raw = raw.trim();
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(ago) = humantime::parse_duration(raw) {
        return Ok(now_ms - ago.as_millis() as i64);
    }
    humantime::parse_rfc3339_weak(raw)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| crate::Error::ParseSince(raw.to_string()))
}

impl RunArgs {
    /// Refuses a liveness bound a partition revocation could outlast: the consumer loop waits
    /// inside the poll for the revoked partitions' writes, up to the drain timeout and then the
    /// wait for abandoned writes, and `/healthz` must not fail meanwhile.
    pub fn check_liveness_bound(&self) -> Result<(), crate::error::Error> {
        let abandon = ABANDON_WAIT;
        if self.liveness_timeout <= self.drain_timeout + abandon {
            return Err(crate::error::Error::LivenessBelowDrain {
                liveness: self.liveness_timeout,
                drain: self.drain_timeout,
                abandon,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn points_in_time_are_durations_ago_timestamps_or_unix_ms() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_point_in_time("24h", now).unwrap(), now - 86_400_000);
        assert_eq!(
            parse_point_in_time("1600000000000", now).unwrap(),
            1_600_000_000_000
        );
        assert_eq!(
            parse_point_in_time("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000
        );
        assert!(parse_point_in_time("yesterday-ish", now).is_err());
    }

    #[test]
    fn a_sqlite_database_url_names_the_sqlite_sinks_file() {
        let cli = Cli::try_parse_from([
            "wapipe-worker",
            "--sink",
            "sqlite",
            "--database-url",
            "sqlite:///var/lib/wapipe/rows.db",
        ])
        .unwrap();
        assert_eq!(cli.run.sink, SinkKind::Sqlite);
        assert_eq!(
            cli.run.sqlite_file().unwrap(),
            PathBuf::from("/var/lib/wapipe/rows.db")
        );
        let cli = Cli::try_parse_from(["wapipe-worker", "--sink", "sqlite"]).unwrap();
        assert_eq!(cli.run.sqlite_file().unwrap(), PathBuf::from("wapipe.db"));
    }

    #[test]
    fn the_liveness_bound_must_outlast_a_partition_revocation() {
        let cli = Cli::try_parse_from(["wapipe-worker"]).unwrap();
        assert_eq!(cli.run.liveness_timeout, Duration::from_secs(60));
        cli.run.check_liveness_bound().expect("the defaults fit");
        let cli = Cli::try_parse_from(["wapipe-worker", "--drain-timeout", "50s"]).unwrap();
        let error = cli.run.check_liveness_bound().unwrap_err().to_string();
        assert!(
            error.contains("--liveness-timeout") && error.contains("--drain-timeout"),
            "{error}"
        );
        let cli = Cli::try_parse_from([
            "wapipe-worker",
            "--drain-timeout",
            "50s",
            "--liveness-timeout",
            "2m",
        ])
        .unwrap();
        cli.run.check_liveness_bound().expect("a longer bound fits");
    }

    #[test]
    fn no_subcommand_means_run_and_subcommands_parse() {
        let cli =
            Cli::try_parse_from(["wapipe-worker", "--sink", "postgres", "--concurrency", "4"])
                .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.sink, SinkKind::Postgres);
        assert_eq!(cli.run.max_attempts, 3);
        let cli = Cli::try_parse_from(["wapipe-worker", "dlq", "replay", "--key", "1555"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Dlq(DlqCommand::Replay(ref a))) if a.key.as_deref() == Some("1555"))
        );
        let cli =
            Cli::try_parse_from(["wapipe-worker", "replay", "--since", "24h", "--force"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Replay(ref a)) if a.force));
    }
}
