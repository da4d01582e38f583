//! The crate's one error type, and the rule that decides whose fault a failure is: the event's
//! own (retried a few times, then dead-lettered) or the sink's (waited out, never dead-lettered).

/// Everything that can go wrong in the worker, named for the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parsing the event: {0}")]
    ParseEvent(String),

    #[error("the {sink} sink rejected the event: {reason}")]
    SinkRejected { sink: &'static str, reason: String },

    #[error("the {sink} sink is unavailable: {reason}")]
    SinkUnavailable { sink: &'static str, reason: String },

    #[error("producing to the dead-letter topic {topic}")]
    ProduceDeadLetter {
        topic: String,
        source: rdkafka::error::KafkaError,
    },

    #[error("producing to the topic {topic}")]
    Produce {
        topic: String,
        source: rdkafka::error::KafkaError,
    },

    #[error("Kafka client")]
    Kafka(#[from] rdkafka::error::KafkaError),

    #[error("the brokers refused group.protocol=consumer (KIP-848): {0}")]
    GroupProtocolUnsupported(String),

    #[error("Kafka settings")]
    KafkaConfig(#[from] wapipe_core::kafka::KafkaConfigError),

    #[error("connecting to PostgreSQL (sslmode={sslmode})")]
    ConnectDatabase {
        sslmode: &'static str,
        source: tokio_postgres::Error,
    },

    #[error("reading the database CA certificates from {path}: {reason}")]
    ReadDatabaseCa {
        path: std::path::PathBuf,
        reason: String,
    },

    #[error("migrating the PostgreSQL schema")]
    MigrateDatabase(#[source] tokio_postgres::Error),

    #[error("reading the database URL from {path}")]
    ReadDatabaseUrl {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    #[error(
        "--liveness-timeout ({liveness:?}) must be longer than a partition revocation may \
         wait inside the poll (--drain-timeout {drain:?} plus {abandon:?} for abandoned writes): \
         /healthz would fail during a rebalance and the pod be restarted"
    )]
    LivenessBelowDrain {
        liveness: std::time::Duration,
        drain: std::time::Duration,
        abandon: std::time::Duration,
    },

    #[error("the topic {0} does not exist")]
    TopicMissing(String),

    #[error("reading {topic} stalled before its end")]
    ReadStalled { topic: String },

    #[error("--sink {sink} needs {needs}")]
    SinkSettingMissing {
        sink: &'static str,
        /// The flag (and its environment variable) to give.
        needs: &'static str,
    },

    #[error("parsing the database URL")]
    ParseDatabaseUrl(#[source] tokio_postgres::Error),

    /// The TLS the database URL (or --database-ca-file) asks for cannot be set up as written.
    #[error("database TLS: {0}")]
    DatabaseTls(String),

    #[error("building the HTTP client")]
    BuildHttpClient(#[source] reqwest::Error),

    #[error("--since {0:?} is neither a duration (24h), an RFC 3339 time nor unix milliseconds")]
    ParseSince(String),

    #[error("the offset reset task panicked or was cancelled")]
    ResetTask(#[source] tokio::task::JoinError),

    #[error("cannot list the members of group {group} (pass --force to reset anyway)")]
    CheckGroup {
        group: String,
        source: rdkafka::error::KafkaError,
    },

    #[error(
        "the group {group} has {members} active member(s): Kafka moves a group's offsets only \
         while it has none; stop the workers (scale the worker Deployment to 0) and run again"
    )]
    GroupActive { group: String, members: usize },

    #[error("serving HTTP on {addr}")]
    Serve {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The event itself cannot be handled: retry a few times, then dead-letter it.
    Event,
    /// The sink or the broker is not working: wait and retry forever, never dead-letter.
    Infrastructure,
}

impl Error {
    /// Every variant is listed, with no default: a new error must be placed on purpose, since
    /// one counted as infrastructure by mistake would retry an event forever instead of
    /// dead-lettering it.
    pub fn fault(&self) -> Fault {
        match self {
            Error::ParseEvent(_) | Error::SinkRejected { .. } => Fault::Event,
            Error::SinkUnavailable { .. }
            | Error::ProduceDeadLetter { .. }
            | Error::Produce { .. }
            | Error::Kafka(_)
            | Error::GroupProtocolUnsupported(_)
            | Error::KafkaConfig(_)
            | Error::ConnectDatabase { .. }
            | Error::ReadDatabaseCa { .. }
            | Error::MigrateDatabase(_)
            | Error::ReadDatabaseUrl { .. }
            | Error::TopicMissing(_)
            | Error::ReadStalled { .. }
            | Error::SinkSettingMissing { .. }
            | Error::ParseDatabaseUrl(_)
            | Error::DatabaseTls(_)
            | Error::BuildHttpClient(_)
            | Error::ParseSince(_)
            | Error::ResetTask(_)
            | Error::CheckGroup { .. }
            | Error::GroupActive { .. }
            | Error::Serve { .. }
            | Error::LivenessBelowDrain { .. } => Fault::Infrastructure,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_events_own_failures_lead_to_a_dead_letter() {
        let rejected = Error::SinkRejected {
            sink: "postgres",
            reason: "22P02".into(),
        };
        let unavailable = Error::SinkUnavailable {
            sink: "postgres",
            reason: "connection refused".into(),
        };
        assert_eq!(Error::ParseEvent("not JSON".into()).fault(), Fault::Event);
        assert_eq!(rejected.fault(), Fault::Event);
        assert_eq!(unavailable.fault(), Fault::Infrastructure);
        assert_eq!(
            Error::DatabaseTls("sslrootcert=system".into()).fault(),
            Fault::Infrastructure
        );
    }
}
