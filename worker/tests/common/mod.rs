//! Shared helpers of the worker's integration tests: a broker, a PostgreSQL schema per test,
//! records shaped like the ingress produces them, and a TCP proxy that can cut the database.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use wapipe_core::kafka::KafkaArgs;
use wapipe_core::record::{
    HEADER_BODY_SHA256, HEADER_EVENT_INDEX, HEADER_KIND, HEADER_MESSAGE_ID, HEADER_PROVIDER,
    HEADER_RECEIVED_AT, HEADER_STATUS,
};
use wapipe_worker::route::Event;
use wapipe_worker::sink::{HttpSink, SharedSink, Sink};
use wapipe_worker::{Spawned, Worker, WorkerSettings};

/// Serves `app` on a free loopback port, in the background; returns its address.
pub async fn serve_http(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// An HTTP sink posting to `/events` at `address`.
pub fn http_sink(address: SocketAddr) -> HttpSink {
    HttpSink::new(&format!("http://{address}/events"), Duration::from_secs(5)).unwrap()
}

/// The `Idempotency-Key` of a request to an HTTP sink's service (empty where it has none).
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The PostgreSQL the tests use: 127.0.0.1, port `WAPIPE_TEST_POSTGRES_PORT` (default 5432,
/// where scripts/postgres.sh puts it), user postgres, database test.
pub fn postgres_port() -> u16 {
    std::env::var("WAPIPE_TEST_POSTGRES_PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(5432)
}

/// The tests' PostgreSQL as a libpq keyword string.
pub fn database() -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname=test",
        postgres_port()
    )
}

/// The tests' PostgreSQL, reached on `port` (a proxy's, or [`postgres_port`]).
pub fn database_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/test")
}

/// The tests' PostgreSQL's address, for a proxy in front of it.
pub fn postgres_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], postgres_port()))
}

/// A broker for this test, its topic and dead-letter topic, and a group of its own.
pub struct Setup {
    pub brokers: String,
    pub topic: String,
    pub dead_letter_topic: String,
    pub group: String,
    pub schema: String,
    _kafka: Option<wapipe_testkit::Kafka>,
}

impl Setup {
    pub async fn new(name: &str, partitions: i32) -> Setup {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "wapipe_worker=info".into()),
            )
            .try_init();
        let (brokers, kafka) = wapipe_testkit::broker().expect("a Kafka broker for the test");
        let topic = wapipe_testkit::unique_name(&format!("{name}-raw"));
        let dead_letter_topic = wapipe_testkit::unique_name(&format!("{name}-dlq"));
        wapipe_testkit::create_topic(&brokers, &topic, partitions)
            .await
            .expect("creating the raw topic");
        wapipe_testkit::create_topic(&brokers, &dead_letter_topic, 1)
            .await
            .expect("creating the dead-letter topic");
        let schema = wapipe_testkit::unique_name(name)
            .replace('-', "_")
            .to_lowercase();
        Setup {
            group: wapipe_testkit::unique_name(&format!("{name}-group")),
            brokers,
            topic,
            dead_letter_topic,
            schema,
            _kafka: kafka,
        }
    }

    pub fn kafka(&self) -> KafkaArgs {
        KafkaArgs::plaintext(self.brokers.clone())
    }

    pub fn settings(&self) -> WorkerSettings {
        WorkerSettings {
            concurrency: 8,
            retry_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(300),
            drain_timeout: Duration::from_secs(10),
            ..WorkerSettings::new(
                self.kafka(),
                &self.topic,
                &self.dead_letter_topic,
                &self.group,
            )
        }
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .expect("creating a producer")
    }

    /// Connects to PostgreSQL with this test's schema first on the search path.
    pub async fn database(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(&database(), NoTls)
            .await
            .expect("the tests' PostgreSQL (WAPIPE_TEST_POSTGRES_PORT, default 5432)");
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {0}; SET search_path TO {0}",
                self.schema
            ))
            .await
            .expect("creating the test schema");
        client
    }

    /// High watermarks summed over the dead-letter topic: how many dead letters exist.
    /// A PostgreSQL sink into this test's schema that reaches the database through a proxy the
    /// test can cut, freeze and restore.
    pub async fn postgres_through_proxy(
        &self,
    ) -> (CuttableProxy, wapipe_worker::sink::PostgresSink) {
        let proxy = CuttableProxy::start(postgres_address()).await;
        let sink = wapipe_worker::sink::PostgresSink::connect(
            &database_url(proxy.port),
            Some(self.schema.clone()),
        )
        .await
        .expect("postgres sink through the proxy");
        (proxy, sink)
    }

    pub fn dead_letter_count(&self) -> i64 {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("creating a consumer");
        let (low, high) = consumer
            .fetch_watermarks(&self.dead_letter_topic, 0, Duration::from_secs(10))
            .expect("dead-letter watermarks");
        high - low
    }
}

