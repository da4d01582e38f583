//! `wapipe up`: the whole pipeline on one machine, no Kubernetes. An Apache Kafka broker on
//! loopback (KRaft, its log in the state directory), the topics of the pipeline, one ingress and a
//! pool of worker processes sized every poll interval by the operator's own scaling policy. A
//! live view shows rates, lag, workers and dead letters; Ctrl-C or SIGTERM stops everything in
//! order (ingress and workers drain, then the broker) and waits for every child.
//!
//! The pieces live in [`crate::local`]: the broker and topics ([`broker`]), the children's
//! environment ([`env`]), the machine side ([`host`]), the process pool ([`process`]), the
//! scaler ([`scale`]) and the view ([`view`]). This file puts them together in order.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use wapipe_operator::kafka::{KafkaSettings, RdKafkaAdmin};
use wapipe_operator::scaler::policy::PolicyState;

use crate::local::broker;
use crate::local::env::{self, IngressEnv, Origin, SinkChoice};
use crate::local::host::{self, Children, StateLock};
use crate::local::metrics::IngressCounters;
use crate::local::pipeline::{self, LocalPipeline};
use crate::local::process::{Managed, Spec, WorkerPool};
use crate::local::scale::{self, Reader, Watched};
use crate::local::view::{self, Pids, Screen, Snapshot};
use crate::topics::ensure_topic;

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

    let mut children = Children::default();
    let outcome = tokio::select! {
        result = run(args, &pipeline, &state_dir, &mut children) => result,
        signal = wapipe_core::service::stop_signal() => {
            println!("\n{signal}: stopping the ingress, the workers, then the broker");
            Ok(())
        }
    };
    let count = children.count();
    children.shutdown(args.grace).await;
    println!("stopped {count} processes; none left running");
    outcome
}

/// Starts everything in order (broker, topics, ingress, workers), then keeps the pipeline
/// running: scales on each reading of the offsets and redraws the view every refresh.
async fn run(
    args: &UpArgs,
    pipeline: &LocalPipeline,
    state_dir: &Path,
    children: &mut Children,
) -> anyhow::Result<()> {
    let sink = SinkChoice::from_url(args.database_url.as_deref(), state_dir)?;
    let ingress_binary = host::find_binary("wapipe-ingress", args.bin_dir.as_deref())?;
    let worker_binary = host::find_binary("wapipe-worker", args.bin_dir.as_deref())?;
    let mut apps = Vec::new();
    let mut app_secret_origin = None;
    if args.app_secret.is_some() || args.apps.is_empty() {
        let (secret, origin) =
            env::secret(args.app_secret.as_deref(), &state_dir.join("app-secret"))?;
        apps.push((env::DEFAULT_APP.to_string(), secret));
        app_secret_origin = Some(origin);
    }
    apps.extend(args.apps.iter().cloned());
    let app_secret_dir = env::write_app_secrets(&state_dir.join("app-secrets"), &apps)?;
    let (verify_token, _) = env::secret(
        args.verify_token.as_deref(),
        &state_dir.join("verify-token"),
    )?;
    host::ensure_port_free(args.port, "ingress", "--port")?;
    host::ensure_port_free(args.admin_port, "ingress's admin listener", "--admin-port")?;
    let logs = state_dir.join("logs");
    print_pipeline(pipeline);

    // The broker and the topics.
    let brokers = match &args.kafka_brokers {
        Some(brokers) => {
            println!("broker: {brokers} (given)");
            broker::wait_until_answering(brokers, None).await?;
            brokers.clone()
        }
        None => {
            let (process, brokers) = broker::start(
                args.broker_port,
                &state_dir.join("kafka"),
                &logs.join("kafka.log"),
            )
            .await?;
            println!(
                "broker: Apache Kafka {} on {brokers}, log dirs in {}/kafka/data (pid {})",
                wapipe_kafka_local::kafka_version(),
                state_dir.display(),
                process.pid()
            );
            children.broker = Some(process);
            brokers
        }
    };
    let kafka: KafkaSettings = [("bootstrap.servers".to_string(), brokers.clone())].into();
    for request in broker::topic_requests(pipeline) {
        println!(
            "topic: {}",
            ensure_topic(&RdKafkaAdmin, &kafka, request).await?
        );
    }

    // The ingress.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let ingress_env = env::ingress(
        pipeline,
        &IngressEnv {
            port: args.port,
            admin_port: args.admin_port,
            brokers: &brokers,
            app_secret_dir: &app_secret_dir,
            verify_token: &verify_token,
            produce_timeout: args.produce_timeout,
        },
    );
    let ingress = children.ingress.insert(Managed::spawn(Spec {
        name: "ingress".into(),
        program: ingress_binary,
        args: Vec::new(),
        env: ingress_env,
        current_dir: None,
        log: logs.join("ingress.log"),
    })?);
    wait_for_ingress(&client, args.admin_port, ingress).await?;
    let ingress_url = format!("http://127.0.0.1:{}/webhook", args.port);
    println!(
        "ingress: {ingress_url} (pid {}; health and metrics on http://127.0.0.1:{}/metrics)",
        ingress.pid(),
        args.admin_port
    );
    for (name, secret) in &apps {
        let origin = match app_secret_origin.filter(|_| name == env::DEFAULT_APP) {
            None | Some(Origin::Given) => "given".to_string(),
            Some(other) => format!(
                "{}, kept in {}",
                other.as_str(),
                state_dir.join("app-secret").display()
            ),
        };
        println!("app {name}: secret {secret} ({origin}), also on {ingress_url}/{name}");
    }
    println!(
        "secrets are read from {} (add or remove a file to rotate); verify token {verify_token}",
        app_secret_dir.display()
    );
    let app_secret = &apps[0].1;
    println!("workers write to {}", sink.describe());
    println!("logs: {}", logs.display());
    let hint = format!(
        "wapipe send --url {ingress_url} --secret {app_secret} --provider {} --requests 800 --batch 20 --concurrency 8",
        pipeline.provider()
    );
    println!("send webhooks: {hint}");

    // The workers.
    let worker_env = env::worker(pipeline, &brokers, &sink);
    let worker_logs = logs.clone();
    let factory = Box::new(move |index: u32| Spec {
        name: format!("worker-{index}"),
        program: worker_binary.clone(),
        args: Vec::new(),
        env: worker_env.clone(),
        current_dir: None,
        log: worker_logs.join(format!("worker-{index}.log")),
    });
    let policy = pipeline.policy.clone();
    let initial = scale::initial_workers(&policy);
    children
        .pool
        .insert(WorkerPool::new(factory, args.grace))
        .scale_to(initial)?;

    // Running: scale on every reading, redraw on every refresh.
    let spec = &pipeline.spec;
    let mut snapshot = Snapshot {
        pipeline: pipeline.name.clone(),
        hint,
        brokers: brokers.clone(),
        ingress_url,
        workers_desired: initial,
        workers_min: scale::initial_workers(&policy),
        workers_max: policy.max_replicas.min(spec.topic.partitions.max(1) as u32),
        reason: "Starting".into(),
        ..Snapshot::default()
    };
    let mut reader = Reader::spawn(
        pipeline.poll_interval,
        Watched {
            kafka,
            topic: spec.topic.name.clone(),
            dead_letter_topic: spec.dead_letter_topic.name.clone(),
            group: pipeline.consumer_group.clone(),
        },
    );
    let mut state = PolicyState::default();
    let mut screen = Screen::new(!args.no_tui && std::io::stdout().is_terminal());
    let mut refresh = tokio::time::interval(args.refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", args.admin_port);
    let mut previous: Option<IngressCounters> = None;
    let started = Instant::now();
    loop {
        tokio::select! {
            Some(reading) = reader.readings.recv() => {
                let pool = children.pool.as_mut().context("the worker pool is gone")?;
                if let Some(change) = scale::apply(&policy, &mut state, pool, reading, &mut snapshot)? {
                    screen.notice(&change);
                }
            }
            _ = refresh.tick() => {
                check_children(children)?;
                if let Some(text) = scrape(&client, &metrics_url).await {
                    let counters = IngressCounters::parse(&text, Instant::now());
                    if let Some(previous) = &previous {
                        (snapshot.requests_per_sec, snapshot.events_per_sec) =
                            counters.rates_since(previous);
                    }
                    snapshot.requests_total = counters.requests as u64;
                    snapshot.failed_requests_total = counters.failed_requests as u64;
                    snapshot.events_total = counters.events as u64;
                    previous = Some(counters);
                }
                snapshot.uptime_secs = started.elapsed().as_secs();
                let pool = children.pool.as_ref().context("the worker pool is gone")?;
                snapshot.workers_current = pool.current();
                snapshot.workers_stopping = pool.stopping();
                snapshot.worker_restarts = pool.restarts;
                snapshot.pids = Pids {
                    broker: children.broker.as_ref().map(Managed::pid),
                    ingress: children.ingress.as_ref().map(Managed::pid),
                    workers: pool.pids(),
                };
                let _ = view::write_status(state_dir, &snapshot);
                screen.show(&snapshot);
            }
        }
    }
}

