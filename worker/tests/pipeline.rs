//! The worker on a real broker and a real PostgreSQL, run in-process: per-user order, dedup,
//! retries and dead letters, a database or HTTP sink that goes away, replays. The consumer
//! group (rebalances, pausing, hand-over) is in `rebalance.rs`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use wapipe_worker::error::Error;
use wapipe_worker::replay::{self, DeadLetterFilter};
use wapipe_worker::sink::{HttpSink, PostgresSink};
use wapipe_worker::WorkerSettings;

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
        max_buffered: Some(20),
        ..setup.settings()
    };
    let running = start(settings, sink.clone());
    sink.wait_writes("all 240 events written", 240).await;
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
    produce_other(&producer, &setup.topic, "pn-1", other_field, "field").await;
    let running = start(setup.settings(), Arc::new(sink));
    running
        .wait_finished("7 events finished", |finished| finished >= 7)
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

/// An HTTP service that refuses one wamid with 422 (until fixed), counts every request, and
/// keeps the wamids it answered 200, in order. While `outage` is set, every POST fails that way.
#[derive(Default)]
struct Service {
    calls: Mutex<HashMap<String, usize>>,
    fixed: AtomicBool,
    outage: Mutex<Option<Outage>>,
    gets_of_moved: AtomicUsize,
    delivered: Mutex<Vec<String>>,
}

/// How a service that is down answers a POST.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// A 503.
    Unavailable,
    /// A 302 to /moved, where a GET answers 200: what a moved or misconfigured endpoint looks
    /// like.
    Redirect,
}

