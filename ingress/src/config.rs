//! Ingress configuration: flags, each also read from a `WAPIPE_*` environment variable.
//! Secrets may be given inline or, better, as files from a mounted Kubernetes Secret.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wapipe_core::kafka::KafkaArgs;
use wapipe_core::service::LogFormat;
use wapipe_core::{Provider, DEFAULT_RAW_TOPIC};

use crate::secrets::{SecretSource, SecretSources, Secrets};
use crate::Error;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "wapipe-ingress",
    version,
    about = "Verifies signed WhatsApp webhooks and produces one Kafka record per event"
)]
pub struct Config {
    /// Address to serve the webhook on (`/webhook`, `/webhook/{app}`): the public port, and
    /// nothing else is served there.
    #[arg(long, env = wapipe_core::env::LISTEN, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address to serve `/healthz`, `/readyz` and `/metrics` on: the admin port, for probes and
    /// scrapes, never exposed by the Service.
    #[arg(long, env = wapipe_core::env::ADMIN_LISTEN, default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Who signs the webhooks: meta (X-Hub-Signature-256) or wasender (X-Webhook-Signature).
    #[arg(long, env = wapipe_core::env::PROVIDER, default_value = "meta")]
    pub provider: Provider,

    /// Meta's App Secret, or WASender's webhook secret. Repeat it to trust several (several
    /// apps on one endpoint, or the old and new secret during a rotation). Prefer files.
    #[arg(long, env = wapipe_core::env::APP_SECRET, hide_env_values = true)]
    pub app_secret: Vec<String>,

    /// File holding an app secret (a mounted Secret's key), named by its file name; may be
    /// repeated. Files and directories win over --app-secret.
    #[arg(long, env = wapipe_core::env::APP_SECRET_FILE)]
    pub app_secret_file: Vec<PathBuf>,

    /// Directory of app secrets (a whole mounted Secret): every file not starting with a dot
    /// is one, named by its file name. Re-read while running, so keys may come and go.
    #[arg(long, env = wapipe_core::env::APP_SECRET_DIR)]
    pub app_secret_dir: Vec<PathBuf>,

    /// In --app-secret-dir, only keys whose names start with this are app secrets (the
    /// Secret may hold the verify token too). A rotation adds `<prefix>-<something>`, then
    /// removes the old key.
    #[arg(long, env = wapipe_core::env::APP_SECRET_PREFIX)]
    pub app_secret_prefix: Option<String>,

    /// Token Meta sends in the GET verification handshake; may be repeated. Without one,
    /// handshakes get 403.
    #[arg(long, env = wapipe_core::env::VERIFY_TOKEN, hide_env_values = true)]
    pub verify_token: Vec<String>,

    /// File holding a verify token; may be repeated; files win over --verify-token.
    #[arg(long, env = wapipe_core::env::VERIFY_TOKEN_FILE)]
    pub verify_token_file: Vec<PathBuf>,

    /// Directory of verify tokens, one per file (a whole mounted Secret).
    #[arg(long, env = wapipe_core::env::VERIFY_TOKEN_DIR)]
    pub verify_token_dir: Vec<PathBuf>,

    /// In --verify-token-dir, only keys whose names start with this are verify tokens.
    #[arg(long, env = wapipe_core::env::VERIFY_TOKEN_PREFIX)]
    pub verify_token_prefix: Option<String>,

    /// How often secret files and directories are read again; a changed set is put in use
    /// without a restart. A mounted Secret changes within the kubelet's sync period (about a
    /// minute), so a few seconds here add little to it.
    #[arg(long, env = wapipe_core::env::SECRET_RELOAD_INTERVAL, default_value = "2s", value_parser = humantime::parse_duration)]
    pub secret_reload_interval: Duration,

    /// Topic that receives one record per event.
    #[arg(long, env = wapipe_core::env::TOPIC, default_value = DEFAULT_RAW_TOPIC)]
    pub topic: String,

    /// Largest POST body accepted; larger ones get 413 before they are read whole. Meta's
    /// payloads are at most 3 MB.
    #[arg(long, env = wapipe_core::env::MAX_BODY_BYTES, default_value_t = wapipe_core::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// How long a request waits for Kafka to acknowledge all its records before it answers
    /// 503. Keep it well under the provider's timeout (360dialog allows 5 s; Messenger 20 s).
    #[arg(long, env = wapipe_core::env::PRODUCE_TIMEOUT, default_value = "3s", value_parser = humantime::parse_duration)]
    pub produce_timeout: Duration,

