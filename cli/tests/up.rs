//! Local mode end to end: `wapipe up` in a temporary directory brings up Apache Kafka, the
//! ingress and a worker pool; `wapipe send` pushes signed webhooks through it; every event lands
//! in the SQLite file exactly once; the burst scales the pool up and, after the (shortened)
//! scale-down window, down again; SIGTERM stops everything and no process is left behind.
//!
//! The ingress and worker binaries are built first with the profile of this test (a no-op when
//! `cargo test --workspace` already built them). Kafka must be installed
//! (scripts/install-kafka.sh). Deadlines only bound waiting; nothing asserts how long anything
//! took.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;
use wapipe::payloads::Generator;
use wapipe_core::split::split;
use wapipe_core::{EventKind, Provider};

/// Builds wapipe-ingress and wapipe-worker beside the `wapipe` binary under test.
fn build_siblings() -> PathBuf {
    let wapipe = PathBuf::from(env!("CARGO_BIN_EXE_wapipe"));
    let dir = wapipe.parent().expect("binary directory").to_path_buf();
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let profile = if profile == "debug" { "dev" } else { profile };
    let target_dir = dir.parent().expect("target directory");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "wapipe-ingress",
            "-p",
            "wapipe-worker",
            "--profile",
            profile,
        ])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(workspace)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the ingress and the worker");
    dir
}

fn signal(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, signal);
    }
}

/// Whether `pid` is still a process of ours (not reaped, and not reused by another program).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !zombie && (cmdline.contains("wapipe") || cmdline.contains("kafka.Kafka"))
}

/// `wapipe up` as a child; on drop (a failed assertion) it and everything it started are killed.
struct Up {
    child: Child,
    state_dir: PathBuf,
    seen: BTreeSet<u32>,
}

impl Up {
    /// Starts `wapipe up -f pipeline --state-dir state_dir --port port` with `args`, its output
    /// in `log`.
    fn spawn(
        bin_dir: &Path,
        pipeline: &Path,
        state_dir: &Path,
        port: u16,
        args: &[&str],
        log: &Path,
    ) -> Up {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wapipe"))
            .args(["up", "--no-tui", "--refresh", "200ms", "--grace", "20s"])
            .arg("-f")
            .arg(pipeline)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--port", &port.to_string()])
            .args(["--admin-port", &wapipe_testkit::free_port().to_string()])
            .args(args)
            .env("WAPIPE_BIN_DIR", bin_dir)
            .env_remove("WAPIPE_APP_SECRET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting wapipe up");
        Up {
            child,
            state_dir: state_dir.to_path_buf(),
            seen: BTreeSet::new(),
        }
    }

    fn status(&mut self) -> Option<Value> {
        let text = std::fs::read_to_string(self.state_dir.join("status.json")).ok()?;
        let status: Value = serde_json::from_str(&text).ok()?;
        let pids = &status["pids"];
        for pid in [&pids["broker"], &pids["ingress"]]
            .into_iter()
            .chain(pids["workers"].as_array().into_iter().flatten())
        {
            if let Some(pid) = pid.as_u64() {
                self.seen.insert(pid as u32);
            }
        }
        Some(status)
    }

