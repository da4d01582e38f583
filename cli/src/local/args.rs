//! The arguments of `wapipe up`.

use std::path::PathBuf;
use std::time::Duration;

use crate::local::env;

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// WhatsAppWebhookPipeline YAML (the file you would `kubectl apply`); a bundled example when
    /// absent.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Kafka's log dirs, the SQLite database, logs and status.json live here.
    #[arg(long, env = "WAPIPE_STATE_DIR", default_value = ".wapipe")]
    pub state_dir: PathBuf,
    /// Port of the ingress's webhook on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Port of the ingress's admin listener (`/healthz`, `/readyz`, `/metrics`) on 127.0.0.1.
    #[arg(long, default_value_t = 9090)]
    pub admin_port: u16,
    /// Port of the Kafka broker on 127.0.0.1; its KRaft controller takes the next port (not
    /// 19092, which the test scripts' broker uses).
    #[arg(long, default_value_t = 19192)]
    pub broker_port: u16,
    /// Use this running Kafka cluster instead of starting a broker.
    #[arg(long)]
    pub kafka_brokers: Option<String>,
    /// App secret (Meta) or webhook secret (WASender) the ingress verifies; generated once and
    /// kept in the state directory when absent.
    #[arg(long, env = wapipe_core::env::APP_SECRET, hide_env_values = true)]
    pub app_secret: Option<String>,
    /// Another app whose webhooks this pipeline takes, as NAME=SECRET (Meta's App Secret or
    /// WASender's webhook secret); repeat it for several. Each is trusted on /webhook and alone
    /// on /webhook/NAME. With --app and no --app-secret, no secret is generated. The ingress
    /// reads every secret from app-secrets/ in the state directory, so a file added there or
    /// removed takes effect without a restart (a rotation).
    #[arg(long = "app", value_name = "NAME=SECRET", value_parser = env::parse_app)]
    pub apps: Vec<(String, String)>,
    /// Verify token of Meta's GET handshake; generated like the app secret when absent.
    #[arg(long, env = wapipe_core::env::VERIFY_TOKEN, hide_env_values = true)]
    pub verify_token: Option<String>,
    /// Where workers write rows: postgres://... for PostgreSQL, sqlite://PATH for another
    /// SQLite file. Default: wapipe.db in the state directory.
    #[arg(long, env = wapipe_core::env::DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Overrides the pipeline's pollIntervalSeconds.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub poll_interval: Option<Duration>,
    /// Overrides the pipeline's scaleDownWindowSeconds.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub scale_down_window: Option<Duration>,
    /// How long the ingress waits for Kafka's acknowledgement before answering 503. Longer than
    /// the ingress's own default (3 s) because locally the broker shares the cores with
    /// everything else.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub produce_timeout: Duration,
    /// How long a stopping process may take before it is killed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// How often the view is redrawn and status.json rewritten.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// Print one line per change instead of redrawing a table (always so without a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Directory holding wapipe-ingress and wapipe-worker; default: beside this executable,
    /// then $PATH.
    #[arg(long, env = "WAPIPE_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}
