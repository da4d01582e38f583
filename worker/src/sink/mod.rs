//! Sinks: where routed events end up. A sink either writes an event (idempotently: writing the
//! same event twice leaves one effect), rejects it ([`Error::SinkRejected`], the event's fault)
//! or is unavailable ([`Error::SinkUnavailable`], waited out without dead-lettering).
//!
//! A local-mode `sqlite` sink fits the same trait: implement [`Sink`] and add a [`SinkKind`].

mod http;
mod log;
mod postgres;

pub use self::http::HttpSink;
pub use self::log::LogSink;
pub use self::postgres::{PostgresSink, MIGRATIONS};

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
}

/// The sinks `--sink` can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    Postgres,
    Http,
    Log,
}

pub type SharedSink = Arc<dyn Sink>;
