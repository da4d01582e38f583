//! Databases written before migration 0002 (statuses unique by wamid and status) migrate in
//! place: every row is kept, rows of group sends get their participant back from the raw
//! event, and new writes follow the new key (one row per member's receipt).

mod common;

use serde_json::json;
use wapipe_core::Provider;
use wapipe_worker::route::{as_ingress_produces, route, Event};
use wapipe_worker::sink::{PostgresSink, Sink, SqliteSink, MIGRATIONS, SQLITE_MIGRATIONS};

/// A group receipt as Meta sends it.
fn group_receipt(participant: &str, status: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"object": "whatsapp_business_account", "entry": [{"id": "w",
        "changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "pn"},
            "statuses": [{"id": "wamid.OLDGROUP", "status": status, "timestamp": "1767000000",
                "recipient_id": "120363040000000001@g.us", "recipient_type": "group",
                "recipient_participant_id": participant}]}}]}]}),
    )
    .unwrap()
}

fn one_to_one(status: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"object": "whatsapp_business_account", "entry": [{"id": "w",
        "changes": [{"field": "messages", "value": {"statuses": [{"id": "wamid.OLD1",
            "status": status, "timestamp": "1767000000", "recipient_id": "5215512345678"}]}}]}]}),
    )
    .unwrap()
}

/// The rows of migration 0001 kept by the migration: the group's participant recovered from
/// the raw event, the one-to-one receipt's empty.
fn assert_kept(kept: &[String]) {
    assert_eq!(
        kept,
        ["wamid.OLDGROUP:read:5215512340001", "wamid.OLD1:read:"],
        "rows kept, the group's participant recovered from raw"
    );
}

/// Writes after the migration: the lost member's read and a third member's are new rows; the
/// replays of the kept two are not.
async fn write_new_receipts(sink: &impl Sink) {
    for body in [
        group_receipt("5215512340001", "read"),
        group_receipt("5215512340002", "read"),
        group_receipt("5215512340003", "read"),
        one_to_one("read"),
    ] {
        sink.write(&routed(&body)).await.unwrap();
    }
}

/// The receipts stored under migration 0001, by the participant the row had: its key merged
/// the members' receipts of one group message, so the second member's read was lost.
fn old_receipts() -> [(&'static str, Vec<u8>); 3] {
    [
        ("5215512340001", group_receipt("+5215512340001", "read")),
        ("5215512340002", group_receipt("5215512340002", "read")),
        ("5215512345678", one_to_one("read")),
    ]
}

fn routed(body: &[u8]) -> Event {
    route(&as_ingress_produces(Provider::Meta, body, "raw")[0]).unwrap()
}

/// What today's main wrote (0001's statement): one row per (wamid, status).
const OLD_STATUS_INSERT_SQLITE: &str = "INSERT INTO wapipe_statuses (wamid, status, rank,
    provider, user_key, recipient_id, raw) VALUES (?1, ?2, ?3, 'meta', ?4, ?4, ?5)
    ON CONFLICT (wamid, status) DO NOTHING";

#[tokio::test]
async fn a_sqlite_database_of_migration_0001_keeps_its_rows_and_takes_the_new_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch(&format!(
            "CREATE TABLE wapipe_schema_migrations (version INTEGER PRIMARY KEY,
               name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT '');
             {}; INSERT INTO wapipe_schema_migrations (version, name) VALUES (1, 'initial');",
            SQLITE_MIGRATIONS[0].2
        ))
        .unwrap();
        // The old key merged the members' receipts: the second member's read was lost.
        for (participant, body) in old_receipts() {
            let event = routed(&body);
            let wamid = event.wamid().unwrap().to_string();
            old.execute(
                OLD_STATUS_INSERT_SQLITE,
                rusqlite::params![wamid, "read", 3, participant, event.raw.get()],
            )
            .unwrap();
        }
    }
    let sink = SqliteSink::open(&path).unwrap();
    let read = |sql: &str| -> Vec<String> {
        let c = rusqlite::Connection::open(&path).unwrap();
        let mut statement = c.prepare(sql).unwrap();
        let rows = statement
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    let kept = read(
        "SELECT wamid || ':' || status || ':' || participant FROM wapipe_statuses ORDER BY rowid",
    );
    assert_kept(&kept);
    write_new_receipts(&sink).await;
    let after = read("SELECT participant FROM wapipe_statuses ORDER BY rowid");
    println!(
        "sqlite migration: {} rows kept, {} after new writes",
        kept.len(),
        after.len()
    );
    assert_eq!(
        after,
        ["5215512340001", "", "5215512340002", "5215512340003"]
    );
}

#[tokio::test]
async fn a_postgres_database_of_migration_0001_keeps_its_rows_and_takes_the_new_keys() {
    let schema = wapipe_testkit::unique_name("migrate")
        .replace('-', "_")
        .to_lowercase();
    let (client, connection) = tokio_postgres::connect(&common::database(), tokio_postgres::NoTls)
        .await
        .expect("the tests' PostgreSQL");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path TO {schema};
             CREATE TABLE wapipe_schema_migrations (version bigint PRIMARY KEY,
               name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
             {}; INSERT INTO wapipe_schema_migrations (version, name) VALUES (1, 'initial');",
            MIGRATIONS[0].2
        ))
        .await
        .unwrap();
    for (participant, body) in old_receipts() {
        let event = routed(&body);
        let raw: serde_json::Value = serde_json::from_str(event.raw.get()).unwrap();
        client
            .execute(
                "INSERT INTO wapipe_statuses (wamid, status, rank, provider, user_key,
                   recipient_id, raw) VALUES ($1, 'read', 3, 'meta', $2, $2, $3)
                 ON CONFLICT (wamid, status) DO NOTHING",
                &[&event.wamid().unwrap(), &participant, &raw],
            )
            .await
            .unwrap();
    }
    let sink = PostgresSink::connect(
        &common::database_url(common::postgres_port()),
        Some(schema.clone()),
    )
    .await
    .unwrap();
    let rows = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    let kept = rows(
        "SELECT wamid || ':' || status || ':' || participant FROM wapipe_statuses ORDER BY seq",
    )
    .await;
    assert_kept(&kept);
    write_new_receipts(&sink).await;
    let after = rows("SELECT participant FROM wapipe_statuses ORDER BY seq").await;
    println!(
        "postgres migration: {} rows kept, {} after new writes",
        kept.len(),
        after.len()
    );
    assert_eq!(
        after,
        ["5215512340001", "", "5215512340002", "5215512340003"]
    );
    // Current status of a group send: the highest rank across its members.
    let current =
        rows("SELECT status FROM wapipe_message_status WHERE wamid = 'wamid.OLDGROUP'").await;
    assert_eq!(current, ["read"]);
    let versions =
        common::count(&client, "SELECT max(version) FROM wapipe_schema_migrations").await;
    assert_eq!(versions, 2);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
