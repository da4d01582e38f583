//! Sinks: where routed events end up. A sink either writes an event (idempotently: writing the
//! same event twice leaves one effect), rejects it ([`Error::SinkRejected`](crate::Error::SinkRejected), the event's fault)
//! or is unavailable ([`Error::SinkUnavailable`](crate::Error::SinkUnavailable), waited out without dead-lettering).
//!
//! The worker hands a sink the ready events at once (at most [`Sink::max_batch`], each user's
//! in order): a sink that can writes them all or none, in order, in one transaction
//! ([`Sink::write_batch`]); one that cannot writes them one by one.
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

    /// Writes one event: a batch of one. Must be idempotent for the same [`Event::id`].
    async fn write(&self, event: &Event) -> Result<()> {
        self.write_batch(std::slice::from_ref(event)).await
    }

    /// Most events the worker hands [`Sink::write_batch`] at once; 1 (the default) means the
    /// sink only ever sees one event per call, as many calls in flight as `--concurrency`.
    fn max_batch(&self) -> usize {
        1
    }

    /// Most batches the sink takes in flight at once (the worker's `--concurrency` caps it
    /// too). A database that commits each batch gains from fewer, fuller batches: while its
    /// connections are busy, the next batch fills.
    fn max_concurrent_batches(&self) -> usize {
        usize::MAX
    }

    /// Writes several events (one user's in the order given; a sink must keep it, as one
    /// transaction in order does): all of them, or (on an error) possibly only
    /// some, so a retry writes them all again (idempotently). On an error that is an event's
    /// fault the worker writes the batch's events one by one to find whose it is. A sink that
    /// cannot write several at once writes them one by one, in order.
    async fn write_batch(&self, events: &[Event]) -> Result<()>;

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