    /// Signed requests handed to Kafka at once; past it, 503 with Retry-After instead of
    /// queueing in memory. A request takes its place only once its signature is verified.
    #[arg(long, env = "WAPIPE_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Bytes of verified bodies held at once, from the signature check until Kafka answers
    /// (counted in KiB; 0: no bound). A request whose Content-Length, or whose body once read,
    /// does not fit what is left gets 503 with Retry-After. Each byte counted costs 2.5 to 5
    /// in memory (its records, librdkafka's copies and batches): keep it to a fifth of what the
    /// container may use beyond the read stage. A body larger than the budget is admitted
    /// when nothing else holds any. The operator derives it from the memory limit.
    #[arg(long, env = wapipe_core::env::MAX_IN_FLIGHT_BYTES, default_value_t = 64 * 1024 * 1024)]
    pub max_in_flight_bytes: usize,

    /// How long a connection may take to send a request's headers (and how long a kept-alive
    /// connection may sit idle); past it, the connection is closed without an answer. A
    /// provider sends its headers in one write, so 5 s is ample for a real one and short
    /// against a client that holds connections open on purpose.
    #[arg(long, env = "WAPIPE_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// How long a request may take to send its body once its headers are in; past it, 408 and
    /// nothing produced. 10 s carries a full 3 MB body at 2.5 Mbit/s; with the header bound
    /// and the produce timeout it stays under the 20 s Messenger waits, so a request cut off
    /// here is one the provider would have given up on anyway.
    #[arg(long, env = "WAPIPE_BODY_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,

    /// Bodies read at once, before any signature is checked. A request that finds the limit
    /// reached cuts off the read that started longest ago (408) instead of being refused, so
    /// slow clients hold these places only until newer requests arrive.
    #[arg(long, env = "WAPIPE_MAX_BODY_READS", default_value_t = 1024)]
    pub max_body_reads: usize,

    /// Bytes all bodies being read may hold together, counted as they arrive; past it, the
    /// oldest reads are cut off (408) until the new bytes fit. At least --max-body-bytes.
    #[arg(long, env = wapipe_core::env::MAX_BODY_READ_BYTES, default_value_t = 64 * 1024 * 1024)]
    pub max_body_read_bytes: usize,

    /// Records the producer may hold unacknowledged (librdkafka queue.buffering.max.messages);
    /// past it, requests get 503.
    #[arg(
        long,
        env = "WAPIPE_PRODUCER_QUEUE_MESSAGES",
        default_value_t = 100_000
    )]
    pub producer_queue_messages: u32,

    /// Kilobytes the producer may hold unacknowledged (queue.buffering.max.kbytes).
    #[arg(long, env = "WAPIPE_PRODUCER_QUEUE_KBYTES", default_value_t = 256 * 1024)]
    pub producer_queue_kbytes: u32,

    /// How long the producer waits to batch records (linger.ms). 1 ms measured best on Kafka
    /// with a webhook's one or few records per request: batches still fill under load, and a
    /// request no longer waits out the default 5 ms (scripts/bench-compare.sh: 15.1k req/s at
    /// 1 ms, 13.0k at 0, 10.7k at 5, 64 connections).
    #[arg(long, env = "WAPIPE_LINGER", default_value = "1ms", value_parser = humantime::parse_duration)]
    pub linger: Duration,

    /// Value of the Retry-After header on 503 answers.
    #[arg(long, env = "WAPIPE_RETRY_AFTER", default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_after: Duration,

    /// Key for signed bodies whose user cannot be found (unparseable payloads).
    #[arg(long, env = "WAPIPE_FALLBACK_KEY", default_value = "unparsed")]
    pub fallback_key: String,

    /// How long the ingress keeps accepting connections after the stop signal, with `/readyz`
    /// answering 503, before it stops accepting. Behind a Kubernetes Service the pod is taken
    /// out of the endpoints only after it got SIGTERM; until every node's proxy has caught up,
    /// new connections still arrive and would be refused. 0 outside Kubernetes; the operator
    /// sets it for its pods.
    #[arg(long, env = wapipe_core::env::SHUTDOWN_DELAY, default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// How long shutdown waits for in-flight requests and the producer's flush.
    #[arg(long, env = wapipe_core::env::SHUTDOWN_TIMEOUT, default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// How often readiness asks the broker for the topic's metadata. Records delivered to the
    /// topic also mark the ingress ready at once.
    #[arg(long, env = wapipe_core::env::READINESS_INTERVAL, default_value = "5s", value_parser = humantime::parse_duration)]
    pub readiness_interval: Duration,

    /// Log format: text or json.
    #[arg(long, env = wapipe_core::env::LOG_FORMAT, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub kafka: KafkaArgs,
}

