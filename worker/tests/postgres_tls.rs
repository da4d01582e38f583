//! The postgres sink over TLS, against a private PostgreSQL that accepts TCP connections only
//! over TLS (`hostssl` in pg_hba.conf), with a CA and a server certificate (for 127.0.0.1 and
//! localhost) made by the test. No broker: the sink is driven directly.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio_postgres::{Client, NoTls};
use wapipe_core::record::HEADER_PROVIDER;
use wapipe_worker::route::{route, Incoming};
use wapipe_worker::sink::{PostgresOptions, PostgresSink, Sink};

/// A PostgreSQL server of this test: its own data directory, port and certificates. Stopped
/// (fast shutdown) and removed when dropped.
struct PrivatePostgres {
    port: u16,
    dir: tempfile::TempDir,
    server: Child,
}

impl PrivatePostgres {
    /// Panics where no PostgreSQL server binaries are installed (scripts/install-deps.sh
    /// installs them), as the Kafka tests do without Kafka: a missing server is a failure to
    /// see, never a pass.
    async fn start() -> PrivatePostgres {
        let bin = postgres_bin().expect(
            "no /usr/lib/postgresql/*/bin/initdb: install PostgreSQL (scripts/install-deps.sh)",
        );
        let (uid, gid) = (id("-u"), id("-g"));
        // initdb and postgres refuse to run as root, and need a directory they own.
        let dir = tempfile::Builder::new()
            .prefix("wapipe-pg-tls-")
            .tempdir_in("/tmp")
            .unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        let initdb = Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C"])
            .current_dir(dir.path())
            .uid(uid)
            .gid(gid)
            .output()
            .expect("running initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n",
        )
        .unwrap();

        let certificates = Certificates::new();
        let write = |name: &str, contents: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        };
        write("ca.crt", &certificates.ca, 0o644);
        write("other-ca.crt", &certificates.other_ca, 0o644);
        write("server.crt", &certificates.server, 0o644);
        write("server.key", &certificates.server_key, 0o600);

