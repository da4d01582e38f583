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

/// What each fixture splits into, from `fixture_events.txt`.
struct Fixture {
    name: &'static str,
    provider: Provider,
    /// The (kind, partition key) of each event, in order.
    expected: Vec<(EventKind, &'static str)>,
}

fn fixtures() -> Vec<Fixture> {
    include_str!("fixture_events.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().expect("a fixture's name");
            let provider = words
                .next()
                .and_then(|provider| provider.parse().ok())
                .unwrap_or_else(|| panic!("{name}: no provider"));
            let expected = words
                .map(|event| {
                    let (kind, key) = event
                        .split_once(':')
                        .unwrap_or_else(|| panic!("{name}: {event} is not kind:key"));
                    (kind.parse().unwrap_or_else(|e| panic!("{name}: {e}")), key)
                })
                .collect();
            Fixture {
                name,
                provider,
                expected,
            }
        })
        .collect()
}

const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURE_DIR}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Every fixture's events, routed, each checked against its expected kind and key.
fn routed_fixtures() -> Vec<(&'static str, Vec<Event>)> {
    fixtures()
        .into_iter()
        .map(
            |Fixture {
                 name,
                 provider,
                 expected,
             }| {
                let events: Vec<Event> = as_ingress_produces(provider, &fixture(name), "raw")
                    .iter()
                    .map(|record| route(record).unwrap_or_else(|e| panic!("{name}: {e}")))
                    .collect();
                let got: Vec<(EventKind, &str)> = events
                    .iter()
                    .map(|e| (e.event_kind(), e.user_key.as_str()))
                    .collect();
                assert_eq!(got, expected, "{name}");
                (name, events)
            },
        )
        .collect()
}

fn total_events() -> usize {
    fixtures()
        .iter()
        .map(|fixture| fixture.expected.len())
        .sum()
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
    let listed: BTreeSet<String> = fixtures().iter().map(|f| f.name.to_string()).collect();
    let files: BTreeSet<String> = std::fs::read_dir(FIXTURE_DIR)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        listed, files,
        "a fixture without its line in fixture_events.txt"
    );
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