/// Serves `service`; returns it shared, and an HTTP sink that posts to its `/events`.
async fn serve(service: Service) -> (Arc<Service>, HttpSink) {
    use axum::response::{IntoResponse, Response};
    async fn post(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
        let key = idempotency_key(&headers);
        *service
            .calls
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default() += 1;
        let outage = *service.outage.lock().unwrap();
        match outage {
            Some(Outage::Unavailable) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            Some(Outage::Redirect) => (StatusCode::FOUND, [("location", "/moved")]).into_response(),
            None if key == "wamid.poison" && !service.fixed.load(Ordering::SeqCst) => {
                StatusCode::UNPROCESSABLE_ENTITY.into_response()
            }
            None => {
                service.delivered.lock().unwrap().push(key);
                StatusCode::OK.into_response()
            }
        }
    }
    async fn moved(State(service): State<Arc<Service>>) -> StatusCode {
        service.gets_of_moved.fetch_add(1, Ordering::SeqCst);
        StatusCode::OK
    }
    let service = Arc::new(service);
    let app = axum::Router::new()
        .route("/events", axum::routing::post(post))
        .route("/moved", axum::routing::get(moved))
        .with_state(service.clone());
    (service, http_sink(serve_http(app).await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_is_dead_lettered_after_exactly_three_attempts_and_replayed_once_fixed() {
    let setup = Setup::new("poison", 2).await;
    let producer = setup.producer();
    let (service, sink) = serve(Service::default()).await;
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
    produce_other(&producer, &setup.topic, "pn-1", b"\x00garbage", "unparsed").await;
    let running = start(setup.settings(), Arc::new(sink));
    running
        .wait_finished("every event finished", |finished| finished >= 43)
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
    let (setup, db, proxy, running) =
        lose_the_database("dbdown", "1555030", |settings| settings, CuttableProxy::cut).await;
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

    recover(
        &setup,
        &db,
        proxy,
        running,
        "all 20 rows after the database returned",
    )
    .await;
}

/// The database goes away under a running worker: 10 rows land through the proxy, `outage`
/// cuts or freezes it, 10 more events arrive (users `<user_prefix>0` to `<user_prefix>2`
/// throughout), and the worker turns unready. Returns the setup, the database, the proxy and
/// the worker, for [`recover`].
async fn lose_the_database(
    name: &str,
    user_prefix: &str,
    settings: impl FnOnce(WorkerSettings) -> WorkerSettings,
    outage: impl FnOnce(&CuttableProxy),
) -> (Setup, tokio_postgres::Client, CuttableProxy, Running) {
    let setup = Setup::new(name, 2).await;
    let producer = setup.producer();
    let db = setup.database().await;
    let (proxy, sink) = setup.postgres_through_proxy().await;
    let running = start(settings(setup.settings()), Arc::new(sink));
    produce_messages(&producer, &setup.topic, user_prefix, 3, "wamid.a", 10).await;
    wait_for_rows(&db, 10, "first 10 rows").await;
    assert!(running.worker.health.is_ready());

    outage(&proxy);
    produce_messages(&producer, &setup.topic, user_prefix, 3, "wamid.b", 10).await;
    running.wait_ready(false).await;
    (setup, db, proxy, running)
}

/// The database back: the 20 rows of the test land, the worker is ready again and stops, and
/// nothing was dead-lettered.
async fn recover(
    setup: &Setup,
    db: &tokio_postgres::Client,
    proxy: CuttableProxy,
    running: Running,
    what: &str,
) {
    proxy.restore();
    wait_for_rows(db, 20, what).await;
    running.wait_ready(true).await;
    running.stop().await;
    assert_eq!(setup.dead_letter_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_connections_left_by_a_failover_are_replaced_and_nothing_is_dead_lettered() {
    // After a failover the old connections hang instead of failing: a write that timed out on
    // one must not leave it in use, or every later write on it times out too.
    let sink_timeout = |settings| WorkerSettings {
        sink_timeout: Duration::from_secs(2),
        ..settings
    };
    let (setup, db, proxy, running) =
        lose_the_database("halfopen", "1555031", sink_timeout, CuttableProxy::freeze).await;
    assert_eq!(count(&db, "SELECT count(*) FROM wapipe_messages").await, 10);

    recover(
        &setup,
        &db,
        proxy,
        running,
        "all 20 rows after the failover",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_from_a_timestamp_rewinds_the_group_and_is_refused_while_it_has_members() {
    let setup = Setup::new("rewind", 2).await;
    let producer = setup.producer();
    let before = now_ms() - 1000;
    produce_messages(&producer, &setup.topic, "1555050", 2, "wamid", 10).await;
    let sink = Arc::new(RecordingSink::default());
    let running = start(setup.settings(), sink.clone());
    sink.wait_writes("10 written", 10).await;
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
    sink.wait_writes("the 10 events written again", 20).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_answering_503_is_waited_out_without_dead_letters() {
    wait_out(Outage::Unavailable, "http503").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirected_post_is_not_written_but_waited_out_until_the_url_itself_answers() {
    // Following a 302 turns the POST into a bodiless GET; a 200 on that GET must not count as
    // the event written, or the event is lost.
    wait_out(Outage::Redirect, "http302").await;
}

/// A service down from the start (`outage`) is waited out: the worker tries the first of five
/// events far more often than --max-attempts, yet finishes nothing, is not ready and
/// dead-letters nothing; once the service is back, all five are delivered, in order.
async fn wait_out(outage: Outage, name: &str) {
    let setup = Setup::new(name, 1).await;
    let producer = setup.producer();
    let (service, sink) = serve(Service {
        outage: Mutex::new(Some(outage)),
        ..Service::default()
    })
    .await;
    let wamids: Vec<String> = (0..5).map(|n| format!("wamid.down.{n}")).collect();
    for wamid in &wamids {
        produce_message(&producer, &setup.topic, "15550600", wamid).await;
    }
    let running = start(setup.settings(), Arc::new(sink));
    let calls = |wamid: &str| {
        let calls = service.calls.lock().unwrap();
        calls.get(wamid).copied().unwrap_or(0)
    };
    // Far more failed requests than --max-attempts, yet no dead letter.
    eventually(
        "the first event tried more than three times, or an event finished",
        || {
            let finished = running.worker.metrics.finished_events();
            std::future::ready(calls("wamid.down.0") > 5 || finished > 0)
        },
    )
    .await;
    assert_eq!(
        running.worker.metrics.finished_events(),
        0,
        "a failed POST ({outage:?}) counted as written (GETs of the redirect target: {})",
        service.gets_of_moved.load(Ordering::SeqCst)
    );
    assert_eq!(service.gets_of_moved.load(Ordering::SeqCst), 0);
    assert!(!running.worker.health.is_ready());
    assert_eq!(
        setup.dead_letter_count(),
        0,
        "a service that is down (a redirect too) is the sink's fault"
    );

    *service.outage.lock().unwrap() = None;
    running
        .wait_finished("all five delivered once the service is back", |finished| {
            finished == 5
        })
        .await;
    running.stop().await;
    assert_eq!(setup.dead_letter_count(), 0);
    // Order held while waiting: events after the first were not sent before it succeeded.
    assert_eq!(calls("wamid.down.4"), 1);
    assert_eq!(*service.delivered.lock().unwrap(), wamids);
}
