//! Sinks: where routed events end up. A sink either writes an event (idempotently: writing the
//! same event twice leaves one effect), rejects it ([`Error::SinkRejected`], the event's fault)
//! or is unavailable ([`Error::SinkUnavailable`], waited out without dead-lettering).
//!
//! `sqlite` is the local-mode sink: the postgres tables in one file.

mod http;
mod log;
mod postgres;
mod sqlite;

pub use self::http::HttpSink;
pub use self::log::LogSink;
pub use self::postgres::{PostgresOptions, PostgresSink, SslMode, DEFAULT_CONNECTIONS, MIGRATIONS};
pub use self::sqlite::{SqliteSink, SQLITE_MIGRATIONS};

use std::sync::Arc;

use crate::error::Result;
use crate::route::Event;

/// Where events are written.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Writes one event. Must be idempotent for the same [`Event::id`].
    async fn write(&self, event: &Event) -> Result<()>;

    /// Makes everything written so far durable. The worker calls it before it stores offsets
    /// for the auto-commit and before it commits on a hand-over or at shutdown, so an event
    /// whose offset is committed is never still sitting in a sink's buffer when the process
    /// dies. Sinks whose `write` returns only once the event is stored need nothing here.
    fn flush(&self) {}
}

/// The sinks `--sink` can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    Postgres,
    Sqlite,
    Http,
    Log,
}

pub type SharedSink = Arc<dyn Sink>;
