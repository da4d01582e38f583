//! End to end on real parts: signed webhooks posted to the ingress come out as rows in
//! PostgreSQL, one per event, in order per user.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use wapipe_testkit::{create_topic, free_port, unique_name};

const SECRET: &str = "e2e-secret";
const DATABASE_URL: &str = "postgres://root@127.0.0.1:5432/test";
const SENDERS: usize = 5;
const POSTS: usize = 8;
const PER_SENDER_PER_POST: usize = 3;

/// POST `n`: every sender sends PER_SENDER_PER_POST messages, interleaved, plus a delivered
/// status for the first sender; message bodies carry the sender's running sequence number.
fn post(run: &str, n: usize) -> String {
    let mut changes = Vec::new();
    for i in 0..PER_SENDER_PER_POST {
        for s in 0..SENDERS {
            let seq = n * PER_SENDER_PER_POST + i;
            changes.push(format!(
                r#"{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"User {s}"}},"wa_id":"5215599{s:05}"}}],"messages":[{{"from":"5215599{s:05}","id":"wamid.{run}.{s}.{seq}","timestamp":"1767000000","type":"text","text":{{"body":"{seq}"}}}}]}}}}"#
            ));
        }
    }
    changes.push(format!(
        r#"{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"phone_number_id":"106540352242922"}},"statuses":[{{"id":"wamid.{run}.out.{n}","status":"delivered","timestamp":"1767000300","recipient_id":"521559900000"}}]}}}}"#
    ));
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{}]}}]}}"#,
        changes.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_become_one_row_per_event_in_order_per_user() {
    let (brokers, _broker) = wapipe_testkit::broker().expect("a broker");
    let run = unique_name("e2e").replace('-', "_");
    let (topic, dead_letters, group, schema) = (
        format!("{run}_raw"),
        format!("{run}_failed"),
        format!("{run}_group"),
        run.clone(),
    );
    create_topic(&brokers, &topic, 4).await.unwrap();
    create_topic(&brokers, &dead_letters, 4).await.unwrap();

    // The ingress, in this process.
    let ingress = support::Ingress::start(&brokers, &topic, SECRET).await;

    // The worker, in this process, writing to its own schema.
    let worker_cli = wapipe_worker::Cli::try_parse_from([
        "wapipe-worker",
        "--kafka-brokers",
        &brokers,
        "--topic",
        &topic,
        "--dead-letter-topic",
        &dead_letters,
        "--group",
        &group,
        "--sink",
        "postgres",
        "--database-url",
        DATABASE_URL,
        "--database-schema",
        &schema,
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ])
    .unwrap();
    let worker = tokio::spawn(wapipe_worker::run_worker(worker_cli.run));

    let client = reqwest::Client::new();
    let url = ingress.url.clone();
    let mut events = 0;
    for n in 0..POSTS {
        let body = post(&run, n);
        let response = wapipe_testkit::signed_meta_post(&client, &url, SECRET, body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        events += SENDERS * PER_SENDER_PER_POST + 1;
    }
    // Meta retries a delivery it believes failed: post one again. Nothing may double.
    let again = post(&run, 0);
    let response = wapipe_testkit::signed_meta_post(&client, &url, SECRET, again)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (db, connection) = tokio_postgres::connect(DATABASE_URL, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(connection);
    let messages_expected = (SENDERS * PER_SENDER_PER_POST * POSTS) as i64;
    let mut messages = 0;
    let mut statuses = 0;
    for _ in 0..240 {
        let counts = db
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {schema}.wapipe_messages), \
                            (SELECT count(*) FROM {schema}.wapipe_statuses)"
                ),
                &[],
            )
            .await;
        if let Ok(row) = counts {
            messages = row.get::<_, i64>(0);
            statuses = row.get::<_, i64>(1);
            if messages >= messages_expected && statuses >= POSTS as i64 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        messages, messages_expected,
        "one row per message, none doubled"
    );
    assert_eq!(statuses, POSTS as i64, "one row per status");
    assert_eq!(messages + statuses, events as i64);

    // In order per user: the worker's write order (seq) follows each sender's sequence.
    let rows = db
        .query(
            &format!("SELECT user_key, body FROM {schema}.wapipe_messages ORDER BY seq"),
            &[],
        )
        .await
        .unwrap();
    let mut per_user: HashMap<String, Vec<usize>> = HashMap::new();
    for row in rows {
        let user: String = row.get(0);
        let body: Option<String> = row.get(1);
        per_user
            .entry(user)
            .or_default()
            .push(body.unwrap_or_default().parse().unwrap());
    }
    assert_eq!(per_user.len(), SENDERS);
    for (user, sequence) in per_user {
        let expected: Vec<usize> = (0..POSTS * PER_SENDER_PER_POST).collect();
        assert_eq!(sequence, expected, "order of {user}");
    }

    ingress.stop().await;
    worker.abort();
    db.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