fn print_pipeline(pipeline: &LocalPipeline) {
    println!(
        "pipeline {} (group {}, {} partitions, {} to {} workers, {} lag per worker, poll {}, scale-down window {})",
        pipeline.name,
        pipeline.consumer_group,
        pipeline.spec.topic.partitions,
        pipeline.policy.min_replicas,
        pipeline
            .policy
            .max_replicas
            .min(pipeline.spec.topic.partitions.max(1) as u32),
        pipeline.policy.lag_per_replica,
        humantime::format_duration(pipeline.poll_interval),
        humantime::format_duration(pipeline.policy.scale_down_window),
    );
    for note in &pipeline.notes {
        println!("local mode: {note}");
    }
}

/// Fails when the broker or the ingress has exited; starts a worker that exited again.
fn check_children(children: &mut Children) -> anyhow::Result<()> {
    if let Some(broker) = children.broker.as_mut() {
        if let Some(status) = broker.exited() {
            bail!(
                "the broker exited ({status}); last lines of its log:\n{}",
                broker.log_tail(20)
            );
        }
    }
    let ingress = children.ingress.as_mut().context("the ingress is gone")?;
    if let Some(status) = ingress.exited() {
        bail!(
            "the ingress exited ({status}); last lines of its log:\n{}",
            ingress.log_tail(20)
        );
    }
    let pool = children.pool.as_mut().context("the worker pool is gone")?;
    for notice in pool.restart_exited()? {
        eprintln!("{notice}");
    }
    Ok(())
}

async fn scrape(client: &reqwest::Client, url: &str) -> Option<String> {
    client.get(url).send().await.ok()?.text().await.ok()
}

/// Waits for `/readyz` on the ingress's admin port.
async fn wait_for_ingress(
    client: &reqwest::Client,
    admin_port: u16,
    ingress: &mut Managed,
) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{admin_port}/readyz");
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