pub use wapipe_core::time::now_ms;

/// A Meta text message from `user` as the ingress produces it.
pub fn message_value(user: &str, wamid: &str, text: &str) -> Vec<u8> {
    meta_messages_record(json!({
        "contacts": [{"wa_id": user, "profile": {"name": "Test User"}}],
        "messages": [{"from": user, "id": wamid, "timestamp": "1700000000",
            "type": "text", "text": {"body": text}}]
    }))
}

/// A Meta status of `wamid` sent to `user`.
pub fn status_value(user: &str, wamid: &str, status: &str) -> Vec<u8> {
    meta_messages_record(json!({
        "statuses": [{"id": wamid, "status": status, "timestamp": "1700000001",
            "recipient_id": user}]
    }))
}

/// One record of a Meta `messages` change whose `value` holds the metadata and `fields`.
fn meta_messages_record(fields: serde_json::Value) -> Vec<u8> {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": "pn-1"},
    });
    for (name, field) in fields.as_object().into_iter().flatten() {
        value[name] = field.clone();
    }
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "waba-1", "changes": [{"field": "messages", "value": value}]}]
    }))
    .unwrap()
}

pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    kind: &str,
    message_id: Option<&str>,
    status: Option<&str>,
) {
    produce_at(producer, topic, None, key, value, kind, message_id, status).await
}

/// [`produce`] into a chosen partition (`None`: the key's).
#[allow(clippy::too_many_arguments)]
pub async fn produce_at(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    value: &[u8],
    kind: &str,
    message_id: Option<&str>,
    status: Option<&str>,
) {
    let received_at = now_ms().to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: HEADER_PROVIDER,
            value: Some("meta"),
        })
        .insert(Header {
            key: HEADER_RECEIVED_AT,
            value: Some(&received_at),
        })
        .insert(Header {
            key: HEADER_KIND,
            value: Some(kind),
        })
        .insert(Header {
            key: HEADER_BODY_SHA256,
            value: Some("00"),
        })
        .insert(Header {
            key: HEADER_EVENT_INDEX,
            value: Some("0"),
        });
    if let Some(id) = message_id {
        headers = headers.insert(Header {
            key: HEADER_MESSAGE_ID,
            value: Some(id),
        });
    }
    if let Some(status) = status {
        headers = headers.insert(Header {
            key: HEADER_STATUS,
            value: Some(status),
        });
    }
    let mut record = FutureRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(headers);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("producing a test record");
}

/// [`produce`] of a record with neither a message id nor a status (a field event, a body the
/// worker cannot read).
pub async fn produce_other(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &[u8],
    kind: &str,
) {
    produce(producer, topic, key, value, kind, None, None).await
}

/// Produces a Meta text message `text`, `wamid`, from `user`.
pub async fn produce_text(
    producer: &FutureProducer,
    topic: &str,
    user: &str,
    wamid: &str,
    text: &str,
) {
    let value = message_value(user, wamid, text);
    produce(producer, topic, user, &value, "message", Some(wamid), None).await;
}

/// Produces a Meta text message `wamid` from `user`, its text `text of <wamid>`.
pub async fn produce_message(producer: &FutureProducer, topic: &str, user: &str, wamid: &str) {
    produce_text(producer, topic, user, wamid, &format!("text of {wamid}")).await;
}

/// Produces `count` messages, wamids `<wamid_prefix>.<n>`, from `users` users
/// `<phone_prefix><n % users>`.
pub async fn produce_messages(
    producer: &FutureProducer,
    topic: &str,
    phone_prefix: &str,
    users: usize,
    wamid_prefix: &str,
    count: usize,
) {
    for n in 0..count {
        let user = format!("{phone_prefix}{}", n % users);
        produce_message(producer, topic, &user, &format!("{wamid_prefix}.{n}")).await;
    }
}

/// Waits until `wapipe_messages` holds `rows` rows.
pub async fn wait_for_rows(db: &Client, rows: i64, what: &str) {
    eventually(what, || async {
        count(db, "SELECT count(*) FROM wapipe_messages").await == rows
    })
    .await;
}

