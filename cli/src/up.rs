//! `wapipe up`: the whole pipeline on one machine, no Kubernetes. An Apache Kafka broker on
//! loopback (KRaft, its log in the state directory), the topics of the pipeline, one ingress and a pool of
//! worker processes sized every poll interval by the operator's own scaling policy. A live view
//! shows rates, lag, workers and dead letters; Ctrl-C or SIGTERM stops everything in order
//! (ingress and workers drain, then the broker) and waits for every child.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::signal::unix::{signal, SignalKind};
use wapipe_operator::kafka::{KafkaSettings, RdKafkaAdmin, TopicAdmin, TopicRequest};
use wapipe_operator::scaler::policy::{decide, PartitionOffsets, PartitionStatus, PolicyState};

use crate::local::metrics::IngressCounters;
use crate::local::pipeline::{self, LocalPipeline};
use crate::local::process::{Managed, Spec, WorkerPool};
use crate::local::view::{self, PartitionRow, Pids, Snapshot};

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// WhatsAppWebhookPipeline YAML (the file you would `kubectl apply`); a bundled example when
    /// absent.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Kafka's log dirs, the SQLite database, logs and status.json live here.
    #[arg(long, env = "WAPIPE_STATE_DIR", default_value = ".wapipe")]
    pub state_dir: PathBuf,
    /// Port of the ingress on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Port of the Kafka broker on 127.0.0.1; its KRaft controller takes the next port (not
    /// 19092, which the test scripts' broker uses).
    #[arg(long, default_value_t = 19192)]
    pub broker_port: u16,
    /// Use this running Kafka cluster instead of starting a broker.
    #[arg(long)]
    pub kafka_brokers: Option<String>,
    /// App secret (Meta) or webhook secret (WASender) the ingress verifies; generated once and
    /// kept in the state directory when absent.
    #[arg(long, env = "WAPIPE_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,
    /// Verify token of Meta's GET handshake; generated like the app secret when absent.
    #[arg(long, env = "WAPIPE_VERIFY_TOKEN", hide_env_values = true)]
    pub verify_token: Option<String>,
    /// Where workers write rows: postgres://... for PostgreSQL, sqlite://PATH for another
    /// SQLite file. Default: wapipe.db in the state directory.
    #[arg(long, env = "WAPIPE_DATABASE_URL", hide_env_values = true)]
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

/// Where the workers write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkChoice {
    Sqlite(PathBuf),
    Postgres(String),
}

impl SinkChoice {
    pub fn from_url(url: Option<&str>, state_dir: &Path) -> anyhow::Result<SinkChoice> {
        match url {
            None => Ok(SinkChoice::Sqlite(state_dir.join("wapipe.db"))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(SinkChoice::Postgres(url.to_string()))
            }
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) if !path.is_empty() => Ok(SinkChoice::Sqlite(PathBuf::from(path))),
                _ => bail!(
                    "--database-url must be postgres://..., postgresql://... or sqlite://PATH"
                ),
            },
        }
    }

    fn env(&self) -> BTreeMap<String, String> {
        match self {
            SinkChoice::Sqlite(path) => BTreeMap::from([
                ("WAPIPE_SINK".into(), "sqlite".into()),
                ("WAPIPE_SQLITE_PATH".into(), path.display().to_string()),
            ]),
            SinkChoice::Postgres(url) => BTreeMap::from([
                ("WAPIPE_SINK".into(), "postgres".into()),
                ("WAPIPE_DATABASE_URL".into(), url.clone()),
            ]),
        }
    }

    fn describe(&self) -> String {
        match self {
            SinkChoice::Sqlite(path) => format!("SQLite {}", path.display()),
            SinkChoice::Postgres(_) => "PostgreSQL (--database-url)".to_string(),
        }
    }
}

