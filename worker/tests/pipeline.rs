//! The worker on a real broker and a real PostgreSQL, run in-process.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use tokio_util::sync::CancellationToken;
use wapipe_worker::error::{Error, Result};
use wapipe_worker::replay::{self, DeadLetterFilter};
use wapipe_worker::route::Event;
use wapipe_worker::sink::{HttpSink, PostgresSink, SharedSink, Sink};
use wapipe_worker::{Worker, WorkerSettings};

/// Records the order of writes per user and how many writes overlapped.
#[derive(Default)]
struct RecordingSink {
    order: Mutex<HashMap<String, Vec<String>>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
    writes: AtomicUsize,
}

#[async_trait::async_trait]
impl Sink for RecordingSink {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn write(&self, event: &Event) -> Result<()> {
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
        Ok(())
    }
}

struct Running {
    worker: Arc<Worker>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("worker task").expect("worker run");
    }
}

fn start(settings: WorkerSettings, sink: SharedSink) -> Running {
    let worker = Arc::new(Worker::new());
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (worker, stop) = (worker.clone(), stop.clone());
        async move { worker.run(settings, sink, stop).await }
    });
    Running { worker, stop, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_of_one_user_are_written_in_order_while_users_of_one_partition_run_concurrently() {
    let setup = Setup::new("order", 1).await;
    let producer = setup.producer();
    let users: Vec<String> = (0..6).map(|u| format!("1555000{u}")).collect();
    for n in 0..40 {
        for user in &users {
            produce_message(
                &producer,
                &setup.topic,
                user,
                &format!("wamid.{user}.{n:03}"),
            )
            .await;
        }
    }
    let sink = Arc::new(RecordingSink::default());
    // A small buffer makes the worker pause and resume fetching many times along the way.
    let settings = WorkerSettings {
        max_buffered: 20,
        ..setup.settings()
    };
    let running = start(settings, sink.clone());
    eventually("all 240 events written", || {
        let sink = sink.clone();
        async move { sink.writes.load(Ordering::SeqCst) >= 240 }
    })
    .await;
    running.stop().await;

    let order = sink.order.lock().unwrap();
    for user in &users {
        let expected: Vec<String> = (0..40).map(|n| format!("wamid.{user}.{n:03}")).collect();
        assert_eq!(order[user], expected, "events of {user} out of order");
    }
    // One partition, yet several users were written at the same time.
    assert!(sink.most_running.load(Ordering::SeqCst) > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statuses_never_regress_and_duplicates_leave_one_row_in_postgres() {
    let setup = Setup::new("status", 2).await;
    let producer = setup.producer();
    let db = setup.database().await;
    let sink = PostgresSink::connect(&database_url(postgres_port()), Some(setup.schema.clone()))
        .await
        .expect("postgres sink");
    let user = "15550100";
    produce_message(&producer, &setup.topic, user, "wamid.in.1").await;
    produce_message(&producer, &setup.topic, user, "wamid.in.1").await;
    for status in ["sent", "read", "delivered", "read"] {
        let value = status_value(user, "wamid.out.1", status);
        produce(
            &producer,
            &setup.topic,
            user,
            &value,
            "status",
            Some("wamid.out.1"),
            Some(status),
        )
        .await;
    }
    let other_field = br#"{"object":"whatsapp_business_account","entry":[{"id":"w","time":1,"changes":[{"field":"message_template_status_update","value":{"event":"APPROVED"}}]}]}"#;
    produce(
        &producer,
        &setup.topic,
        "pn-1",
        other_field,
        "field",
        None,
        None,
    )
    .await;
    let running = start(setup.settings(), Arc::new(sink));
    eventually("7 events finished", || {
        let metrics = running.worker.metrics.clone();
        async move { metrics.finished_events() >= 7 }
    })
    .await;
    running.stop().await;

    assert_eq!(count(&db, "SELECT count(*) FROM wapipe_messages").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM wapipe_statuses").await, 3);
    assert_eq!(count(&db, "SELECT count(*) FROM wapipe_events").await, 1);
    let current: String = db
        .query_one(
            "SELECT status FROM wapipe_message_status WHERE wamid = 'wamid.out.1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, "read", "a late delivered must not overwrite read");
    let raw_kept: bool = db
        .query_one(
            "SELECT raw->'entry'->0->>'id' = 'waba-1' FROM wapipe_messages",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(raw_kept);
}

/// An HTTP service that refuses one wamid with 422 (until fixed) and counts every request.
#[derive(Default)]
struct Service {
    calls: Mutex<HashMap<String, usize>>,
    fixed: AtomicBool,
    /// While set, every request answers 503.
    down: AtomicBool,
}

async fn serve(service: Arc<Service>) -> SocketAddr {
    async fn handle(State(service): State<Arc<Service>>, headers: HeaderMap) -> StatusCode {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        *service
            .calls
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default() += 1;
        if service.down.load(Ordering::SeqCst) {
            StatusCode::SERVICE_UNAVAILABLE
        } else if key == "wamid.poison" && !service.fixed.load(Ordering::SeqCst) {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        }
    }
    let app = axum::Router::new()
        .route("/events", axum::routing::post(handle))
        .with_state(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_is_dead_lettered_after_exactly_three_attempts_and_replayed_once_fixed() {
    let setup = Setup::new("poison", 2).await;
    let producer = setup.producer();
    let service = Arc::new(Service::default());
    let addr = serve(service.clone()).await;
    let user = "15550200";
    produce_message(&producer, &setup.topic, user, "wamid.before").await;
    produce_message(&producer, &setup.topic, user, "wamid.poison").await;
    for n in 0..20 {
        produce_message(&producer, &setup.topic, user, &format!("wamid.after.{n}")).await;
        produce_message(
            &producer,
            &setup.topic,
            "15550201",
            &format!("wamid.other.{n}"),
        )
        .await;
    }
    produce(
        &producer,
        &setup.topic,
        "pn-1",
        b"\x00garbage",
        "unparsed",
        None,
        None,
    )
    .await;
    let sink = HttpSink::new(&format!("http://{addr}/events"), Duration::from_secs(5)).unwrap();
    let running = start(setup.settings(), Arc::new(sink));
    eventually("every event finished", || {
        let metrics = running.worker.metrics.clone();
        async move { metrics.finished_events() >= 43 }
    })
    .await;
    {
        let calls = service.calls.lock().unwrap();
        assert_eq!(
            calls["wamid.poison"], 3,
            "the poison event is tried exactly three times"
        );
        assert_eq!(calls["wamid.after.19"], 1);
        assert_eq!(calls["wamid.other.19"], 1);
    }
    // The poison message and the unparsable body are dead letters; nothing else is.
    eventually("two dead letters", || {
        let n = setup.dead_letter_count();
        async move { n == 2 }
    })
    .await;
    let dead = read_dead_letters(&setup).await;
    let poison = dead
        .iter()
        .find(|h| h.get("wapipe-message-id").map(String::as_str) == Some("wamid.poison"))
        .expect("the poison dead letter");
    assert_eq!(poison["wapipe-dlq-attempts"], "3");
    assert_eq!(poison["wapipe-dlq-source-topic"], setup.topic);
    assert_eq!(poison["wapipe-kind"], "message");
    assert!(poison["wapipe-dlq-error"].contains("422"));
    assert!(poison.contains_key("wapipe-dlq-first-failure-at"));

    // The bug is fixed: moving the user's dead letters back delivers the event once more.
    service.fixed.store(true, Ordering::SeqCst);
    let filter = DeadLetterFilter {
        key: Some(user.to_string()),
        ..DeadLetterFilter::default()
    };
    let summary = replay::replay_dead_letters(
        &setup.kafka(),
        &setup.dead_letter_topic,
        &setup.topic,
        &filter,
    )
    .await
    .expect("replaying dead letters");
    assert_eq!((summary.scanned, summary.replayed), (2, 1));
    eventually("the replayed event delivered", || {
        let service = service.clone();
        async move { service.calls.lock().unwrap()["wamid.poison"] == 4 }
    })
    .await;
    running.stop().await;
    assert_eq!(
        setup.dead_letter_count(),
        2,
        "the fixed event is not dead-lettered again"
    );
}

async fn read_dead_letters(setup: &Setup) -> Vec<HashMap<String, String>> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &setup.brokers)
        .set("group.id", wapipe_testkit::unique_name("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&setup.dead_letter_topic]).unwrap();
    let total = setup.dead_letter_count() as usize;
    let mut out = Vec::new();
    while out.len() < total {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("a dead letter within a minute")
            .unwrap();
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(headers);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_database_causes_no_dead_letters_and_processing_resumes_when_it_returns() {
    let setup = Setup::new("dbdown", 2).await;
    let producer = setup.producer();
    let db = setup.database().await;
    let proxy = CuttableProxy::start(postgres_address()).await;
    let sink = PostgresSink::connect(&database_url(proxy.port), Some(setup.schema.clone()))
        .await
        .expect("postgres sink through the proxy");
    let running = start(setup.settings(), Arc::new(sink));
    for n in 0..10 {
        produce_message(
            &producer,
            &setup.topic,
            &format!("1555030{}", n % 3),
            &format!("wamid.a.{n}"),
        )
        .await;
    }
    eventually("first 10 rows", || async {
        count(&db, "SELECT count(*) FROM wapipe_messages").await == 10
    })
    .await;
    assert!(running.worker.health.is_ready());

    proxy.cut();
    for n in 0..10 {
        produce_message(
            &producer,
            &setup.topic,
            &format!("1555030{}", n % 3),
            &format!("wamid.b.{n}"),
        )
        .await;
    }
    eventually("the worker reports not ready", || {
        let health = running.worker.health.clone();
        async move { !health.is_ready() }
    })
    .await;
    eventually("several sink retries", || {
        let metrics = running.worker.metrics.clone();
        async move {
            metrics
                .encode()
                .contains("wapipe_worker_retries_total{reason=\"sink\"}")
        }
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM wapipe_messages").await, 10);
    assert_eq!(
        setup.dead_letter_count(),
        0,
        "an unavailable sink is not the events' fault"
    );
    // The consumer loop keeps turning while the sink is retried: liveness stays fresh, so a
    // database outage fails readiness only and never gets the pod restarted.
    for _ in 0..20 {
        let since = running.worker.health.since_last_poll();
        assert!(
            since < Duration::from_secs(1),
            "the consumer loop stood still for {since:?} during the outage"
        );
        assert!(running.worker.health.liveness().is_ok());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    proxy.restore();
    eventually("all 20 rows after the database returned", || async {
        count(&db, "SELECT count(*) FROM wapipe_messages").await == 20
    })
    .await;
    eventually("ready again", || {
        let health = running.worker.health.clone();
        async move { health.is_ready() }
    })
    .await;
    running.stop().await;
    assert_eq!(setup.dead_letter_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_connections_left_by_a_failover_are_replaced_and_nothing_is_dead_lettered() {
    // After a failover the old connections hang instead of failing: a write that timed out on
    // one must not leave it in use, or every later write on it times out too.
    let setup = Setup::new("halfopen", 2).await;
    let producer = setup.producer();
    let db = setup.database().await;
    let proxy = CuttableProxy::start(postgres_address()).await;
    let sink = PostgresSink::connect(&database_url(proxy.port), Some(setup.schema.clone()))
        .await
        .expect("postgres sink through the proxy");
    let settings = WorkerSettings {
        sink_timeout: Duration::from_secs(2),
        ..setup.settings()
    };
    let running = start(settings, Arc::new(sink));
    for n in 0..10 {
        produce_message(
            &producer,
            &setup.topic,
            &format!("1555031{}", n % 3),
            &format!("wamid.a.{n}"),
        )
        .await;
    }
    eventually("first 10 rows", || async {
        count(&db, "SELECT count(*) FROM wapipe_messages").await == 10
    })
    .await;

    proxy.freeze();
    for n in 0..10 {
        produce_message(
            &producer,
            &setup.topic,
            &format!("1555031{}", n % 3),
            &format!("wamid.b.{n}"),
        )
        .await;
    }
    eventually("the worker reports not ready", || {
        let health = running.worker.health.clone();
        async move { !health.is_ready() }
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM wapipe_messages").await, 10);

    proxy.restore();
    eventually("all 20 rows after the failover", || async {
        count(&db, "SELECT count(*) FROM wapipe_messages").await == 20
    })
    .await;
    eventually("ready again", || {
        let health = running.worker.health.clone();
        async move { health.is_ready() }
    })
    .await;
    running.stop().await;
    assert_eq!(setup.dead_letter_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_split_the_partitions_and_survive_a_rebalance_with_nothing_lost() {
    let setup = Setup::new("rebalance", 4).await;
    let producer = setup.producer();
    let db = setup.database().await;
    let sink = || async {
        Arc::new(
            PostgresSink::connect(&database_url(postgres_port()), Some(setup.schema.clone()))
                .await
                .expect("postgres sink"),
        ) as SharedSink
    };
    let users: Vec<String> = (0..12).map(|u| format!("155504{u:02}")).collect();
    let mut produced = 0;
    let mut produce_round = |round: usize| {
        let producer = producer.clone();
        let users = users.clone();
        let topic = setup.topic.clone();
        produced += users.len() * 10;
        async move {
            for n in 0..10 {
                for user in &users {
                    produce_message(
                        &producer,
                        &topic,
                        user,
                        &format!("wamid.{user}.{round}.{n}"),
                    )
                    .await;
                }
            }
        }
    };
    produce_round(0).await;
    let first = start(setup.settings(), sink().await);
    eventually("the first worker makes progress", || async {
        count(&db, "SELECT count(*) FROM wapipe_messages").await > 0
    })
    .await;
    let second = start(setup.settings(), sink().await);
    produce_round(1).await;
    eventually("both workers own partitions", || {
        let (a, b) = (first.worker.metrics.clone(), second.worker.metrics.clone());
        async move { a.assigned_partitions.get() > 0 && b.assigned_partitions.get() > 0 }
    })
    .await;
    assert_eq!(
        first.worker.metrics.assigned_partitions.get()
            + second.worker.metrics.assigned_partitions.get(),
        4
    );
    // The first worker leaves: its partitions move to the second one.
    first.stop().await;
    produce_round(2).await;
    let expected = produced as i64;
    eventually("every event in PostgreSQL", || async {
        count(&db, "SELECT count(*) FROM wapipe_messages").await == expected
    })
    .await;
    eventually("the second worker owns every partition", || {
        let m = second.worker.metrics.clone();
        async move { m.assigned_partitions.get() == 4 }
    })
    .await;
    second.stop().await;
    // Per user, rows were written in the order produced.
    for user in &users {
        let got = wamids_in_write_order(&db, user).await;
        let want: Vec<String> = (0..3)
            .flat_map(|round| (0..10).map(move |n| format!("wamid.{user}.{round}.{n}")))
            .collect();
        assert_eq!(got, want, "order of {user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_from_a_timestamp_rewinds_the_group_and_is_refused_while_it_has_members() {
    let setup = Setup::new("rewind", 2).await;
    let producer = setup.producer();
    let before = now_ms() - 1000;
    for n in 0..10 {
        produce_message(
            &producer,
            &setup.topic,
            &format!("1555050{}", n % 2),
            &format!("wamid.{n}"),
        )
        .await;
    }
    let sink = Arc::new(RecordingSink::default());
    let running = start(setup.settings(), sink.clone());
    eventually("10 written", || {
        let sink = sink.clone();
        async move { sink.writes.load(Ordering::SeqCst) >= 10 }
    })
    .await;
    // Refused while the group is active, naming how many members it has.
    let refused =
        replay::reset_offsets_to_time(&setup.kafka(), &setup.topic, &setup.group, before, false);
    assert!(
        matches!(refused, Err(Error::GroupActive { members: 1, .. })),
        "{refused:?}"
    );
    // --force does not take a live group's offsets either (Kafka refuses a commit from outside
    // the group's generation); the error says to stop the workers.
    let forced =
        replay::reset_offsets_to_time(&setup.kafka(), &setup.topic, &setup.group, before, true);
    match forced {
        Err(error @ Error::GroupActive { members: 1, .. }) => {
            assert!(error.to_string().contains("stop the workers"), "{error}")
        }
        other => panic!("a forced reset of a live group: {other:?}"),
    }
    running.stop().await;

    let mut offsets = None;
    eventually("the group to empty and the reset to pass", || {
        let kafka = setup.kafka();
        let result =
            replay::reset_offsets_to_time(&kafka, &setup.topic, &setup.group, before, false);
        let ok = result.is_ok();
        if let Ok(o) = result {
            offsets = Some(o);
        }
        async move { ok }
    })
    .await;
    assert!(offsets.unwrap().iter().all(|(_, offset)| *offset == 0));
    let running = start(setup.settings(), sink.clone());
    eventually("the 10 events written again", || {
        let sink = sink.clone();
        async move { sink.writes.load(Ordering::SeqCst) >= 20 }
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_answering_503_is_waited_out_without_dead_letters() {
    let setup = Setup::new("http503", 1).await;
    let producer = setup.producer();
    let service = Arc::new(Service::default());
    service.down.store(true, Ordering::SeqCst);
    let addr = serve(service.clone()).await;
    for n in 0..5 {
        produce_message(
            &producer,
            &setup.topic,
            "15550600",
            &format!("wamid.down.{n}"),
        )
        .await;
    }
    let sink = HttpSink::new(&format!("http://{addr}/events"), Duration::from_secs(5)).unwrap();
    let running = start(setup.settings(), Arc::new(sink));
    // Far more failed requests than --max-attempts, yet no dead letter.
    eventually("the first event tried more than three times", || {
        let service = service.clone();
        async move {
            service
                .calls
                .lock()
                .unwrap()
                .get("wamid.down.0")
                .copied()
                .unwrap_or(0)
                > 5
        }
    })
    .await;
    assert!(!running.worker.health.is_ready());
    assert_eq!(running.worker.metrics.finished_events(), 0);
    service.down.store(false, Ordering::SeqCst);
    eventually("all five delivered once the service is back", || {
        let metrics = running.worker.metrics.clone();
        async move { metrics.finished_events() == 5 }
    })
    .await;
    running.stop().await;
    assert_eq!(setup.dead_letter_count(), 0);
    // Order held while waiting: events after the first were not sent before it succeeded.
    assert_eq!(service.calls.lock().unwrap()["wamid.down.4"], 1);
}

/// An HTTP service that, while `redirecting` is set, answers every POST to /events with a 302
/// to /moved, where a GET answers 200: what a moved or misconfigured endpoint looks like.
#[derive(Default)]
struct RedirectingService {
    redirecting: AtomicBool,
    posts: AtomicUsize,
    gets_of_moved: AtomicUsize,
    delivered: Mutex<Vec<String>>,
}

async fn serve_redirecting(service: Arc<RedirectingService>) -> SocketAddr {
    async fn post(
        State(service): State<Arc<RedirectingService>>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        service.posts.fetch_add(1, Ordering::SeqCst);
        if service.redirecting.load(Ordering::SeqCst) {
            return (StatusCode::FOUND, [("location", "/moved")]).into_response();
        }
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        service.delivered.lock().unwrap().push(key);
        StatusCode::OK.into_response()
    }
    async fn moved(State(service): State<Arc<RedirectingService>>) -> StatusCode {
        service.gets_of_moved.fetch_add(1, Ordering::SeqCst);
        StatusCode::OK
    }
    let app = axum::Router::new()
        .route("/events", axum::routing::post(post))
        .route("/moved", axum::routing::get(moved))
        .with_state(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirected_post_is_not_written_but_waited_out_until_the_url_itself_answers() {
    // Following a 302 turns the POST into a bodiless GET; a 200 on that GET must not count as
    // the event written, or the event is lost.
    let setup = Setup::new("http302", 1).await;
    let producer = setup.producer();
    let service = Arc::new(RedirectingService::default());
    service.redirecting.store(true, Ordering::SeqCst);
    let addr = serve_redirecting(service.clone()).await;
    produce_message(&producer, &setup.topic, "15550650", "wamid.redirected").await;
    let sink = HttpSink::new(&format!("http://{addr}/events"), Duration::from_secs(5)).unwrap();
    let running = start(setup.settings(), Arc::new(sink));
    eventually(
        "more POSTs than --max-attempts, or the event finished",
        || {
            let (service, metrics) = (service.clone(), running.worker.metrics.clone());
            async move { service.posts.load(Ordering::SeqCst) > 5 || metrics.finished_events() > 0 }
        },
    )
    .await;
    assert_eq!(
        running.worker.metrics.finished_events(),
        0,
        "a redirected POST counted as written (GETs of the redirect target: {})",
        service.gets_of_moved.load(Ordering::SeqCst)
    );
    assert_eq!(service.gets_of_moved.load(Ordering::SeqCst), 0);
    assert!(!running.worker.health.is_ready());
    assert_eq!(
        setup.dead_letter_count(),
        0,
        "a redirect is the sink's fault"
    );

    service.redirecting.store(false, Ordering::SeqCst);
    eventually("the event delivered once /events answers 200", || {
        let metrics = running.worker.metrics.clone();
        async move { metrics.finished_events() == 1 }
    })
    .await;
    running.stop().await;
    assert_eq!(*service.delivered.lock().unwrap(), ["wamid.redirected"]);
    assert_eq!(setup.dead_letter_count(), 0);
}

/// A sink that is down while its gate is closed (every write fails as an outage, so the worker
/// waits and retries) and writes instantly when it is open; it remembers every id written.
#[derive(Default)]
struct GatedSink {
    closed: AtomicBool,
    refused: AtomicUsize,
    written: Mutex<std::collections::HashSet<String>>,
}

impl GatedSink {
    fn written(&self) -> usize {
        self.written.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Sink for GatedSink {
    fn name(&self) -> &'static str {
        "gated"
    }

    async fn write(&self, event: &Event) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Err(Error::SinkUnavailable {
                sink: "gated",
                reason: "gate closed".into(),
            });
        }
        self.written.lock().unwrap().insert(event.id.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_partitions_keep_flowing_after_a_worker_joins_and_leaves_and_the_buffer_stays_bounded(
) {
    // Fetching pauses while the buffer is full. librdkafka keeps an application's pause on a
    // partition across revoke and re-assign, so a worker must set the fetch state of every
    // partition it is assigned: paused while full (or the backlog is buffered without bound),
    // flowing otherwise (or a partition that was paused under an earlier ownership never
    // flows again).
    let setup = Setup::new("pause", 4).await;
    let producer = setup.producer();
    let produce_round = |round: &'static str, per_user: usize| {
        let (producer, topic) = (producer.clone(), setup.topic.clone());
        async move {
            for n in 0..per_user {
                for u in 0..40 {
                    let user = format!("15551{u:03}");
                    let wamid = format!("wamid.{round}.{user}.{n:03}");
                    produce_message(&producer, &topic, &user, &wamid).await;
                }
            }
        }
    };
    produce_round("one", 10).await;
    let sink = Arc::new(GatedSink::default());
    sink.closed.store(true, Ordering::SeqCst);
    let max_buffered = 16;
    let settings = WorkerSettings {
        max_buffered,
        concurrency: 4,
        drain_timeout: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..setup.settings()
    };

    // 1. Worker A fills its buffer against a closed sink and pauses.
    let a = start(settings.clone(), sink.clone());
    eventually("A holds a full buffer", || {
        let metrics = a.worker.metrics.clone();
        async move { metrics.buffered_events.get() >= max_buffered as i64 }
    })
    .await;

    // 2. Worker B joins while A is paused; then the sink opens and round one drains.
    let b = start(settings.clone(), sink.clone());
    eventually("B is assigned partitions", || {
        let metrics = b.worker.metrics.clone();
        async move { metrics.assigned_partitions.get() > 0 }
    })
    .await;
    sink.closed.store(false, Ordering::SeqCst);
    eventually("round one written", || {
        let sink = sink.clone();
        async move { sink.written() == 400 }
    })
    .await;

    // 3. The sink closes, round two arrives, both fill up; B leaves while A is paused.
    sink.closed.store(true, Ordering::SeqCst);
    produce_round("two", 20).await;
    eventually("A holds a full buffer again", || {
        let metrics = a.worker.metrics.clone();
        async move { metrics.buffered_events.get() >= max_buffered as i64 }
    })
    .await;
    b.stop().await;
    eventually("A is assigned every partition", || {
        let metrics = a.worker.metrics.clone();
        async move { metrics.assigned_partitions.get() == 4 }
    })
    .await;
    // A took over B's partitions while paused: they must not be fetched into the buffer.
    let mut peak = 0;
    for _ in 0..150 {
        peak = peak.max(a.worker.metrics.buffered_events.get());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        peak <= 2 * max_buffered as i64,
        "A buffered {peak} events with --max-buffered {max_buffered}"
    );

    // 4. The sink opens: every partition flows, including those paused under B or earlier.
    sink.closed.store(false, Ordering::SeqCst);
    eventually("every event of both rounds written", || {
        let sink = sink.clone();
        async move { sink.written() == 1200 }
    })
    .await;
    a.stop().await;
}

/// A sink whose first write of each id in `hang` never returns by itself (a service that took
/// the request and went quiet); it logs every write, and a hung write's abandonment (its future
/// dropped), in the order they happen.
#[derive(Default)]
struct HangingSink {
    hang: Vec<String>,
    hung: Mutex<std::collections::HashSet<String>>,
    log: Arc<Mutex<Vec<String>>>,
}

struct LogOnDrop(Arc<Mutex<Vec<String>>>, String);

impl Drop for LogOnDrop {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(std::mem::take(&mut self.1));
    }
}

#[async_trait::async_trait]
impl Sink for HangingSink {
    fn name(&self) -> &'static str {
        "hanging"
    }

    async fn write(&self, event: &Event) -> Result<()> {
        if self.hang.contains(&event.id) && self.hung.lock().unwrap().insert(event.id.clone()) {
            let _abandoned = LogOnDrop(self.log.clone(), format!("abandoned {}", event.id));
            std::future::pending::<()>().await;
        }
        self.log.lock().unwrap().push(format!("wrote {}", event.id));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_partitions_write_is_abandoned_before_the_new_owner_writes_that_key() {
    // A non-idempotent sink must never see a user's later event before an earlier one that the
    // old owner was still writing: the hand-over completes only once the revoked partition's
    // writes have finished or been abandoned.
    let setup = Setup::new("handover", 2).await;
    let producer = setup.producer();
    for partition in 0..2 {
        let user = format!("1555070{partition}");
        for n in 0..2 {
            let wamid = format!("wamid.{partition}.{n}");
            let value = message_value(&user, &wamid, "hello");
            produce_at(
                &producer,
                &setup.topic,
                Some(partition),
                &user,
                &value,
                "message",
                Some(&wamid),
                None,
            )
            .await;
        }
    }
    let sink = Arc::new(HangingSink {
        hang: vec!["wamid.0.0".into(), "wamid.1.0".into()],
        ..HangingSink::default()
    });
    let settings = WorkerSettings {
        drain_timeout: Duration::from_secs(1),
        sink_timeout: Duration::from_secs(600),
        ..setup.settings()
    };
    let a = start(settings.clone(), sink.clone());
    eventually("A is writing the first event of both partitions", || {
        let sink = sink.clone();
        async move { sink.hung.lock().unwrap().len() == 2 }
    })
    .await;
    // B joins and takes one partition over; its first write there repeats the hung event.
    let b = start(settings, sink.clone());
    eventually("B wrote the partition it took over", || {
        let log = sink.log.clone();
        async move {
            let log = log.lock().unwrap();
            log.iter().any(|l| l == "wrote wamid.0.1") || log.iter().any(|l| l == "wrote wamid.1.1")
        }
    })
    .await;
    let log = sink.log.lock().unwrap().clone();
    let moved = if log.iter().any(|l| l == "wrote wamid.0.1") {
        0
    } else {
        1
    };
    let position = |line: String| log.iter().position(|l| *l == line);
    let abandoned = position(format!("abandoned wamid.{moved}.0"));
    let rewritten = position(format!("wrote wamid.{moved}.0"));
    assert!(
        abandoned.is_some() && abandoned < rewritten,
        "the old owner's write was still running when the new owner wrote the user's events: {log:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// A writer the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The sum of the group's committed offsets over `partitions` partitions of the raw topic.
fn committed_total(setup: &Setup, partitions: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = setup
        .kafka()
        .client_config()
        .unwrap()
        .set("group.id", &setup.group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        tpl.add_partition(&setup.topic, partition);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .map(|tpl| {
            tpl.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buffering_sinks_lines_are_out_before_their_offsets_are_committed() {
    // A log sink whose buffer no timer flushes: only the worker's flush before it stores
    // offsets can put the lines out while it runs. Were offsets committed first, a crash now
    // would lose lines of committed events.
    let setup = Setup::new("logflush", 2).await;
    let producer = setup.producer();
    for n in 0..20 {
        produce_message(
            &producer,
            &setup.topic,
            &format!("1555070{}", n % 4),
            &format!("wamid.lf{n}"),
        )
        .await;
    }
    let out = Captured::default();
    let sink: SharedSink = Arc::new(wapipe_worker::sink::LogSink::to_writer_flushing_every(
        Box::new(out.clone()),
        None,
    ));
    let running = start(setup.settings(), sink.clone());
    eventually("the 20 offsets committed", || {
        let committed = committed_total(&setup, 2);
        async move { committed >= 20 }
    })
    .await;
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    for n in 0..20 {
        assert!(
            text.contains(&format!("\"wamid.lf{n}\"")),
            "wamid.lf{n} is committed but its line is not out:\n{text}"
        );
    }
    running.stop().await;
}
