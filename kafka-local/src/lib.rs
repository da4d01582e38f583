//! Apache Kafka (KRaft, one node acting as broker and controller) on loopback, from the jars
//! `scripts/install-kafka.sh` caches: the broker `wapipe up` and `wapipe bench` start, and the
//! one the test kit gives each test process.
//!
//! The broker's configuration is `kafka/server.properties` beside this crate, the same file
//! `scripts/kafka.sh` fills in, so the script's broker, a test's and `wapipe up`'s never differ.
//! Tooling, not product: the ingress, worker and operator binaries do not link it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Why a broker could not be prepared or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "Apache Kafka {version} is not installed (looked in {looked_in}): run `bash scripts/install-kafka.sh`"
    )]
    NotInstalled { version: String, looked_in: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("formatting Kafka storage in {dir} failed: {output}")]
    Format { dir: String, output: String },
    #[error("{0} must be ip:port")]
    BadAddress(String),
    #[error("no broker answered on {bootstrap} within {within:?}")]
    NoAnswer { bootstrap: String, within: Duration },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrokerError {
    let what = what.into();
    move |source| BrokerError::Io { what, source }
}

const POM: &str = include_str!("../kafka/pom.xml");
const SERVER_PROPERTIES: &str = include_str!("../kafka/server.properties");
const LOG4J2_PROPERTIES: &str = include_str!("../kafka/log4j2.properties");

/// Environment variable naming the cache root `scripts/install-kafka.sh` wrote to.
pub const CACHE_ENV: &str = "WAPIPE_CACHE";
/// Environment variable holding the broker JVM's heap flags.
pub const HEAP_ENV: &str = "KAFKA_HEAP_OPTS";

fn pom_property(name: &str) -> &'static str {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    POM.split_once(open.as_str())
        .and_then(|(_, rest)| rest.split_once(close.as_str()))
        .map(|(value, _)| value.trim())
        .expect("kafka-local/kafka/pom.xml names the property")
}

/// The Kafka version the project installs and runs.
pub fn kafka_version() -> &'static str {
    pom_property("kafka.version")
}

/// The directory holding the broker's jars, if `scripts/install-kafka.sh` has filled it.
pub fn kafka_libs() -> Result<PathBuf, BrokerError> {
    let key = format!("{}-log4j{}", kafka_version(), pom_property("log4j.version"));
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(root) = std::env::var_os(CACHE_ENV).filter(|r| !r.is_empty()) {
        roots.push(root.into());
    }
    roots.push("/var/cache/wapipe".into());
    match std::env::var_os("XDG_CACHE_HOME").filter(|r| !r.is_empty()) {
        Some(cache) => roots.push(Path::new(&cache).join("wapipe")),
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                roots.push(Path::new(&home).join(".cache/wapipe"));
            }
        }
    }
    for root in &roots {
        let libs = root.join("kafka").join(&key).join("libs");
        if libs.join(".complete").is_file() {
            return Ok(libs);
        }
    }
    Err(BrokerError::NotInstalled {
        version: kafka_version().to_string(),
        looked_in: roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The `java` to run: `$JAVA_HOME/bin/java` when set, else the one on `$PATH`.
pub fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|home| Path::new(&home).join("bin/java"))
        .filter(|java| java.is_file())
        .unwrap_or_else(|| PathBuf::from("java"))
}

/// A broker's ports: clients connect to `port`, the KRaft controller listens on `controller_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaPorts {
    pub port: u16,
    pub controller_port: u16,
}

