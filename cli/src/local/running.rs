//! A pipeline running on this machine, for `wapipe up`: [`start`] brings up the broker, the
//! topics, the ingress and the first workers in order; [`Running::run`] then scales the worker
//! pool on each reading of the offsets and redraws the view on each refresh, until a child it
//! cannot do without fails. What was started is held in [`Children`], which stops it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use wapipe_operator::kafka::{KafkaConnection, RdKafkaAdmin};
use wapipe_operator::scaler::policy::{PolicyConfig, PolicyState};

use crate::local::args::UpArgs;
use crate::local::broker;
use crate::local::env::{self, IngressEnv, Origin, SinkChoice};
use crate::local::host::{self, Children};
use crate::local::metrics::IngressCounters;
use crate::local::pipeline::LocalPipeline;
use crate::local::process::{Managed, Spec, WorkerPool};
use crate::local::scale::{self, Reader, Reading, Watched};
use crate::local::view::{self, Pids, Screen, Snapshot};
use crate::topics::ensure_topic;

/// Starts everything in order (broker, topics, ingress, workers) and returns the running
/// pipeline; what is started is in `children`, which stops it.
pub async fn start(
    args: &UpArgs,
    pipeline: &LocalPipeline,
    state_dir: &Path,
    children: &mut Children,
) -> anyhow::Result<Running> {
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
    let kafka = KafkaConnection::plaintext(brokers.clone());
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

    let spec = &pipeline.spec;
    let snapshot = Snapshot {
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
    let reader = Reader::spawn(
        pipeline.poll_interval,
        Watched {
            kafka,
            topic: spec.topic.name.clone(),
            dead_letter_topic: spec.dead_letter_topic.name.clone(),
            group: pipeline.consumer_group.clone(),
        },
    );
    Ok(Running {
        client,
        policy,
        state: PolicyState::default(),
        reader,
        snapshot,
        screen: Screen::new(!args.no_tui && std::io::stdout().is_terminal()),
        metrics_url: format!("http://127.0.0.1:{}/metrics", args.admin_port),
        previous: None,
        started: Instant::now(),
        state_dir: state_dir.to_path_buf(),
    })
}

/// A pipeline started by [`start`]: the scaler's state and the view.
pub struct Running {
    client: reqwest::Client,
    policy: PolicyConfig,
    state: PolicyState,
    reader: Reader,
    snapshot: Snapshot,
    screen: Screen,
    metrics_url: String,
    previous: Option<IngressCounters>,
    started: Instant,
    state_dir: PathBuf,
}

impl Running {
    /// Keeps the pipeline running until a child it cannot do without fails: scales on each
    /// reading of the offsets and redraws the view every `refresh`.
    pub async fn run(mut self, children: &mut Children, refresh: Duration) -> anyhow::Result<()> {
        let mut refresh = tokio::time::interval(refresh);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(reading) = self.reader.readings.recv() => self.scale(children, reading)?,
                _ = refresh.tick() => self.tick(children).await?,
            }
        }
    }

    /// One reading of the offsets: the worker pool sized by the operator's policy.
    fn scale(&mut self, children: &mut Children, reading: Reading) -> anyhow::Result<()> {
        let pool = children.pool.as_mut().context("the worker pool is gone")?;
        if let Some(change) = scale::apply(
            &self.policy,
            &mut self.state,
            pool,
            reading,
            &mut self.snapshot,
        )? {
            self.screen.notice(&change);
        }
        Ok(())
    }

    /// One refresh: children checked (a worker that exited is started again), the ingress's
    /// counters read, status.json written and the view redrawn.
    async fn tick(&mut self, children: &mut Children) -> anyhow::Result<()> {
        check_children(children)?;
        let snapshot = &mut self.snapshot;
        if let Some(text) = scrape(&self.client, &self.metrics_url).await {
            let counters = IngressCounters::parse(&text, Instant::now());
            if let Some(previous) = &self.previous {
                (snapshot.requests_per_sec, snapshot.events_per_sec) =
                    counters.rates_since(previous);
            }
            snapshot.requests_total = counters.requests as u64;
            snapshot.failed_requests_total = counters.failed_requests as u64;
            snapshot.events_total = counters.events as u64;
            self.previous = Some(counters);
        }
        snapshot.uptime_secs = self.started.elapsed().as_secs();
        let pool = children.pool.as_ref().context("the worker pool is gone")?;
        snapshot.workers_current = pool.current();
        snapshot.workers_stopping = pool.stopping();
        snapshot.worker_restarts = pool.restarts;
        snapshot.pids = Pids {
            broker: children.broker.as_ref().map(Managed::pid),
            ingress: children.ingress.as_ref().map(Managed::pid),
            workers: pool.pids(),
        };
        let _ = view::write_status(&self.state_dir, snapshot);
        self.screen.show(snapshot);
        Ok(())
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
