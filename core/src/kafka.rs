//! Kafka connections shared by every wapipe binary: one typed [`KafkaConnection`] (bootstrap
//! servers, SASL/TLS, raw librdkafka options) and the one way a client is configured from it;
//! the flags that describe one ([`KafkaArgs`]), with secrets from files (a mounted Secret).

use std::path::PathBuf;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};

use crate::{Provider, Record};

/// Connection flags, flattened into each binary's clap configuration.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KafkaArgs {
    /// Comma-separated Kafka bootstrap servers (host:port).
    #[arg(
        long = "kafka-brokers",
        env = crate::env::KAFKA_BROKERS,
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// librdkafka `security.protocol`: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(
        long = "kafka-security-protocol",
        env = crate::env::KAFKA_SECURITY_PROTOCOL
    )]
    pub security_protocol: Option<String>,

    /// SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
    #[arg(long = "kafka-sasl-mechanism", env = crate::env::KAFKA_SASL_MECHANISM)]
    pub sasl_mechanism: Option<String>,

    /// SASL username.
    #[arg(long = "kafka-sasl-username", env = crate::env::KAFKA_SASL_USERNAME)]
    pub sasl_username: Option<String>,

    /// SASL password. Prefer --kafka-sasl-password-file in production.
    #[arg(
        long = "kafka-sasl-password",
        env = "WAPIPE_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,

    /// File holding the SASL password (a mounted Secret); trailing newlines are ignored.
    #[arg(
        long = "kafka-sasl-password-file",
        env = crate::env::KAFKA_SASL_PASSWORD_FILE
    )]
    pub sasl_password_file: Option<PathBuf>,

    /// PEM file of CA certificates used to verify the brokers.
    #[arg(long = "kafka-ssl-ca-location", env = crate::env::KAFKA_SSL_CA_LOCATION)]
    pub ssl_ca_location: Option<PathBuf>,

    /// Raw librdkafka settings as key=value, repeatable or comma-separated; applied last, so
    /// they win over every other flag.
    #[arg(
        long = "kafka-option",
        env = "WAPIPE_KAFKA_OPTIONS",
        value_delimiter = ',',
        value_parser = parse_key_value
    )]
    pub options: Vec<(String, String)>,
}

/// The pipeline's two topics, as flags: where events are written and read, and where the
/// worker puts the ones it gave up on.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicNames {
    /// Topic with one record per webhook event, keyed by user.
    #[arg(long, env = crate::env::TOPIC, default_value = crate::DEFAULT_RAW_TOPIC)]
    pub topic: String,

    /// Dead-letter topic: events the worker gave up on after `--max-attempts` tries.
    #[arg(long, env = crate::env::DEAD_LETTER_TOPIC, default_value = crate::DEFAULT_DEAD_LETTER_TOPIC)]
    pub dead_letter_topic: String,
}

/// A Kafka setting that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("reading the SASL password from {path}")]
    ReadPasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--kafka-option {key}={value} is refused: {why}")]
    Weakens {
        key: String,
        value: String,
        why: &'static str,
    },
}

/// Checks a raw librdkafka option against the guarantees wapipe gives: a 200 means the records
/// are on every in-sync replica, exactly once and in order per key; an offset moves only past
/// events the sink has; no client ever creates a topic by asking for it.
pub fn check_option(key: &str, value: &str) -> Result<(), KafkaConfigError> {
    let refuse = |why| {
        Err(KafkaConfigError::Weakens {
            key: key.to_string(),
            value: value.to_string(),
            why,
        })
    };
    let value_lower = value.trim().to_ascii_lowercase();
    let is_true = matches!(value_lower.as_str(), "true" | "1" | "yes" | "on");
    match key.trim() {
        "acks" | "request.required.acks" | "topic.request.required.acks"
            if !matches!(value_lower.as_str(), "all" | "-1") =>
        {
            refuse("a 200 must mean every in-sync replica has the records (acks=all)")
        }
        "enable.idempotence" if !is_true => {
            refuse("without idempotence a retried batch can be written twice or out of order")
        }
        "max.in.flight.requests.per.connection" | "max.in.flight"
            if value_lower.parse::<u32>().map_or(true, |n| n > 5) =>
        {
            refuse(
                "an idempotent producer keeps per-key order only with at most 5 requests in flight",
            )
        }
        "allow.auto.create.topics" | "auto.create.topics.enable" if is_true => {
            refuse("a running client must never create (or re-create) a topic by asking for it")
        }
        "enable.auto.offset.store" if is_true => refuse(
            "offsets move only past events the sink has written; the worker stores them itself",
        ),
        "enable.gapless.guarantee" | "transactional.id" => {
            refuse("wapipe manages the producer's delivery semantics itself")
        }
        _ => Ok(()),
    }
}

fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {raw:?}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("empty key in {raw:?}"));
    }
    Ok((key.to_string(), value.trim().to_string()))
}

impl KafkaArgs {
    /// Settings for plain loopback use, as tests and local mode need.
    pub fn plaintext(brokers: impl Into<String>) -> Self {
        KafkaArgs {
            brokers: brokers.into(),
            ..KafkaArgs::default()
        }
    }