/// The command that runs a broker whose configuration and storage [`prepare`] laid out.
#[derive(Debug, Clone)]
pub struct KafkaCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Writes `server.properties` (with `overrides` appended: a later key wins) and
/// `log4j2.properties` into `dir` and formats the storage in `dir/data` unless it already holds
/// a formatted log (a restart keeps its records). Returns the command that starts the broker in
/// the foreground.
pub fn prepare(
    dir: &Path,
    ports: KafkaPorts,
    overrides: &[(String, String)],
) -> Result<KafkaCommand, BrokerError> {
    let libs = kafka_libs()?;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let data = dir.join("data");
    let server = dir.join("server.properties");
    let mut properties = SERVER_PROPERTIES
        .replace("@PORT@", &ports.port.to_string())
        .replace("@CONTROLLER_PORT@", &ports.controller_port.to_string())
        .replace("@DATA_DIR@", &data.display().to_string());
    for (key, value) in overrides {
        properties.push_str(&format!("{key}={value}\n"));
    }
    std::fs::write(&server, properties).map_err(io(format!("writing {}", server.display())))?;
    let log4j = dir.join("log4j2.properties");
    std::fs::write(&log4j, LOG4J2_PROPERTIES)
        .map_err(io(format!("writing {}", log4j.display())))?;
    let classpath = format!("{}/*", libs.display());

    if !data.join("meta.properties").is_file() {
        let format = Command::new(java())
            .arg("-Xmx256m")
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .args(["-cp", &classpath, "kafka.tools.StorageTool", "format"])
            .arg("--ignore-formatted")
            .arg(format!("--cluster-id={}", cluster_id()))
            .arg("-c")
            .arg(&server)
            .stdin(Stdio::null())
            .output()
            .map_err(io(
                "running java (Java 17 or newer is needed: scripts/install-kafka.sh)",
            ))?;
        if !format.status.success() {
            return Err(BrokerError::Format {
                dir: data.display().to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&format.stdout),
                    String::from_utf8_lossy(&format.stderr)
                ),
            });
        }
    }

    let heap = std::env::var(HEAP_ENV).unwrap_or_else(|_| "-Xms128m -Xmx512m".to_string());
    let mut args: Vec<String> = heap.split_whitespace().map(str::to_string).collect();
    args.extend([
        "-XX:+UseG1GC".to_string(),
        "-Djava.awt.headless=true".to_string(),
        format!("-Dlog4j2.configurationFile={}", log4j.display()),
        "-cp".to_string(),
        classpath,
        "kafka.Kafka".to_string(),
        server.display().to_string(),
    ]);
    Ok(KafkaCommand {
        program: java(),
        args,
    })
}

/// A free TCP port on loopback: bound once, then released for the caller to use.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Waits until `bootstrap` (`ip:port`) answers a metadata request, trying for up to `within`.
pub fn wait_for_broker(bootstrap: &str, within: Duration) -> Result<(), BrokerError> {
    let deadline = Instant::now() + within;
    let addr: SocketAddr = bootstrap
        .parse()
        .map_err(|_| BrokerError::BadAddress(bootstrap.to_string()))?;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .create();
            if let Ok(admin) = admin {
                if admin
                    .inner()
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok()
                {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(BrokerError::NoAnswer {
                bootstrap: bootstrap.to_string(),
                within,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A KRaft cluster id: 16 random-enough bytes in unpadded URL-safe base64 (22 characters), as
/// `kafka-storage.sh random-uuid` prints, without starting a second JVM for it.
fn cluster_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        hasher.write_u32(std::process::id());
        chunk.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    let mut bits: u32 = 0;
    let mut held = 0;
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        held += 8;
        while held >= 6 {
            held -= 6;
            out.push(ALPHABET[((bits >> held) & 0x3f) as usize] as char);
        }
    }
    if held > 0 {
        out.push(ALPHABET[((bits << (6 - held)) & 0x3f) as usize] as char);
    }
    // An id starting with '-' reads as an option to the storage tool's argument parser (Kafka's
    // own random ids never start with one, for that reason): one in 64 did here.
    if out.starts_with('-') {
        out.replace_range(0..1, "w");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_have_the_shape_kafka_expects_and_differ() {
        for _ in 0..2_000 {
            assert!(!cluster_id().starts_with('-'));
        }
        let a = cluster_id();
        let b = cluster_id();
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn the_version_comes_from_the_pom() {
        assert!(kafka_version().starts_with('4'), "{}", kafka_version());
    }
}