/// Polls `check` until it holds; panics with `what` after a generous bound (never a timing
/// assertion: only a guard against hanging forever).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .map(|row| row.get::<_, i64>(0))
        .unwrap_or(-1)
}

/// A TCP proxy in front of PostgreSQL that the test can cut (every connection dropped and new
/// ones refused) or freeze, and restore, without touching the shared server.
pub struct CuttableProxy {
    pub port: u16,
    state: Arc<ProxyState>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    cut: AtomicBool,
    frozen: AtomicBool,
    /// Cancelled by `freeze`: the connections forwarding until then stop forwarding.
    freeze: Mutex<CancellationToken>,
}

impl CuttableProxy {
    pub async fn start(target: SocketAddr) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState::default());
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (state2, connections2) = (state.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if state2.cut.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let frozen = state2.frozen.load(Ordering::SeqCst);
                let freeze = state2.freeze.lock().unwrap().clone();
                let task = tokio::spawn(async move {
                    if frozen {
                        let _held = inbound;
                        return std::future::pending().await;
                    }
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = freeze.cancelled() => {
                            // Both sockets stay open and nothing passes: half-open.
                            let _held = (inbound, outbound);
                            std::future::pending::<()>().await
                        }
                    }
                });
                connections2.lock().unwrap().push(task);
            }
        });
        CuttableProxy {
            port,
            state,
            connections,
            accept,
        }
    }

    /// Drops every connection and refuses new ones: the client sees the loss at once.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// What a failover leaves behind when the old server vanishes without a reset: open
    /// connections stay open but nothing passes either way any more, and new ones are accepted
    /// and then hear nothing. Stays so for these connections after `restore`; only the client
    /// giving them up (or TCP keepalive, hours later) ends them.
    pub fn freeze(&self) {
        self.state.frozen.store(true, Ordering::SeqCst);
        let mut freeze = self.state.freeze.lock().unwrap();
        freeze.cancel();
        *freeze = CancellationToken::new();
    }

    /// New connections reach the server again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        self.state.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The wamids of `user`'s messages in the order the worker wrote them.
pub async fn wamids_in_write_order(client: &Client, user: &str) -> Vec<String> {
    client
        .query(
            "SELECT wamid FROM wapipe_messages WHERE user_key = $1 ORDER BY seq",
            &[&user],
        )
        .await
        .expect("reading the messages of a user")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A worker running in this process until [`Running::stop`].
pub struct Running(Spawned);

impl std::ops::Deref for Running {
    type Target = Spawned;

    fn deref(&self) -> &Spawned {
        &self.0
    }
}

impl Running {
    /// Waits until the worker's readiness is `ready`.
    pub async fn wait_ready(&self, ready: bool) {
        let what = if ready {
            "the worker ready"
        } else {
            "the worker not ready"
        };
        eventually(what, || {
            let health = self.worker.health.clone();
            async move { health.is_ready() == ready }
        })
        .await;
    }

    /// Waits until the number of events the worker finished is `done`.
    pub async fn wait_finished(&self, what: &str, done: impl Fn(u64) -> bool) {
        eventually(what, || {
            std::future::ready(done(self.worker.metrics.finished_events()))
        })
        .await;
    }

    pub async fn stop(self) {
        self.0.stop().await.expect("worker run");
    }
}

pub fn start(settings: WorkerSettings, sink: SharedSink) -> Running {
    Running(Worker::spawn(settings, sink))
}

/// A sink that records the order of writes per user, how many writes overlapped and how many
/// there were.
#[derive(Default)]
pub struct RecordingSink {
    pub order: Mutex<HashMap<String, Vec<String>>>,
    running: AtomicUsize,
    pub most_running: AtomicUsize,
    pub writes: AtomicUsize,
}

impl RecordingSink {
    /// Waits until the sink has taken at least `writes` writes.
    pub async fn wait_writes(&self, what: &str, writes: usize) {
        eventually(what, || {
            std::future::ready(self.writes.load(Ordering::SeqCst) >= writes)
        })
        .await;
    }
}

#[async_trait::async_trait]
impl Sink for RecordingSink {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn write_batch(&self, events: &[Event]) -> wapipe_worker::Result<()> {
        for event in events {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_running.fetch_max(now, Ordering::SeqCst);
            // Uneven write times, so that a scheduler that reorders would show it.
            let spread = event.id.bytes().map(u64::from).sum::<u64>() % 7;
            tokio::time::sleep(Duration::from_millis(spread)).await;
            self.order
                .lock()
                .unwrap()
                .entry(event.user_key.clone())
                .or_default()
                .push(event.id.clone());
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}