    /// The connection these flags describe, with the SASL password read from its file.
    pub fn connection(&self) -> Result<KafkaConnection, KafkaConfigError> {
        let password = crate::secret::file_or_inline(
            self.sasl_password.as_deref(),
            self.sasl_password_file.as_deref(),
        )
        .map_err(|e| KafkaConfigError::ReadPasswordFile {
            path: e.path,
            source: e.source,
        })?;
        Ok(KafkaConnection {
            bootstrap_servers: self.brokers.clone(),
            security_protocol: self.security_protocol.clone(),
            sasl_mechanism: self.sasl_mechanism.clone(),
            sasl_username: self.sasl_username.clone(),
            sasl_password: password,
            ca: self.ssl_ca_location.clone().map(CaCertificates::File),
            options: self.options.clone(),
        })
    }

    /// [`KafkaConnection::client_config`] of [`KafkaArgs::connection`].
    pub fn client_config(&self) -> Result<ClientConfig, KafkaConfigError> {
        self.connection()?.client_config()
    }

    /// [`KafkaConnection::client_config_with`] of [`KafkaArgs::connection`].
    pub fn client_config_with<V: AsRef<str>>(
        &self,
        defaults: &[(&str, V)],
    ) -> Result<ClientConfig, KafkaConfigError> {
        self.connection()?.client_config_with(defaults)
    }
}

/// Where the CA certificates that verify the brokers come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CaCertificates {
    /// A PEM file (`ssl.ca.location`), as the ingress and worker pods mount it.
    File(PathBuf),
    /// PEM text (`ssl.ca.pem`), as the operator reads it from a Secret.
    Pem(String),
}

/// One Kafka connection, typed and with its secrets in clear: the brokers, how to authenticate,
/// and raw librdkafka options. Every client of every wapipe binary (the ingress, the worker,
/// the operator and the CLI) is configured from one of these through
/// [`KafkaConnection::client_config`]; the ingress and worker read theirs from flags
/// ([`KafkaArgs::connection`]), the operator from the pipeline's spec and Secrets.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KafkaConnection {
    /// Comma-separated host:port list.
    pub bootstrap_servers: String,
    pub security_protocol: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    pub ca: Option<CaCertificates>,
    /// Raw librdkafka settings, applied last, each checked by [`check_option`].
    pub options: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConnection")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<hidden>"),
            )
            .field(
                "ca",
                &self.ca.as_ref().map(|ca| match ca {
                    CaCertificates::File(path) => path.display().to_string(),
                    CaCertificates::Pem(_) => "<PEM>".to_string(),
                }),
            )
            .field("options", &self.options)
            .finish()
    }
}

impl KafkaConnection {
    /// A plaintext connection to `brokers`, as tests and local mode use.
    pub fn plaintext(brokers: impl Into<String>) -> Self {
        KafkaConnection {
            bootstrap_servers: brokers.into(),
            ..KafkaConnection::default()
        }
    }

    /// A client configuration carrying the connection; callers add their own settings.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaConfigError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        let named = [
            ("security.protocol", &self.security_protocol),
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
        ];
        for (key, value) in named {
            if let Some(value) = value {
                config.set(key, value);
            }
        }
        match &self.ca {
            Some(CaCertificates::File(path)) => {
                config.set("ssl.ca.location", path.to_string_lossy());
            }
            Some(CaCertificates::Pem(pem)) => {
                config.set("ssl.ca.pem", pem);
            }
            None => {}
        }
        // Metadata requests for a missing topic must never create it with the broker's
        // defaults (the wrong shape for a pipeline, or a deleted topic brought back).
        config.set("allow.auto.create.topics", "false");
        for (key, value) in &self.options {
            check_option(key, value)?;
            config.set(key, value);
        }
        Ok(config)
    }

    /// [`KafkaConnection::client_config`] with a client's own `defaults` filled in where the
    /// user set nothing: a raw option (already checked not to weaken delivery) always wins.
    /// Every producer and consumer of every binary is configured through this.
    pub fn client_config_with<V: AsRef<str>>(
        &self,
        defaults: &[(&str, V)],
    ) -> Result<ClientConfig, KafkaConfigError> {
        let mut config = self.client_config()?;
        for (key, value) in defaults {
            if config.get(key).is_none() {
                config.set(*key, value.as_ref());
            }
        }
        Ok(config)
    }
}

/// librdkafka's `security.protocol` for a connection that does or does not use SASL and TLS;
/// `None` for neither (librdkafka's default, plaintext). The operator's own clients and the
/// pods it configures both follow this rule.
pub fn security_protocol(sasl: bool, tls: bool) -> Option<&'static str> {
    match (sasl, tls) {
        (true, true) => Some("SASL_SSL"),
        (true, false) => Some("SASL_PLAINTEXT"),
        (false, true) => Some("SSL"),
        (false, false) => None,
    }
}