/// Finds `name` in `bin_dir`, beside the running executable, or on `$PATH`.
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = bin_dir {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
        bail!("{} not found", path.display());
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name(name);
    if beside.is_file() {
        return Ok(beside);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    on_path.with_context(|| {
        format!(
            "{name} is neither beside {} nor on $PATH: build it with \
             `cargo build --release -p wapipe-ingress -p wapipe-worker -p wapipe`",
            exe.display()
        )
    })
}

/// A secret from the flag, else the one kept in `file`, else a new random one written there.
fn secret(given: Option<&str>, file: &Path) -> anyhow::Result<(String, &'static str)> {
    if let Some(secret) = given.filter(|s| !s.is_empty()) {
        return Ok((secret.to_string(), "given"));
    }
    if let Ok(kept) = std::fs::read_to_string(file) {
        let kept = kept.trim().to_string();
        if !kept.is_empty() {
            return Ok((kept, "kept"));
        }
    }
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)
        .context("reading /dev/urandom")?;
    let secret = hex::encode(bytes);
    std::fs::write(file, &secret).with_context(|| format!("writing {}", file.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    Ok((secret, "generated"))
}

fn ensure_port_free(port: u16, what: &str, flag: &str) -> anyhow::Result<()> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|e| {
            anyhow::anyhow!(
                "port {port} on 127.0.0.1 is taken ({e}): something else listens there; \
             pass another {flag} for the {what}"
            )
        })
}

/// Everything `up` started, stopped in order by [`Running::shutdown`].
#[derive(Default)]
struct Running {
    broker: Option<Managed>,
    ingress: Option<Managed>,
    pool: Option<WorkerPool>,
}

impl Running {
    async fn shutdown(&mut self, grace: Duration) {
        // The ingress flushes its producer and the workers commit, both need the broker.
        let ingress = self.ingress.take().map(|i| i.stop(grace));
        let workers = async {
            if let Some(pool) = &mut self.pool {
                pool.shutdown().await;
            }
        };
        match ingress {
            Some(ingress) => {
                tokio::join!(ingress, workers);
            }
            None => workers.await,
        }
        if let Some(broker) = self.broker.take() {
            broker.stop(grace).await;
        }
    }
}

/// Ensures a topic exists with at least `request.partitions` partitions; returns what was done.
async fn ensure_topic(
    admin: &RdKafkaAdmin,
    kafka: &KafkaSettings,
    request: TopicRequest,
) -> anyhow::Result<String> {
    let name = request.name.clone();
    match admin.describe_topic(kafka, &name).await? {
        None => {
            admin
                .create_topic(kafka, &request)
                .await
                .with_context(|| format!("creating topic {name}"))?;
            Ok(format!(
                "created {name} ({} partitions)",
                request.partitions
            ))
        }
        Some(shape) if shape.partitions < request.partitions => {
            admin
                .create_partitions(kafka, &name, request.partitions)
                .await
                .with_context(|| format!("adding partitions to {name}"))?;
            Ok(format!(
                "adopted {name}, partitions {} -> {}",
                shape.partitions, request.partitions
            ))
        }
        Some(shape) => Ok(format!(
            "adopted {name} ({} partitions{})",
            shape.partitions,
            if shape.partitions > request.partitions {
                ", more than the spec asks: partitions never shrink"
            } else {
                ""
            }
        )),
    }
}

fn topic_requests(pipeline: &LocalPipeline) -> [TopicRequest; 2] {
    // One local broker: replication 1, and min.insync.replicas 1 whatever the cluster's spec says.
    let local = |name: &str, partitions: i32, config: &BTreeMap<String, String>| {
        let mut config = config.clone();
        config.remove("min.insync.replicas");
        TopicRequest::for_pipeline(
            name,
            partitions,
            Some(1),
            &config,
            pipeline.spec.ingress.max_body_bytes,
        )
    };
    let spec = &pipeline.spec;
    [
        local(&spec.topic.name, spec.topic.partitions, &spec.topic.config),
        local(
            &spec.dead_letter_topic.name,
            spec.dead_letter_topic.partitions,
            &spec.dead_letter_topic.config,
        ),
    ]
}