    /// Polls status.json until `done` holds, failing after `within`.
    fn wait_for(&mut self, what: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.status() {
                if done(&status) {
                    return status;
                }
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("wapipe up exited ({exit}) while waiting for {what}");
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}; last status: {:?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&mut self, within: Duration) -> ExitStatus {
        signal(self.child.id(), Signal::TERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(exit) = self.child.try_wait().expect("waiting for wapipe up") {
                return exit;
            }
            assert!(Instant::now() < deadline, "wapipe up did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for &pid in &self.seen {
            if alive(pid) {
                signal(pid, Signal::KILL);
            }
        }
    }
}

fn pipeline_yaml(group: &str) -> String {
    pipeline_yaml_for(group, "meta")
}

fn pipeline_yaml_for(group: &str, provider: &str) -> String {
    format!(
        r#"apiVersion: wapipe.dev/v1alpha1
kind: WhatsAppWebhookPipeline
metadata:
  name: up-test
spec:
  kafka:
    bootstrapServers: 127.0.0.1:9092
  topic:
    partitions: 4
  deadLetterTopic:
    partitions: 1
  ingress:
    provider: {provider}
    appSecretRef: {{name: s, key: app-secret}}
    verifyTokenRef: {{name: s, key: verify-token}}
  worker:
    consumerGroup: {group}
    minReplicas: 1
    maxReplicas: 3
    lagPerReplica: 20
    scaleDownWindowSeconds: 3
    pollIntervalSeconds: 1
"#
    )
}

/// What `wapipe send` generates for `run`: message ids, (message id, status) pairs, and the
/// number of other events (errors and fields, stored in `wapipe_events`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Rows {
    messages: BTreeSet<String>,
    statuses: BTreeSet<(String, String)>,
    others: usize,
}

fn expected_rows(run: &str, users: u64, batch: usize, requests: u64) -> Rows {
    let generator = Generator::new(Provider::Meta, run, users, batch);
    let mut rows = Rows::default();
    for _ in 0..requests {
        for record in split(Provider::Meta, generator.next().body.as_bytes(), "f") {
            match record.kind {
                EventKind::Message => {
                    rows.messages.insert(record.message_id.expect("an id"));
                }
                EventKind::Status => {
                    rows.statuses.insert((
                        record.message_id.expect("an id"),
                        record.status.expect("a status"),
                    ));
                }
                EventKind::Error | EventKind::Field => rows.others += 1,
                other => panic!("unexpected event kind {other:?}"),
            }
        }
    }
    rows
}

/// The rows of `run` in the SQLite file (nothing yet if it cannot be read).
fn rows(db: &Path, run: &str) -> Rows {
    let Ok(connection) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Rows::default();
    };
    let _ = connection.busy_timeout(Duration::from_secs(5));
    let query = |sql: &str, pattern: &str| -> rusqlite::Result<Vec<(String, String)>> {
        let mut statement = connection.prepare(sql)?;
        let rows = statement.query_map([pattern], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    let ids = format!("wamid.{run}.%");
    let messages = query(
        "SELECT wamid, wamid FROM wapipe_messages WHERE wamid LIKE ?1",
        &ids,
    )
    .unwrap_or_default();
    let statuses = query(
        "SELECT wamid, status FROM wapipe_statuses WHERE wamid LIKE ?1",
        &ids,
    )
    .unwrap_or_default();
    let others = query(
        "SELECT event_id, kind FROM wapipe_events WHERE raw LIKE ?1",
        &format!("%{run}%"),
    )
    .unwrap_or_default();
    Rows {
        messages: messages.into_iter().map(|(id, _)| id).collect(),
        statuses: statuses.into_iter().collect(),
        others: others.len(),
    }
}

#[test]
fn up_carries_webhooks_into_sqlite_once_scales_with_lag_and_leaves_nothing_running() {
    let bin_dir = build_siblings();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(&pipeline, pipeline_yaml(&wapipe_testkit::unique_name("up"))).unwrap();
    let port = wapipe_testkit::free_port();
    let broker_port = wapipe_testkit::free_port();
    let secret = "up-test-secret";
    let mut up = Up::spawn(
        &bin_dir,
        &pipeline,
        &state_dir,
        port,
        &[
            "--broker-port",
            &broker_port.to_string(),
            "--app-secret",
            secret,
        ],
        &dir.path().join("up.log"),
    );
    let started = up.wait_for("the pipeline to come up", Duration::from_secs(180), |s| {
        s["pids"]["ingress"].is_u64() && s["workers_current"] == 1
    });
    assert!(started["pids"]["broker"].is_u64());

    // A burst far above one worker's lag share.
    let run = format!("up{}", std::process::id());
    let (requests, batch, users) = (160u64, 25usize, 60u64);
    // A 503 asks the provider to retry; like the provider, send the whole run again (same ids)
    // until every request of one pass was accepted. Duplicates must not become rows.
    let mut passes = 0;
    loop {
        passes += 1;
        let sent = Command::new(env!("CARGO_BIN_EXE_wapipe"))
            .args(["send", "--url", &format!("http://127.0.0.1:{port}/webhook")])
            .args(["--secret", secret, "--run-id", &run, "--concurrency", "4"])
            .args([
                "--requests",
                &requests.to_string(),
                "--batch",
                &batch.to_string(),
            ])
            .args(["--users", &users.to_string()])
            .output()
            .expect("running wapipe send");
        // `send` exits non-zero unless every request was answered 200.
        if sent.status.success() {
            break;
        }
        assert!(
            passes < 8,
            "send failed {passes} times:\n{}",
            String::from_utf8_lossy(&sent.stdout)
        );
    }

    // `wapipe up` reads the ingress's counters on its admin port (the webhook port has none).
    up.wait_for(
        "the ingress's request counter",
        Duration::from_secs(60),
        |s| s["requests_total"].as_u64().unwrap_or(0) >= requests,
    );
    let scaled_up = up.wait_for("the pool to scale up", Duration::from_secs(120), |s| {
        s["workers_current"].as_u64().unwrap_or(0) >= 2
    });
    assert!(scaled_up["workers_desired"].as_u64().unwrap() <= 3);

    let expected = expected_rows(&run, users, batch, requests);
    assert_eq!(
        expected.messages.len() + expected.statuses.len() + expected.others,
        (requests as usize) * batch
    );
    let db = state_dir.join("wapipe.db");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        up.status();
        // Every event is one row (primary keys make a second copy impossible; no event may be
        // missing and nothing else of this run may appear).
        let got = rows(&db, &run);
        if got == expected {
            break;
        }
        assert!(
            got.messages.is_subset(&expected.messages)
                && got.statuses.is_subset(&expected.statuses)
                && got.others <= expected.others,
            "rows that were never sent"
        );
        assert!(
            Instant::now() < deadline,
            "only {}/{} messages, {}/{} statuses, {}/{} other events arrived",
            got.messages.len(),
            expected.messages.len(),
            got.statuses.len(),
            expected.statuses.len(),
            got.others,
            expected.others
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let before_down: BTreeSet<u32> = up.seen.clone();
    let scaled_down = up.wait_for(
        "the pool to scale down after the window",
        Duration::from_secs(120),
        |s| s["workers_current"] == 1 && s["workers_desired"] == 1 && s["workers_stopping"] == 0,
    );
    let remaining: BTreeSet<u32> = scaled_down["pids"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .map(|p| p as u32)
        .collect();
    let workers_ever: BTreeSet<u32> = before_down
        .iter()
        .copied()
        .filter(|p| {
            Some(u64::from(*p)) != scaled_down["pids"]["broker"].as_u64()
                && Some(u64::from(*p)) != scaled_down["pids"]["ingress"].as_u64()
        })
        .collect();
    for pid in workers_ever.difference(&remaining) {
        assert!(!alive(*pid), "worker {pid} was scaled away but still runs");
    }

    let exit = up.terminate(Duration::from_secs(120));
    assert!(exit.success(), "wapipe up exited with {exit}");
    let seen = up.seen.clone();
    assert!(
        seen.len() >= 4,
        "broker, ingress and at least two workers: {seen:?}"
    );
    let left: Vec<u32> = seen.iter().copied().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
    let output = std::fs::read_to_string(dir.path().join("up.log")).unwrap();
    assert!(output.contains("none left running"), "{output}");
}

/// The flags of the ports `wapipe up` listens on.
const PORT_FLAGS: [&str; 3] = ["--port", "--admin-port", "--broker-port"];

/// `wapipe up` without its screen, its state under `state_dir`, the ingress and the worker from
/// `bin_dir`, and a free port for every port flag but `except`.
fn up_on_free_ports(state_dir: &Path, bin_dir: &Path, except: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wapipe"));
    command
        .args(["up", "--no-tui", "--state-dir"])
        .arg(state_dir)
        .env("WAPIPE_BIN_DIR", bin_dir);
    for flag in PORT_FLAGS.into_iter().filter(|f| Some(*f) != except) {
        command.args([flag, &wapipe_testkit::free_port().to_string()]);
    }
    command
}

/// The stderr of a run that must have failed.
fn failure_stderr(output: &Output) -> String {
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn up_says_so_when_the_broker_cannot_start_and_leaves_nothing_behind() {
    let bin_dir = build_siblings();
    let dir = tempfile::tempdir().unwrap();
    // A Java whose storage tool works but whose broker exits at once.
    let java_home = dir.path().join("java");
    std::fs::create_dir_all(java_home.join("bin")).unwrap();
    let java = java_home.join("bin/java");
    std::fs::write(
        &java,
        "#!/bin/sh\ncase \"$*\" in *StorageTool*) exit 0 ;; esac\necho 'no broker today' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&java, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = up_on_free_ports(dir.path(), &bin_dir, None)
        .env("JAVA_HOME", &java_home)
        .output()
        .unwrap();
    let stderr = failure_stderr(&output);
    assert!(
        stderr.contains("the Kafka broker could not start")
            && stderr.contains("the broker exited")
            && stderr.contains("no broker today"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("none left running"));
}

#[test]
fn up_refuses_a_taken_port_and_names_the_flag_to_change() {
    let bin_dir = build_siblings();
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    for flag in PORT_FLAGS {
        let output = up_on_free_ports(dir.path(), &bin_dir, Some(flag))
            .args([flag, &port])
            .output()
            .unwrap();
        let stderr = failure_stderr(&output);
        assert!(
            stderr.contains(&format!("port {port}")) && stderr.contains(flag),
            "{stderr}"
        );
    }
}

/// `wapipe up --app a=... --app b=...` for `provider` on the shared broker: each app's
/// signature is accepted on /webhook and on its own path, refused on the other's; a stranger's
/// gets 401 and an unknown app's path 404.
fn several_apps_share_one_ingress_and_each_path_trusts_only_its_app(provider: Provider) {
    let bin_dir = build_siblings();
    let (brokers, _kafka) = wapipe_testkit::broker().expect("a Kafka broker");
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(
        &pipeline,
        pipeline_yaml_for(&wapipe_testkit::unique_name("apps"), provider.as_str()),
    )
    .unwrap();
    let port = wapipe_testkit::free_port();
    let mut up = Up::spawn(
        &bin_dir,
        &pipeline,
        &state_dir,
        port,
        &[
            "--kafka-brokers",
            &brokers,
            "--app",
            "shop-a=secret-of-a",
            "--app",
            "shop-b=secret=of=b",
        ],
        &dir.path().join("up.log"),
    );
    up.wait_for("the ingress", Duration::from_secs(180), |s| {
        s["pids"]["ingress"].is_u64()
    });
    let body = match provider {
        Provider::Meta => include_str!("../../core/tests/fixtures/meta/two_senders.json"),
        Provider::Wasender => {
            include_str!("../../core/tests/fixtures/wasender/private_message.json")
        }
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, secret: &str| -> u16 {
        let (header, value) = match provider {
            Provider::Meta => (
                "x-hub-signature-256",
                wapipe_core::signature::sign_meta(secret.as_bytes(), body.as_bytes()),
            ),
            Provider::Wasender => ("x-webhook-signature", secret.to_string()),
        };
        let request = http
            .post(format!("http://127.0.0.1:{port}{path}"))
            .header(header, value)
            .body(body)
            .send();
        runtime
            .block_on(request)
            .expect("the ingress answers")
            .status()
            .as_u16()
    };
    for (path, secret, want) in [
        ("/webhook", "secret-of-a", 200),
        ("/webhook", "secret=of=b", 200),
        ("/webhook", "secret-of-nobody", 401),
        ("/webhook/shop-a", "secret-of-a", 200),
        ("/webhook/shop-b", "secret=of=b", 200),
        ("/webhook/shop-a", "secret=of=b", 401),
        ("/webhook/shop-c", "secret-of-a", 404),
    ] {
        assert_eq!(
            post(path, secret),
            want,
            "{provider:?} {path} signed by {secret}"
        );
    }
    // No secret was generated beside the apps.
    assert!(!state_dir.join("app-secret").exists());
    let exit = up.terminate(Duration::from_secs(60));
    assert!(exit.success(), "wapipe up exited with {exit}");
    let output = std::fs::read_to_string(dir.path().join("up.log")).unwrap();
    assert!(output.contains("/webhook/shop-b"), "{output}");
}

#[test]
fn up_with_two_meta_apps_trusts_each_on_the_shared_and_on_its_own_path() {
    several_apps_share_one_ingress_and_each_path_trusts_only_its_app(Provider::Meta);
}

#[test]
fn up_with_two_wasender_apps_trusts_each_on_the_shared_and_on_its_own_path() {
    several_apps_share_one_ingress_and_each_path_trusts_only_its_app(Provider::Wasender);
}