/// The defaults of a producer that copies records already in Kafka (dead letters, replays):
/// idempotent and acknowledged by every in-sync replica, and able to carry any record a topic
/// accepted.
pub const COPY_PRODUCER_DEFAULTS: [(&str, &str); 3] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("message.max.bytes", crate::COPY_MAX_RECORD_BYTES),
];

/// The Kafka headers of `record` (see [`Record::headers`]).
pub fn record_headers(
    record: &Record,
    provider: Provider,
    received_at_ms: &str,
    body_sha256: &str,
    index: &str,
) -> OwnedHeaders {
    record
        .headers(provider, received_at_ms, body_sha256, index)
        .into_iter()
        .fold(
            OwnedHeaders::new_with_capacity(8),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_options_override_named_flags() {
        let args = KafkaArgs {
            brokers: "b:9092".into(),
            security_protocol: Some("ssl".into()),
            options: vec![("security.protocol".into(), "sasl_ssl".into())],
            ..KafkaArgs::default()
        };
        let config = args.client_config().unwrap();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
    }

    #[test]
    fn password_file_wins_and_loses_its_trailing_newline() {
        let (_, file) = crate::secret::tests::password_file("kafka", "s3cret\n");
        let args = KafkaArgs {
            sasl_password: Some("from-flag".into()),
            sasl_password_file: Some(file),
            ..KafkaArgs::plaintext("b:9092")
        };
        assert_eq!(
            args.client_config().unwrap().get("sasl.password"),
            Some("s3cret")
        );
    }

    #[test]
    fn a_clients_defaults_fill_only_what_the_user_left_unset() {
        let args = KafkaArgs {
            options: vec![("linger.ms".into(), "20".into())],
            ..KafkaArgs::plaintext("b:9092")
        };
        let config = args
            .client_config_with(&[("linger.ms", "1"), ("acks", "all")])
            .unwrap();
        assert_eq!(config.get("linger.ms"), Some("20"));
        assert_eq!(config.get("acks"), Some("all"));
    }

    #[test]
    fn options_that_would_weaken_a_200_are_refused_with_the_reason() {
        for (key, value) in [
            ("acks", "1"),
            ("request.required.acks", "0"),
            ("enable.idempotence", "false"),
            ("max.in.flight.requests.per.connection", "6"),
            ("max.in.flight", "lots"),
            ("allow.auto.create.topics", "true"),
            ("enable.auto.offset.store", "true"),
            ("transactional.id", "x"),
        ] {
            let args = KafkaArgs {
                options: vec![(key.into(), value.into())],
                ..KafkaArgs::plaintext("b:9092")
            };
            let error = args.client_config().unwrap_err().to_string();
            assert!(error.contains(key) && error.contains("refused"), "{error}");
        }
        for (key, value) in [
            ("acks", "all"),
            ("acks", "-1"),
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "5"),
            ("allow.auto.create.topics", "false"),
            ("linger.ms", "20"),
        ] {
            let args = KafkaArgs {
                options: vec![(key.into(), value.into())],
                ..KafkaArgs::plaintext("b:9092")
            };
            assert_eq!(args.client_config().unwrap().get(key), Some(value));
        }
    }

    #[test]
    fn a_connection_carries_its_secrets_in_clear_to_the_client_and_hides_them_in_debug() {
        let connection = KafkaConnection {
            sasl_username: Some("wapipe".into()),
            sasl_password: Some("s3cret".into()),
            ca: Some(CaCertificates::Pem("-----BEGIN CERTIFICATE-----".into())),
            ..KafkaConnection::plaintext("b:9092")
        };
        let config = connection.client_config().unwrap();
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert_eq!(
            config.get("ssl.ca.pem"),
            Some("-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(config.get("ssl.ca.location"), None);
        let debug = format!("{connection:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("BEGIN"),
            "{debug}"
        );
    }

    #[test]
    fn flags_become_the_same_connection_a_client_is_built_from() {
        let args = KafkaArgs {
            security_protocol: Some("sasl_ssl".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("wapipe".into()),
            sasl_password: Some("s3cret".into()),
            ssl_ca_location: Some("/etc/kafka/ca.pem".into()),
            ..KafkaArgs::plaintext("b:9092")
        };
        let connection = args.connection().unwrap();
        assert_eq!(connection.sasl_password.as_deref(), Some("s3cret"));
        assert_eq!(
            connection.ca,
            Some(CaCertificates::File("/etc/kafka/ca.pem".into()))
        );
        let config = args.client_config().unwrap();
        for (key, value) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "wapipe"),
            ("ssl.ca.location", "/etc/kafka/ca.pem"),
        ] {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn every_client_is_told_not_to_create_topics() {
        let config = KafkaArgs::plaintext("b:9092").client_config().unwrap();
        assert_eq!(config.get("allow.auto.create.topics"), Some("false"));
    }

    #[test]
    fn key_value_options_must_have_a_key_and_an_equals_sign() {
        assert!(parse_key_value("linger.ms=5").is_ok());
        assert!(parse_key_value("linger.ms").is_err());
        assert!(parse_key_value("=5").is_err());
    }
}
