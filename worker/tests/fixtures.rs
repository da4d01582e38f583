//! Every webhook field and type wapipe routes, from fixtures in Meta's (and WASender's) shape
//! (`tests/fixtures/`): split as the ingress splits them, routed, and written to the SQLite,
//! PostgreSQL and HTTP sinks. Each event is one row (one distinct `Idempotency-Key`), keyed by
//! its user; writing the same POST again (a Meta retry) adds nothing.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use wapipe_core::{EventKind, Provider};
use wapipe_worker::route::{as_ingress_produces, route, Event};
use wapipe_worker::sink::{PostgresSink, Sink, SqliteSink};

/// The (kind, partition key) of each event of a fixture, in order.
type Expected = &'static [(EventKind, &'static str)];

/// (fixture, provider, what it splits into).
const FIXTURES: &[(&str, Provider, Expected)] = &[
    (
        "group_receipts.json",
        Provider::Meta,
        &[
            (EventKind::Status, "5215512340001"),
            (EventKind::Status, "5215512340001"),
            (EventKind::Status, "5215512340002"),
            (EventKind::Status, "5215512340002"),
            (EventKind::Status, "5215512340003"),
            (EventKind::Status, "5215512340003"),
        ],
    ),
    (
        "statuses_one_to_one.json",
        Provider::Meta,
        &[
            (EventKind::Status, "5215512345678"),
            (EventKind::Status, "5215512345678"),
        ],
    ),
    (
        "messages_text_reaction_edit.json",
        Provider::Meta,
        &[
            (EventKind::Message, "5215512345678"),
            (EventKind::Message, "5215512345678"),
            (EventKind::Message, "5215512345678"),
        ],
    ),
    (
        "message_unknown_type_in_group.json",
        Provider::Meta,
        &[(EventKind::Message, "2348031234567")],
    ),
    (
        "smb_message_echoes.json",
        Provider::Meta,
        &[
            (EventKind::Echo, "5215512345678"),
            (EventKind::Echo, "2348031234567"),
        ],
    ),
    (
        "calls_user_initiated_connect.json",
        Provider::Meta,
        &[(EventKind::Call, "5215512345678")],
    ),
    (
        "calls_business_initiated_terminate.json",
        Provider::Meta,
        &[(EventKind::Call, "2348031234567")],
    ),
    (
        "calls_status_ringing.json",
        Provider::Meta,
        &[(EventKind::Call, "2348031234567")],
    ),
    (
        "group_lifecycle_update.json",
        Provider::Meta,
        &[(EventKind::Group, "120363040000000001@g.us")],
    ),
    (
        "group_participants_update.json",
        Provider::Meta,
        &[(EventKind::Group, "120363040000000001@g.us")],
    ),
    (
        "history.json",
        Provider::Meta,
        &[
            (EventKind::History, "5215512345678"),
            (EventKind::History, "2348031234567"),
        ],
    ),
    (
        "template_approved.json",
        Provider::Meta,
        &[(EventKind::Field, "102290129340398")],
    ),
    (
        "quality_flagged.json",
        Provider::Meta,
        &[(EventKind::Field, "102290129340398")],
    ),
    (
        "account_update.json",
        Provider::Meta,
        &[(EventKind::Field, "102290129340398")],
    ),
    (
        "value_errors.json",
        Provider::Meta,
        &[
            (EventKind::Error, "106540352242922"),
            (EventKind::Error, "106540352242922"),
            (EventKind::Error, "106540352242922"),
        ],
    ),
    (
        "unknown_field.json",
        Provider::Meta,
        &[(EventKind::Field, "102290129340398")],
    ),
    (
        "wasender_messages_received.json",
        Provider::Wasender,
        &[(EventKind::Message, "5215512345678")],
    ),
    (
        "wasender_messages_reaction.json",
        Provider::Wasender,
        &[(EventKind::Field, "5215512345678")],
    ),
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Every fixture's events, routed, each checked against its expected kind and key.
fn routed_fixtures() -> Vec<(&'static str, Vec<Event>)> {
    FIXTURES
        .iter()
        .map(|(name, provider, expected)| {
            let events: Vec<Event> = as_ingress_produces(*provider, &fixture(name), "raw")
                .iter()
                .map(|record| route(record).unwrap_or_else(|e| panic!("{name}: {e}")))
                .collect();
            let got: Vec<(EventKind, &str)> = events
                .iter()
                .map(|e| (e.event_kind(), e.user_key.as_str()))
                .collect();
            assert_eq!(got, expected.to_vec(), "{name}");
            (*name, events)
        })
        .collect()
}

fn total_events() -> usize {
    FIXTURES.iter().map(|(_, _, expected)| expected.len()).sum()
}

/// Writes every fixture's events twice (a Meta retry of each POST).
async fn write_all_twice(sink: &dyn Sink) {
    for (name, events) in routed_fixtures() {
        for event in events.iter().chain(events.iter()) {
            sink.write(event)
                .await
                .unwrap_or_else(|e| panic!("{name}: writing {}: {e}", event.id));
        }
    }
}

const ROW_COUNT: &str = "SELECT (SELECT count(*) FROM wapipe_messages) \
    + (SELECT count(*) FROM wapipe_statuses) + (SELECT count(*) FROM wapipe_events)";

#[test]
fn every_fixture_routes_to_its_typed_kind_keyed_by_its_user_with_distinct_ids() {
    let ids: BTreeSet<String> = routed_fixtures()
        .into_iter()
        .flat_map(|(_, events)| events.into_iter().map(|e| e.id))
        .collect();
    assert_eq!(ids.len(), total_events(), "two events share an id");
}

#[tokio::test]
async fn every_fixture_is_one_row_per_event_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixtures.db");
    let sink = SqliteSink::open(&path).unwrap();
    write_all_twice(&sink).await;
    drop(sink);
    let connection = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = connection.query_row(ROW_COUNT, [], |r| r.get(0)).unwrap();
    let group_rows: i64 = connection
        .query_row(
            "SELECT count(*) FROM wapipe_statuses WHERE wamid = 'wamid.GROUP1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let kinds: i64 = connection
        .query_row("SELECT count(DISTINCT kind) FROM wapipe_events", [], |r| {
            r.get(0)
        })
        .unwrap();
    println!("sqlite: {rows} rows for {} events", total_events());
    assert_eq!(rows as usize, total_events());
    assert_eq!(group_rows, 6);
    // error, field, echo, call, group, history
    assert_eq!(kinds, 6);
}

#[tokio::test]
async fn every_fixture_is_one_row_per_event_in_postgres() {
    let schema = wapipe_testkit::unique_name("fixtures")
        .replace('-', "_")
        .to_lowercase();
    let sink = PostgresSink::connect(
        &common::database_url(common::postgres_port()),
        Some(schema.clone()),
    )
    .await
    .expect("the tests' PostgreSQL");
    write_all_twice(&sink).await;
    let (client, connection) = tokio_postgres::connect(&common::database(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .unwrap();
    let rows = common::count(&client, ROW_COUNT).await;
    let group_rows = common::count(
        &client,
        "SELECT count(*) FROM wapipe_statuses WHERE wamid = 'wamid.GROUP1'",
    )
    .await;
    println!("postgres: {rows} rows for {} events", total_events());
    assert_eq!(rows as usize, total_events());
    assert_eq!(group_rows, 6);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_fixture_has_its_own_idempotency_key_at_the_http_sink() {
    let received: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    let key = common::idempotency_key(&headers);
                    seen.lock().unwrap().push((key, body));
                    "ok"
                }
            },
        ),
    );
    let address = common::serve_http(app).await;
    let sink = common::http_sink(address);
    write_all_twice(&sink).await;
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 2 * total_events());
    for (key, body) in received.iter() {
        assert_eq!(body["id"], key.as_str(), "the key is the event's id");
    }
    let keys: BTreeSet<&str> = received.iter().map(|(k, _)| k.as_str()).collect();
    println!(
        "http: {} distinct keys for {} events",
        keys.len(),
        total_events()
    );
    assert_eq!(keys.len(), total_events());
    assert!(keys.contains("wamid.GROUP1:read:5215512340002"));
}