/// Waits until `brokers` answers metadata requests, failing early if `broker` exits.
async fn wait_for_broker(brokers: &str, mut broker: Option<&mut Managed>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(broker) = broker.as_deref_mut() {
            if let Some(status) = broker.exited() {
                bail!(
                    "the broker exited ({status}) before it answered; last lines of {}:\n{}",
                    broker.spec.log.display(),
                    broker.log_tail(20)
                );
            }
        }
        let b = brokers.to_string();
        let answered = tokio::task::spawn_blocking(move || {
            wapipe_testkit::wait_for_broker(&b, Duration::from_secs(1)).is_ok()
        })
        .await
        .unwrap_or(false);
        if answered {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no broker answered on {brokers} within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_ingress(
    client: &reqwest::Client,
    port: u16,
    ingress: &mut Managed,
) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = ingress.exited() {
            bail!(
                "the ingress exited ({status}) before it was ready; last lines of {}:\n{}",
                ingress.spec.log.display(),
                ingress.log_tail(20)
            );
        }
        if let Ok(response) = client.get(&url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the ingress was not ready within 60 s; last lines of {}:\n{}",
                ingress.spec.log.display(),
                ingress.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Refuses to share a state directory with another running `wapipe up`.
struct StateLock(PathBuf);

impl StateLock {
    fn acquire(state_dir: &Path) -> anyhow::Result<StateLock> {
        let path = state_dir.join("up.pid");
        if let Ok(pid) = std::fs::read_to_string(&path) {
            let pid = pid.trim();
            if !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists() {
                let cmdline =
                    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if cmdline.contains("wapipe") {
                    bail!(
                        "another wapipe up (pid {pid}) uses {}; stop it or pass --state-dir",
                        state_dir.display()
                    );
                }
            }
        }
        std::fs::write(&path, std::process::id().to_string())?;
        Ok(StateLock(path))
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupt",
        _ = terminate.recv() => "SIGTERM",
        _ = hangup.recv() => "SIGHUP",
    })
}

/// Runs `wapipe up` until Ctrl-C, SIGTERM or a fatal failure of the ingress or the broker.
pub async fn up(args: &UpArgs) -> anyhow::Result<()> {
    let mut pipeline = pipeline::load(args.file.as_deref())?;
    if let Some(poll) = args.poll_interval {
        pipeline.poll_interval = poll.max(Duration::from_millis(100));
    }
    if let Some(window) = args.scale_down_window {
        pipeline.policy.scale_down_window = window;
    }
    std::fs::create_dir_all(args.state_dir.join("logs"))
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let state_dir = args.state_dir.canonicalize()?;
    let _lock = StateLock::acquire(&state_dir)?;

    let mut running = Running::default();
    let outcome = tokio::select! {
        result = run(args, &pipeline, &state_dir, &mut running) => result,
        signal = shutdown_signal() => {
            println!("\n{}: stopping the ingress, the workers, then the broker", signal?);
            Ok(())
        }
    };
    let started = [
        running.broker.as_ref().map(Managed::pid),
        running.ingress.as_ref().map(Managed::pid),
    ];
    let workers = running
        .pool
        .as_ref()
        .map(WorkerPool::pids)
        .unwrap_or_default();
    running.shutdown(args.grace).await;
    let count = started.iter().flatten().count() + workers.len();
    println!("stopped {count} processes; none left running");
    outcome
}

async fn run(
    args: &UpArgs,
    pipeline: &LocalPipeline,
    state_dir: &Path,
    running: &mut Running,
) -> anyhow::Result<()> {
    let sink = SinkChoice::from_url(args.database_url.as_deref(), state_dir)?;
    let ingress_binary = find_binary("wapipe-ingress", args.bin_dir.as_deref())?;
    let worker_binary = find_binary("wapipe-worker", args.bin_dir.as_deref())?;
    let (app_secret, app_secret_origin) =
        secret(args.app_secret.as_deref(), &state_dir.join("app-secret"))?;
    let (verify_token, _) = secret(
        args.verify_token.as_deref(),
        &state_dir.join("verify-token"),
    )?;
    ensure_port_free(args.port, "ingress", "--port")?;
    let logs = state_dir.join("logs");
    let spec = &pipeline.spec;

    println!(
        "pipeline {} (group {}, {} partitions, {} to {} workers, {} lag per worker, poll {}, scale-down window {})",
        pipeline.name,
        pipeline.consumer_group,
        spec.topic.partitions,
        pipeline.policy.min_replicas,
        pipeline.policy.max_replicas.min(spec.topic.partitions.max(1) as u32),
        pipeline.policy.lag_per_replica,
        humantime::format_duration(pipeline.poll_interval),
        humantime::format_duration(pipeline.policy.scale_down_window),
    );
    for note in &pipeline.notes {
        println!("local mode: {note}");
    }

    let brokers = match &args.kafka_brokers {
        Some(brokers) => {
            println!("broker: {brokers} (given)");
            wait_for_broker(brokers, None).await?;
            brokers.clone()
        }
        None => {
            ensure_port_free(args.broker_port, "broker", "--broker-port")?;
            ensure_port_free(
                args.broker_port.saturating_add(1),
                "Kafka controller (the broker port + 1)",
                "--broker-port",
            )?;
            let broker_dir = state_dir.join("kafka");
            let command = wapipe_testkit::kafka::prepare(
                &broker_dir,
                wapipe_testkit::KafkaPorts {
                    port: args.broker_port,
                    controller_port: args.broker_port.saturating_add(1),
                },
                &[],
            )
            .context(
                "Apache Kafka could not be prepared (or pass --kafka-brokers for a broker of \
                 your own)",
            )?;
            let broker = Managed::spawn(Spec {
                name: "kafka".into(),
                program: command.program,
                args: command.args,
                env: BTreeMap::new(),
                current_dir: Some(broker_dir),
                log: logs.join("kafka.log"),
            })?;
            let broker = running.broker.insert(broker);
            let brokers = format!("127.0.0.1:{}", args.broker_port);
            wait_for_broker(&brokers, Some(broker))
                .await
                .context("the Kafka broker could not start")?;
            println!(
                "broker: Apache Kafka {} on {brokers}, log dirs in {}/kafka/data (pid {})",
                wapipe_testkit::kafka_version(),
                state_dir.display(),
                broker.pid()
            );
            brokers
        }
    };

    let kafka: KafkaSettings = BTreeMap::from([("bootstrap.servers".into(), brokers.clone())]);
    let admin = RdKafkaAdmin;
    for request in topic_requests(pipeline) {
        println!("topic: {}", ensure_topic(&admin, &kafka, request).await?);
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut ingress_env = BTreeMap::from([
        (
            "WAPIPE_LISTEN".to_string(),
            format!("127.0.0.1:{}", args.port),
        ),
        (
            "WAPIPE_PROVIDER".into(),
            pipeline.provider().as_str().into(),
        ),
        ("WAPIPE_APP_SECRET".into(), app_secret.clone()),
        ("WAPIPE_VERIFY_TOKEN".into(), verify_token.clone()),
        ("WAPIPE_TOPIC".into(), spec.topic.name.clone()),
        ("WAPIPE_KAFKA_BROKERS".into(), brokers.clone()),
        ("WAPIPE_READINESS_INTERVAL".into(), "1s".into()),
        (
            "WAPIPE_PRODUCE_TIMEOUT".into(),
            humantime::format_duration(args.produce_timeout).to_string(),
        ),
        ("WAPIPE_SHUTDOWN_TIMEOUT".into(), "10s".into()),
    ]);
    if let Some(max) = spec.ingress.max_body_bytes {
        ingress_env.insert("WAPIPE_MAX_BODY_BYTES".into(), max.to_string());
    }
    let ingress = running.ingress.insert(Managed::spawn(Spec {
        name: "ingress".into(),
        program: ingress_binary,
        args: Vec::new(),
        env: ingress_env,
        current_dir: None,
        log: logs.join("ingress.log"),
    })?);
    wait_for_ingress(&client, args.port, ingress).await?;
    let ingress_url = format!("http://127.0.0.1:{}/webhook", args.port);
    println!("ingress: {ingress_url} (pid {})", ingress.pid());
    let origin = match app_secret_origin {
        "given" => "given".to_string(),
        other => format!(
            "{other}, kept in {}",
            state_dir.join("app-secret").display()
        ),
    };
    println!("secret: {app_secret} ({origin}), verify token {verify_token}");
    println!("workers write to {}", sink.describe());
    println!("logs: {}", logs.display());
    let hint = format!(
        "wapipe send --url {ingress_url} --secret {app_secret} --provider {} --requests 800 --batch 20 --concurrency 8",
        pipeline.provider()
    );
    println!("send webhooks: {hint}");

    let worker_env = {
        let mut env = sink.env();
        env.extend([
            ("WAPIPE_KAFKA_BROKERS".to_string(), brokers.clone()),
            ("WAPIPE_TOPIC".into(), spec.topic.name.clone()),
            (
                "WAPIPE_DEAD_LETTER_TOPIC".into(),
                spec.dead_letter_topic.name.clone(),
            ),
            ("WAPIPE_GROUP".into(), pipeline.consumer_group.clone()),
            (
                "WAPIPE_MAX_ATTEMPTS".into(),
                spec.worker.max_attempts.to_string(),
            ),
            ("WAPIPE_DRAIN_TIMEOUT".into(), "10s".into()),
        ]);
        env
    };
    let worker_logs = logs.clone();
    let factory = Box::new(move |index: u32| {
        let mut env = worker_env.clone();
        env.insert(
            "WAPIPE_LISTEN".into(),
            format!("127.0.0.1:{}", wapipe_testkit::free_port()),
        );
        Spec {
            name: format!("worker-{index}"),
            program: worker_binary.clone(),
            args: Vec::new(),
            env,
            current_dir: None,
            log: worker_logs.join(format!("worker-{index}.log")),
        }
    });
    let policy = pipeline.policy.clone();
    let initial = if policy.scale_to_zero {
        0
    } else {
        policy.min_replicas.max(1)
    };
    let pool = running.pool.insert(WorkerPool::new(factory, args.grace));
    pool.scale_to(initial)?;

    let tui = !args.no_tui && std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut state = PolicyState::default();
    let mut snapshot = Snapshot {
        pipeline: pipeline.name.clone(),
        hint,
        brokers: brokers.clone(),
        ingress_url: ingress_url.clone(),
        workers_desired: initial,
        workers_min: if policy.scale_to_zero {
            0
        } else {
            policy.min_replicas.max(1)
        },
        workers_max: policy.max_replicas.min(spec.topic.partitions.max(1) as u32),
        reason: "Starting".into(),
        ..Snapshot::default()
    };
    // Offsets are read in a task of their own: a slow broker must not freeze the view.
    let (readings_tx, mut readings) = tokio::sync::mpsc::channel(1);
    let _reader = AbortOnDrop(tokio::spawn(read_offsets_every(
        pipeline.poll_interval,
        kafka.clone(),
        spec.topic.name.clone(),
        spec.dead_letter_topic.name.clone(),
        pipeline.consumer_group.clone(),
        readings_tx,
    )));
    let mut refresh = tokio::time::interval(args.refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", args.port);
    let mut previous: Option<IngressCounters> = None;
    let mut last_line = String::new();
    let mut last_line_at = Instant::now();
    if tui {
        print!("\x1b[2J");
    }

    loop {
        tokio::select! {
            Some(reading) = readings.recv() => {
                let pool = running.pool.as_mut().context("the worker pool is gone")?;
                match reading.offsets {
                    Ok(offsets) => {
                        let current = pool.current();
                        let decision = decide(&policy, &mut state, &offsets, current, reading.at);
                        if decision.desired != current && !tui {
                            println!(
                                "scaler: {} {current} -> {} workers: {}",
                                decision.reason.as_str(), decision.desired, decision.message
                            );
                        }
                        pool.scale_to(decision.desired)?;
                        snapshot.workers_desired = decision.desired;
                        snapshot.total_lag = decision.total_lag;
                        snapshot.reason = decision.reason.as_str().to_string();
                        snapshot.decision = decision.message.clone();
                        snapshot.partitions = decision.partitions.iter().map(|p| PartitionRow {
                            partition: p.partition,
                            lag: p.lag,
                            status: status_word(p.status).to_string(),
                        }).collect();
                        snapshot.lag_error = None;
                    }
                    Err(error) => snapshot.lag_error = Some(error),
                }
                if let Some(dead_letters) = reading.dead_letters {
                    snapshot.dead_letters = dead_letters;
                }
            }
            _ = refresh.tick() => {
                if let Some(broker) = running.broker.as_mut() {
                    if let Some(status) = broker.exited() {
                        bail!("the broker exited ({status}); last lines of its log:\n{}", broker.log_tail(20));
                    }
                }
                let ingress = running.ingress.as_mut().context("the ingress is gone")?;
                if let Some(status) = ingress.exited() {
                    bail!("the ingress exited ({status}); last lines of its log:\n{}", ingress.log_tail(20));
                }
                let ingress_pid = ingress.pid();
                let pool = running.pool.as_mut().context("the worker pool is gone")?;
                for notice in pool.restart_exited()? {
                    eprintln!("{notice}");
                }
                if let Ok(response) = client.get(&metrics_url).send().await {
                    if let Ok(text) = response.text().await {
                        let counters = IngressCounters::parse(&text, Instant::now());
                        if let Some(previous) = &previous {
                            let (requests, events) = counters.rates_since(previous);
                            snapshot.requests_per_sec = requests;
                            snapshot.events_per_sec = events;
                        }
                        snapshot.requests_total = counters.requests as u64;
                        snapshot.failed_requests_total = counters.failed_requests as u64;
                        snapshot.events_total = counters.events as u64;
                        previous = Some(counters);
                    }
                }
                snapshot.uptime_secs = started.elapsed().as_secs();
                snapshot.workers_current = pool.current();
                snapshot.workers_stopping = pool.stopping();
                snapshot.worker_restarts = pool.restarts;
                snapshot.pids = Pids {
                    broker: running.broker.as_ref().map(Managed::pid),
                    ingress: Some(ingress_pid),
                    workers: pool.pids(),
                };
                let _ = view::write_status(state_dir, &snapshot);
                if tui {
                    print!("\x1b[H{}", view::render_table(&snapshot));
                    let _ = std::io::stdout().flush();
                } else {
                    let line = view::render_line(&snapshot);
                    let changed = line.split_once(' ').map(|(_, rest)| rest)
                        != last_line.split_once(' ').map(|(_, rest)| rest);
                    if changed || last_line_at.elapsed() >= Duration::from_secs(10) {
                        println!("{line}");
                        last_line = line;
                        last_line_at = Instant::now();
                    }
                }
            }
        }
    }
}

/// One read of the group's offsets and of the dead-letter topic's high watermarks.
struct Reading {
    offsets: Result<Vec<PartitionOffsets>, String>,
    dead_letters: Option<i64>,
    at: Instant,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads offsets every `interval` and hands them over; stops when the receiver is gone.
async fn read_offsets_every(
    interval: Duration,
    kafka: KafkaSettings,
    topic: String,
    dead_letter_topic: String,
    group: String,
    readings: tokio::sync::mpsc::Sender<Reading>,
) {
    const READ_TIMEOUT: Duration = Duration::from_secs(30);
    let admin = RdKafkaAdmin;
    let mut poll = tokio::time::interval(interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        let offsets =
            match tokio::time::timeout(READ_TIMEOUT, admin.read_offsets(&kafka, &topic, &group))
                .await
            {
                Ok(Ok(offsets)) => Ok(offsets),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("reading offsets took over {READ_TIMEOUT:?}")),
            };
        let at = Instant::now();
        let dead_letters = tokio::time::timeout(
            READ_TIMEOUT,
            admin.read_offsets(&kafka, &dead_letter_topic, &group),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|offsets| offsets.iter().map(|o| o.log_end).sum());
        let reading = Reading {
            offsets,
            dead_letters,
            at,
        };
        if readings.send(reading).await.is_err() {
            return;
        }
    }
}

fn status_word(status: PartitionStatus) -> &'static str {
    match status {
        PartitionStatus::Ok => "ok",
        PartitionStatus::Lagging => "lagging",
        PartitionStatus::Stalled => "stalled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_is_sqlite_in_the_state_dir_unless_a_url_says_otherwise() {
        let dir = Path::new("/tmp/state");
        assert_eq!(
            SinkChoice::from_url(None, dir).unwrap(),
            SinkChoice::Sqlite(dir.join("wapipe.db"))
        );
        assert_eq!(
            SinkChoice::from_url(Some("postgres://root@127.0.0.1/test"), dir).unwrap(),
            SinkChoice::Postgres("postgres://root@127.0.0.1/test".into())
        );
        assert_eq!(
            SinkChoice::from_url(Some("sqlite:///var/rows.db"), dir).unwrap(),
            SinkChoice::Sqlite("/var/rows.db".into())
        );
        assert!(SinkChoice::from_url(Some("mysql://x"), dir).is_err());
    }

    #[test]
    fn a_taken_port_is_refused_with_the_flag_to_change_it() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = ensure_port_free(port, "ingress", "--port").unwrap_err();
        assert!(error.to_string().contains("--port"), "{error}");
    }

    #[test]
    fn local_topics_have_one_replica_and_a_min_insync_replicas_one_node_meets() {
        let yaml = include_str!("../../examples/meta-postgres.yaml");
        let pipeline = pipeline::parse(yaml).unwrap();
        let [raw, dead] = topic_requests(&pipeline);
        assert_eq!(raw.partitions, 12);
        assert_eq!(raw.replication_factor, Some(1));
        // The example asks for 2 in-sync replicas (a cluster's setting); one node has one.
        assert_eq!(
            raw.config.get("min.insync.replicas").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            raw.config.get("max.message.bytes").map(String::as_str),
            Some("3211264")
        );
        assert_eq!(
            raw.config.get("retention.ms").map(String::as_str),
            Some("604800000")
        );
        assert_eq!(dead.name, "whatsapp_webhooks_failed");
    }
}
