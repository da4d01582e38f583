//! The environment variables the binaries read and the operator (in pod templates) and
//! `wapipe up` (for its child processes) write: one name each, so a writer can never set a
//! variable the reader does not know. `tests/pipeline/tests/env_contract.rs` checks that every
//! variable the operator writes is one the binary's command line reads.

/// Ingress: the address of the admin listener (`/healthz`, `/readyz`, `/metrics`), apart from
/// the public webhook port.
pub const ADMIN_LISTEN: &str = "WAPIPE_ADMIN_LISTEN";
/// Ingress: the app secret (Meta) or webhook secret (WASender) inline.
pub const APP_SECRET: &str = "WAPIPE_APP_SECRET";
/// Ingress: a file holding the app secret (a mounted Secret); wins over the inline one.
pub const APP_SECRET_FILE: &str = "WAPIPE_APP_SECRET_FILE";
/// Ingress: a directory of app secrets (a whole mounted Secret), one per file.
pub const APP_SECRET_DIR: &str = "WAPIPE_APP_SECRET_DIR";
/// Ingress: in the app secret directory, only keys starting with this are app secrets.
pub const APP_SECRET_PREFIX: &str = "WAPIPE_APP_SECRET_PREFIX";
/// Worker: the database URL of the postgres or sqlite sink.
pub const DATABASE_URL: &str = "WAPIPE_DATABASE_URL";
/// Worker: the dead-letter topic.
pub const DEAD_LETTER_TOPIC: &str = "WAPIPE_DEAD_LETTER_TOPIC";
/// Worker: how long a revoked or stopping worker may finish what it holds.
pub const DRAIN_TIMEOUT: &str = "WAPIPE_DRAIN_TIMEOUT";
/// Worker: the consumer group.
pub const GROUP: &str = "WAPIPE_GROUP";
/// Worker: the URL the http sink posts to.
pub const HTTP_SINK_URL: &str = "WAPIPE_HTTP_SINK_URL";
/// Every binary: bootstrap servers.
pub const KAFKA_BROKERS: &str = "WAPIPE_KAFKA_BROKERS";
/// Every binary: SASL mechanism.
pub const KAFKA_SASL_MECHANISM: &str = "WAPIPE_KAFKA_SASL_MECHANISM";
/// Every binary: a file holding the SASL password.
pub const KAFKA_SASL_PASSWORD_FILE: &str = "WAPIPE_KAFKA_SASL_PASSWORD_FILE";
/// Every binary: SASL user name.
pub const KAFKA_SASL_USERNAME: &str = "WAPIPE_KAFKA_SASL_USERNAME";
/// Every binary: librdkafka `security.protocol`.
pub const KAFKA_SECURITY_PROTOCOL: &str = "WAPIPE_KAFKA_SECURITY_PROTOCOL";
/// Every binary: the CA bundle that verifies the brokers.
pub const KAFKA_SSL_CA_LOCATION: &str = "WAPIPE_KAFKA_SSL_CA_LOCATION";
/// Ingress: the address of the webhook (public) port. Worker: the address of its HTTP server
/// (health and metrics).
pub const LISTEN: &str = "WAPIPE_LISTEN";
/// Worker: how long the consumer loop may go without polling before `/healthz` fails.
pub const LIVENESS_TIMEOUT: &str = "WAPIPE_LIVENESS_TIMEOUT";
/// Every binary: `text` or `json`.
pub const LOG_FORMAT: &str = "WAPIPE_LOG_FORMAT";
/// Worker: attempts per event before it is dead-lettered.
pub const MAX_ATTEMPTS: &str = "WAPIPE_MAX_ATTEMPTS";
/// Ingress: the largest body accepted.
pub const MAX_BODY_BYTES: &str = "WAPIPE_MAX_BODY_BYTES";
/// Ingress: bytes all bodies being read may hold together, before their signature is checked.
pub const MAX_BODY_READ_BYTES: &str = "WAPIPE_MAX_BODY_READ_BYTES";
/// Ingress: bytes of verified bodies held until Kafka answers.
pub const MAX_IN_FLIGHT_BYTES: &str = "WAPIPE_MAX_IN_FLIGHT_BYTES";
/// Ingress: how long a POST waits for Kafka's acknowledgement.
pub const PRODUCE_TIMEOUT: &str = "WAPIPE_PRODUCE_TIMEOUT";
/// Ingress: `meta` or `wasender`.
pub const PROVIDER: &str = "WAPIPE_PROVIDER";
/// Ingress: how often readiness asks the broker about the topic.
pub const READINESS_INTERVAL: &str = "WAPIPE_READINESS_INTERVAL";
/// Ingress: how long in-flight requests may take once stopping.
pub const SHUTDOWN_TIMEOUT: &str = "WAPIPE_SHUTDOWN_TIMEOUT";
/// Ingress: how long it keeps serving, answering not ready, after the stop signal.
pub const SHUTDOWN_DELAY: &str = "WAPIPE_SHUTDOWN_DELAY";
/// Ingress: how often secret files are read again.
pub const SECRET_RELOAD_INTERVAL: &str = "WAPIPE_SECRET_RELOAD_INTERVAL";
/// Worker: where events are written.
pub const SINK: &str = "WAPIPE_SINK";
/// Worker: the sqlite sink's file.
pub const SQLITE_PATH: &str = "WAPIPE_SQLITE_PATH";
/// Ingress and worker: the raw topic.
pub const TOPIC: &str = "WAPIPE_TOPIC";
/// Ingress: Meta's verify token inline.
pub const VERIFY_TOKEN: &str = "WAPIPE_VERIFY_TOKEN";
/// Ingress: a file holding Meta's verify token; wins over the inline one.
pub const VERIFY_TOKEN_FILE: &str = "WAPIPE_VERIFY_TOKEN_FILE";
/// Ingress: a directory of verify tokens, one per file.
pub const VERIFY_TOKEN_DIR: &str = "WAPIPE_VERIFY_TOKEN_DIR";
/// Ingress: in the verify token directory, only keys starting with this are verify tokens.
pub const VERIFY_TOKEN_PREFIX: &str = "WAPIPE_VERIFY_TOKEN_PREFIX";
