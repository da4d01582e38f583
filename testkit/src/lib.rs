//! Test support shared by every crate's integration tests.
//!
//! Each test process gets its own Tansu broker on a free loopback port with SQLite storage in a
//! temporary directory, unless `WAPIPE_TEST_BROKERS` names a broker already running (as
//! `.ci/run` does). Tests that need to stop and restart the broker always get a private one.
//! Names of topics and groups are unique per call so tests never see each other's records.
#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Environment variable naming an already running broker to share between tests.
pub const BROKERS_ENV: &str = "WAPIPE_TEST_BROKERS";
/// Environment variable naming the `tansu` binary; otherwise `$PATH` and `~/.cargo/bin`.
pub const TANSU_ENV: &str = "WAPIPE_TANSU";

/// Where the `tansu` binary is, if it is installed.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var(TANSU_ENV) {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let candidate = Path::new(&home).join(".cargo/bin/tansu");
        candidate.is_file().then_some(candidate)
    })
}

/// A free TCP port on loopback (bound once, then released for the caller to use).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// A Tansu broker owned by the test: killed when dropped.
pub struct Tansu {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Tansu {
    /// Starts a private broker on a free port and waits until it answers Kafka requests.
    pub fn start() -> anyhow::Result<Tansu> {
        let dir = tempfile::Builder::new().prefix("wapipe-tansu-").tempdir()?;
        let mut broker = Tansu {
            port: free_port(),
            dir,
            child: None,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the broker (SIGKILL: the harshest way a broker can go away).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port with the same storage.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = tansu_binary().context(
            "the tansu broker is not installed: run scripts/install-tansu.sh \
             (cargo install tansu --locked --features libsql), or set WAPIPE_TEST_BROKERS",
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&binary)
            .current_dir(self.dir.path())
            .args(tansu_args(&url, "sqlite://tansu.db"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.child = Some(child);
        wait_for_broker(&self.bootstrap(), Duration::from_secs(30)).with_context(|| {
            let log =
                std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default();
            format!("tansu did not come up; its log:\n{log}")
        })
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The command-line arguments that start Tansu on `listener_url` with `storage`.
pub fn tansu_args(listener_url: &str, storage: &str) -> Vec<String> {
    vec![
        "broker".into(),
        "--listener-url".into(),
        listener_url.into(),
        "--advertised-listener-url".into(),
        listener_url.into(),
        "--storage-engine".into(),
        storage.into(),
    ]
}

/// Waits until `bootstrap` answers a metadata request.
pub fn wait_for_broker(bootstrap: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let addr: SocketAddr = bootstrap.parse().context("bootstrap must be ip:port")?;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .create()?;
            if admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("no broker answered on {bootstrap} within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A broker for tests that only read and write: the shared one from `WAPIPE_TEST_BROKERS`,
/// else a private one. Keep the returned guard alive for the test's duration.
pub fn broker() -> anyhow::Result<(String, Option<Tansu>)> {
    match std::env::var(BROKERS_ENV) {
        Ok(brokers) if !brokers.trim().is_empty() => Ok((brokers, None)),
        _ => {
            let tansu = Tansu::start()?;
            Ok((tansu.bootstrap(), Some(tansu)))
        }
    }
}

/// A name no other test (in this or another process) uses: `prefix-<pid>-<time>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `topic` with `partitions` partitions (replication 1) and waits for it to be listed.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("creating topic {name}: {code}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(2))?;
        if metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.partitions().len() == partitions as usize)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("topic {topic} was created but is not listed with {partitions} partitions");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
