//! Event identity end to end on Apache Kafka: signed webhooks through the ingress and the
//! worker into PostgreSQL. Different events are never merged (a group send's six receipts,
//! a template approved/paused/approved, a quality flagged/unflagged/flagged), and deliveries of
//! the same event are (a POST retried by Meta, every record read again by a worker that
//! starts over after a crash).

mod support;

use std::time::Duration;

use clap::Parser;
use wapipe_testkit::{create_topic, free_port, unique_name};

const SECRET: &str = "identity-secret";
const DATABASE_URL: &str = "postgres://root@127.0.0.1:5432/test";

fn envelope(entry_time: Option<u64>, field: &str, value: &str) -> String {
    let time = entry_time.map_or(String::new(), |t| format!(r#""time":{t},"#));
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398",{time}"changes":[{{"field":"{field}","value":{value}}}]}}]}}"#
    )
}

fn group_receipt(run: &str, participant: &str, status: &str, at: u64) -> String {
    envelope(
        None,
        "messages",
        &format!(
            r#"{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"statuses":[{{"id":"wamid.{run}.group","status":"{status}","timestamp":"{at}","recipient_id":"120363040000000001@g.us","recipient_type":"group","recipient_participant_id":"{participant}"}}]}}"#
        ),
    )
}

fn template(run: &str, event: &str, at: u64) -> String {
    envelope(
        Some(at),
        "message_template_status_update",
        &format!(
            r#"{{"event":"{event}","message_template_id":1689556908129832,"message_template_name":"order_ready_{run}","message_template_language":"es_MX","reason":"NONE"}}"#
        ),
    )
}

fn quality(event: &str, at: u64) -> String {
    envelope(
        Some(at),
        "phone_number_quality_update",
        &format!(
            r#"{{"display_phone_number":"15550783881","event":"{event}","current_limit":"TIER_1K"}}"#
        ),
    )
}

fn rate_limit_error(run: &str) -> String {
    envelope(
        None,
        "messages",
        &format!(
            r#"{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"{run}"}},"errors":[{{"code":131056,"title":"(Business Account, Consumer Account) pair rate limit hit"}}]}}"#
        ),
    )
}

fn sentinel(run: &str, n: usize) -> String {
    envelope(
        None,
        "messages",
        &format!(
            r#"{{"messaging_product":"whatsapp","metadata":{{"phone_number_id":"106540352242922"}},"messages":[{{"from":"5215500000000","id":"wamid.{run}.sentinel.{n}","timestamp":"1767000000","type":"text","text":{{"body":"done"}}}}]}}"#
        ),
    )
}

fn worker_cli(brokers: &str, topic: &str, group: &str, schema: &str) -> wapipe_worker::Cli {
    wapipe_worker::Cli::try_parse_from([
        "wapipe-worker",
        "--kafka-brokers",
        brokers,
        "--topic",
        topic,
        "--dead-letter-topic",
        &format!("{topic}_failed"),
        "--group",
        group,
        "--sink",
        "postgres",
        "--database-url",
        DATABASE_URL,
        "--database-schema",
        schema,
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ])
    .unwrap()
}

struct Counts {
    group_receipts: i64,
    templates: i64,
    qualities: i64,
    errors: i64,
    sentinels: i64,
}

async fn counts(db: &tokio_postgres::Client, schema: &str, run: &str) -> Option<Counts> {
    let row = db
        .query_one(
            &format!(
                "SELECT
                  (SELECT count(*) FROM {schema}.wapipe_statuses WHERE wamid = 'wamid.{run}.group'),
                  (SELECT count(*) FROM {schema}.wapipe_events WHERE field = 'message_template_status_update'),
                  (SELECT count(*) FROM {schema}.wapipe_events WHERE field = 'phone_number_quality_update'),
                  (SELECT count(*) FROM {schema}.wapipe_events WHERE kind = 'error'),
                  (SELECT count(*) FROM {schema}.wapipe_messages WHERE wamid LIKE 'wamid.{run}.sentinel.%')"
            ),
            &[],
        )
        .await
        .ok()?;
    Some(Counts {
        group_receipts: row.get(0),
        templates: row.get(1),
        qualities: row.get(2),
        errors: row.get(3),
        sentinels: row.get(4),
    })
}

async fn wait_for_sentinels(
    db: &tokio_postgres::Client,
    schema: &str,
    run: &str,
    sentinels: i64,
) -> Counts {
    for _ in 0..240 {
        if let Some(c) = counts(db, schema, run).await {
            if c.sentinels >= sentinels {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the worker did not write sentinel {sentinels} in two minutes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_events_are_kept_apart_and_redeliveries_of_one_event_are_one_row() {
    let (brokers, _broker) = wapipe_testkit::broker().expect("a broker");
    let run = unique_name("identity").replace('-', "_");
    let topic = format!("{run}_raw");
    let schema = run.clone();
    // One partition: a sentinel written after the other events means they were all handled.
    create_topic(&brokers, &topic, 1).await.unwrap();
    create_topic(&brokers, &format!("{topic}_failed"), 1)
        .await
        .unwrap();

    let ingress = support::Ingress::start(&brokers, &topic, SECRET).await;
    let worker = tokio::spawn(wapipe_worker::run_worker(
        worker_cli(&brokers, &topic, &format!("{run}_group"), &schema).run,
    ));

    let client = reqwest::Client::new();
    let url = ingress.url.clone();
    let post = |body: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = wapipe_testkit::signed_meta_post(&client, &url, SECRET, body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    };

    // A message to a group of three: each member's delivered and read, one POST each.
    let mut at = 1_767_000_000;
    for participant in ["5215512340001", "5215512340002", "5215512340003"] {
        for status in ["delivered", "read"] {
            at += 1;
            post(group_receipt(&run, participant, status, at)).await;
        }
    }
    // A template approved, paused, approved again; a number flagged, unflagged, flagged.
    for (event, at) in [
        ("APPROVED", 1_767_001_000),
        ("PAUSED", 1_767_002_000),
        ("APPROVED", 1_767_003_000),
    ] {
        post(template(&run, event, at)).await;
    }
    for (event, at) in [
        ("FLAGGED", 1_767_001_000),
        ("UNFLAGGED", 1_767_002_000),
        ("FLAGGED", 1_767_003_000),
    ] {
        post(quality(event, at)).await;
    }
    // Meta retries deliveries it believes failed: the same bodies again.
    post(rate_limit_error(&run)).await;
    post(rate_limit_error(&run)).await;
    post(template(&run, "APPROVED", 1_767_001_000)).await;
    post(group_receipt(&run, "5215512340002", "read", 1_767_000_004)).await;
    post(sentinel(&run, 1)).await;

    let (db, connection) = tokio_postgres::connect(DATABASE_URL, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(connection);
    let first = wait_for_sentinels(&db, &schema, &run, 1).await;
    println!(
        "first pass: group receipts 6 -> {} rows; template approved/paused/approved -> {} rows; \
         quality flagged/unflagged/flagged -> {} rows; one error POST delivered twice -> {} rows",
        first.group_receipts, first.templates, first.qualities, first.errors
    );
    assert_eq!(first.group_receipts, 6);
    assert_eq!(first.templates, 3);
    assert_eq!(first.qualities, 3);
    assert_eq!(first.errors, 1);

    // The worker crashes; its successor starts over and reads every record again.
    worker.abort();
    let _ = worker.await;
    let again = tokio::spawn(wapipe_worker::run_worker(
        worker_cli(
            &brokers,
            &topic,
            &format!("{run}_group_after_crash"),
            &schema,
        )
        .run,
    ));
    post(sentinel(&run, 2)).await;
    let second = wait_for_sentinels(&db, &schema, &run, 2).await;
    println!(
        "every record read again: group receipts {} rows; templates {}; qualities {}; errors {}",
        second.group_receipts, second.templates, second.qualities, second.errors
    );
    assert_eq!(
        (
            second.group_receipts,
            second.templates,
            second.qualities,
            second.errors
        ),
        (6, 3, 3, 1),
        "a record read again added a row"
    );
    let current: String = db
        .query_one(
            &format!(
                "SELECT status FROM {schema}.wapipe_message_status WHERE wamid = 'wamid.{run}.group'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, "read", "the highest rank across the members");

    ingress.stop().await;
    again.abort();
    db.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