        let port = wapipe_testkit::free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        let server = Command::new(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-c"])
            .arg(format!(
                "ssl_cert_file={}",
                dir.path().join("server.crt").display()
            ))
            .arg("-c")
            .arg(format!(
                "ssl_key_file={}",
                dir.path().join("server.key").display()
            ))
            .args(["-c", "fsync=off"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .uid(uid)
            .gid(gid)
            .spawn()
            .expect("starting postgres");
        let postgres = PrivatePostgres { port, dir, server };
        common::eventually("the private PostgreSQL accepting connections", || {
            let admin = postgres.admin_config();
            async move { admin.connect(NoTls).await.is_ok() }
        })
        .await;
        postgres
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    /// Over the Unix socket, where pg_hba.conf lets anything in.
    fn admin_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        config
    }

    async fn admin(&self) -> Client {
        let (client, connection) = self
            .admin_config()
            .connect(NoTls)
            .await
            .expect("the admin connection");
        tokio::spawn(connection);
        client
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown, clients disconnected.
        let _ = Command::new("kill")
            .args(["-INT", &self.server.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// The postgres user's uid (`-u`) or gid (`-g`).
fn id(which: &str) -> u32 {
    let out = Command::new("id")
        .args([which, "postgres"])
        .output()
        .expect("id postgres");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the postgres user")
}

/// PEM texts: the CA that signed the server's certificate, an unrelated CA, and the server's
/// certificate (for 127.0.0.1 and localhost) and key.
struct Certificates {
    ca: String,
    other_ca: String,
    server: String,
    server_key: String,
}

impl Certificates {
    fn new() -> Certificates {
        let ca = certificate_authority("wapipe test CA");
        let other_ca = certificate_authority("some other CA");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "wapipe test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let server = params.signed_by(&key, &ca).unwrap();
        Certificates {
            ca: ca.pem(),
            other_ca: other_ca.pem(),
            server: server.pem(),
            server_key: key.serialize_pem(),
        }
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn message_event(user: &str, wamid: &str) -> wapipe_worker::route::Event {
    route(&Incoming {
        topic: "raw".into(),
        partition: 0,
        offset: 0,
        key: Some(user.as_bytes().to_vec()),
        payload: Some(common::message_value(user, wamid, "over TLS").into()),
        headers: [(HEADER_PROVIDER, "meta")].into_iter().collect(),
    })
    .expect("routing a message")
}

/// Connects; an error comes back as the worker logs it: its line followed by its causes.
async fn connect(url: &str, schema: &str) -> Result<PostgresSink, String> {
    PostgresSink::connect(url, Some(schema.to_string()))
        .await
        .map_err(|error| wapipe_core::error::Causes(&error).to_string())
}

/// Connects to `url`, which must be refused (`accepted` is the failure where it is not) with an
/// error that names every one of `reasons`.
async fn assert_refused(url: &str, schema: &str, accepted: &str, reasons: &[&str]) {
    let error = match connect(url, schema).await {
        Ok(_) => panic!("{accepted}"),
        Err(error) => error,
    };
    assert!(
        reasons.iter().all(|reason| error.contains(reason)),
        "unclear error for {url}: {error}"
    );
}

fn with_ca(path: &Path) -> String {
    format!("sslrootcert={}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_connects_over_tls_and_writes() {
    let pg = PrivatePostgres::start().await;
    let sink = connect(&pg.url("127.0.0.1", "sslmode=require"), "tls_require")
        .await
        .expect("sslmode=require against a server with TLS");
    sink.write(&message_event("15550900", "wamid.tls.1"))
        .await
        .expect("writing over TLS");

    let admin = pg.admin().await;
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM tls_require.wapipe_messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
    let (connections, encrypted): (i64, Option<bool>) = admin
        .query_one(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a \
             USING (pid) WHERE a.application_name = 'wapipe-worker'",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert!(connections >= 1, "the sink's connection is not listed");
    assert_eq!(encrypted, Some(true), "a sink connection without TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_when_the_ca_signed_the_certificate_for_the_host() {
    let pg = PrivatePostgres::start().await;
    // The CA in the URL, the host an address in the certificate.
    let query = format!("sslmode=verify-full&{}", with_ca(&pg.path("ca.crt")));
    let sink = connect(&pg.url("127.0.0.1", &query), "tls_full_ip")
        .await
        .expect("verify-full with the right CA, by address");
    sink.write(&message_event("15550901", "wamid.tls.2"))
        .await
        .expect("writing over verified TLS");
    // The CA from --database-ca-file, the host a name in the certificate.
    let options = PostgresOptions {
        schema: Some("tls_full_name".into()),
        ca_file: Some(pg.path("ca.crt")),
        ..PostgresOptions::default()
    };
    PostgresSink::connect_with(&pg.url("localhost", "sslmode=verify-full"), options)
        .await
        .expect("verify-full with the right CA, by name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_naming_sslmode_and_the_reason() {
    let pg = PrivatePostgres::start().await;
    let other = with_ca(&pg.path("other-ca.crt"));
    for mode in ["verify-full", "verify-ca", "require"] {
        // require with a CA verifies the chain, as libpq does.
        let url = pg.url("127.0.0.1", &format!("sslmode={mode}&{other}"));
        assert_refused(
            &url,
            "tls_other_ca",
            &format!("sslmode={mode} accepted a certificate of another CA"),
            &[
                &format!("sslmode={mode}"),
                "did not verify against the CA",
                "other-ca.crt",
            ],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_ignores_the_host_name_that_verify_full_checks() {
    let pg = PrivatePostgres::start().await;
    // Connect to 127.0.0.1 while calling the server by a name its certificate does not hold.
    let url = |mode: &str| {
        format!(
            "postgres://postgres@db.invalid:{}/postgres?hostaddr=127.0.0.1&sslmode={mode}&{}",
            pg.port,
            with_ca(&pg.path("ca.crt"))
        )
    };
    connect(&url("verify-ca"), "tls_ca_only")
        .await
        .expect("verify-ca does not check the host name");
    assert_refused(
        &url("verify-full"),
        "tls_ca_only",
        "verify-full accepted a certificate for another host",
        &["sslmode=verify-full", "not valid for the host name"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_disable_is_refused_by_a_server_that_accepts_only_tls() {
    let pg = PrivatePostgres::start().await;
    assert_refused(
        &pg.url("127.0.0.1", "sslmode=disable"),
        "tls_disable",
        "a plain connection to a hostssl-only server",
        &["sslmode=disable", "no pg_hba.conf entry"],
    )
    .await;
}