impl Config {
    /// Refuses limits that contradict each other.
    pub fn check_limits(&self) -> Result<(), Error> {
        if self.max_body_read_bytes < self.max_body_bytes {
            return Err(Error::ReadBudgetBelowBodyLimit {
                budget: self.max_body_read_bytes,
                body: self.max_body_bytes,
            });
        }
        Ok(())
    }

    /// Where the app secrets and verify tokens are read from, now and on every reload.
    pub fn secret_sources(&self) -> SecretSources {
        SecretSources {
            signing: SecretSource {
                what: "app secret",
                inline: self.app_secret.clone(),
                files: self.app_secret_file.clone(),
                dirs: self.app_secret_dir.clone(),
                prefix: self.app_secret_prefix.clone(),
            },
            verify_tokens: SecretSource {
                what: "verify token",
                inline: self.verify_token.clone(),
                files: self.verify_token_file.clone(),
                dirs: self.verify_token_dir.clone(),
                prefix: self.verify_token_prefix.clone(),
            },
        }
    }

    /// The secrets as they are now.
    pub fn secrets(&self) -> Result<Secrets, Error> {
        self.secret_sources().load()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("wapipe-ingress").chain(args.iter().copied()))
            .expect("valid flags")
    }

    #[test]
    fn secret_files_win_over_inline_values_and_lose_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("app-secret");
        let token = dir.path().join("verify-token");
        std::fs::write(&secret, "from-file\n").unwrap();
        std::fs::write(&token, "token-file\r\n").unwrap();
        let config = parse(&[
            "--app-secret",
            "inline",
            "--app-secret-file",
            secret.to_str().unwrap(),
            "--verify-token-file",
            token.to_str().unwrap(),
        ]);
        let secrets = config.secrets().unwrap();
        assert_eq!(secrets.signing.len(), 1);
        assert_eq!(secrets.signing[0].name, "app-secret");
        assert_eq!(secrets.signing[0].value, b"from-file");
        assert_eq!(secrets.verify_tokens[0].value, b"token-file");
    }

    #[test]
    fn a_missing_or_unreadable_secret_is_a_clear_startup_error() {
        let error = parse(&[]).secrets().unwrap_err().to_string();
        assert!(error.contains("--app-secret"), "{error}");
        let error = parse(&["--app-secret-file", "/nonexistent/wapipe/secret"])
            .secrets()
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/wapipe/secret"), "{error}");
        // An empty secret would accept any signature computed with an empty key.
        assert!(parse(&["--app-secret", ""]).secrets().is_err());
    }

    #[test]
    fn repeated_secret_flags_and_a_directory_give_a_set_of_named_secrets() {
        let secrets = parse(&["--app-secret", "one", "--app-secret", "two"])
            .secrets()
            .unwrap();
        assert_eq!(secrets.signing.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shop-a"), "a\n").unwrap();
        std::fs::write(dir.path().join("shop-b"), "b").unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "c").unwrap();
        let secrets = parse(&[
            "--app-secret-dir",
            dir.path().to_str().unwrap(),
            "--app-secret-file",
            file.path().to_str().unwrap(),
        ])
        .secrets()
        .unwrap();
        let mut names: Vec<_> = secrets.signing.iter().map(|s| s.name.clone()).collect();
        names.sort();
        let file_name = file
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let mut wanted = vec!["shop-a".to_string(), "shop-b".to_string(), file_name];
        wanted.sort();
        assert_eq!(names, wanted);
    }

    #[test]
    fn a_read_budget_below_the_body_limit_is_refused() {
        assert!(parse(&[]).check_limits().is_ok());
        let error = parse(&["--max-body-bytes", "2000", "--max-body-read-bytes", "1999"])
            .check_limits()
            .unwrap_err()
            .to_string();
        assert!(error.contains("--max-body-read-bytes"), "{error}");
    }

    #[test]
    fn durations_and_providers_parse_from_flags() {
        let config = parse(&["--provider", "wasender", "--produce-timeout", "1500ms"]);
        assert_eq!(config.provider, Provider::Wasender);
        assert_eq!(config.produce_timeout, Duration::from_millis(1500));
        assert!(Config::try_parse_from(["wapipe-ingress", "--provider", "twilio"]).is_err());
    }
}
