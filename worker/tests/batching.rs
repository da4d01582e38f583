//! Batched writes on a real broker and a real PostgreSQL: many events per transaction, and still
//! every guarantee of one event at a time (each user's order, one row per event, only the faulty
//! event retried and dead-lettered, an outage waited out).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::future::join_all;
use rdkafka::producer::FutureProducer;
use wapipe_worker::sink::PostgresSink;

/// Produces Meta text messages (user, wamid, body) concurrently, each keyed by its user.
async fn produce_messages(
    producer: &FutureProducer,
    topic: &str,
    messages: &[(String, String, String)],
) {
    for chunk in messages.chunks(500) {
        join_all(
            chunk
                .iter()
                .map(|(user, wamid, body)| produce_text(producer, topic, user, wamid, body)),
        )
        .await;
    }
}

/// `rounds` messages from each of `users`, round by round (user, wamid, body); a user's
/// wamids sort in the order they were sent.
fn rounds_of_messages(users: &[String], rounds: usize) -> Vec<(String, String, String)> {
    let mut messages = Vec::with_capacity(users.len() * rounds);
    for n in 0..rounds {
        for user in users {
            let wamid = format!("wamid.{user}.{n:02}");
            messages.push((user.clone(), wamid.clone(), format!("text of {wamid}")));
        }
    }
    messages
}

/// Each user's wamids in the order they were produced.
fn per_user(messages: &[(String, String, String)], user: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|(u, _, _)| u == user)
        .map(|(_, wamid, _)| wamid.clone())
        .collect()
}

/// Runs a worker with the postgres sink until `records` records are finished, then stops it.
async fn drain_into_postgres(setup: &Setup, records: usize) {
    let sink = PostgresSink::connect(&database_url(postgres_port()), Some(setup.schema.clone()))
        .await
        .expect("postgres sink");
    let running = start(setup.settings(), Arc::new(sink));
    running
        .wait_finished("every record finished", |finished| {
            finished >= records as u64
        })
        .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_in_a_batch_is_dead_lettered_while_its_batch_mates_are_written_once() {
    let setup = Setup::new("batchpoison", 1).await;
    let producer = setup.producer();
    let db = setup.database().await;
    let users: Vec<String> = (0..30).map(|u| format!("155507{u:02}")).collect();
    let mut messages = rounds_of_messages(&users, 5);
    // PostgreSQL text holds no NUL character: a data error (class 22), the event's own fault.
    let poison_user = users[7].clone();
    let poison = (
        poison_user.clone(),
        "wamid.poison".to_string(),
        "bad \u{0} text".to_string(),
    );
    messages.insert(2 * users.len() + 7, poison.clone());
    // Every good message is delivered twice (a provider's retry), after the first copies.
    let good: Vec<_> = messages
        .iter()
        .filter(|m| m.1 != poison.1)
        .cloned()
        .collect();
    let records: Vec<_> = messages.iter().chain(good.iter()).cloned().collect();
    produce_messages(&producer, &setup.topic, &records).await;

    drain_into_postgres(&setup, records.len()).await;

    assert_eq!(
        count(&db, "SELECT count(*) FROM wapipe_messages").await,
        good.len() as i64,
        "every good message once, the poison one not at all"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM wapipe_messages WHERE wamid = 'wamid.poison'"
        )
        .await,
        0
    );
    assert_eq!(
        setup.dead_letter_count(),
        1,
        "only the poison event is dead-lettered"
    );
    for user in &users {
        let expected: Vec<String> = per_user(&good, user);
        assert_eq!(
            wamids_in_write_order(&db, user).await,
            expected,
            "order of {user}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_cut_while_batches_are_in_flight_loses_nothing_doubles_nothing_and_keeps_each_users_order(
) {
    let setup = Setup::new("batchcut", 2).await;
    let producer = setup.producer();
    let db = setup.database().await;
    let users: Vec<String> = (0..200).map(|u| format!("15550{u:03}")).collect();
    let messages = rounds_of_messages(&users, 25);
    produce_messages(&producer, &setup.topic, &messages).await;
    let total = messages.len() as i64;

    let (proxy, sink) = setup.postgres_through_proxy().await;
    let running = start(setup.settings(), Arc::new(sink));
    // Cut as soon as the first rows are in, with batches on the wire.
    loop {
        if count(&db, "SELECT count(*) FROM wapipe_messages").await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    proxy.cut();
    let at_cut = count(&db, "SELECT count(*) FROM wapipe_messages").await;
    running.wait_ready(false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    eventually(
        "every message written after the database returned",
        || async { count(&db, "SELECT count(*) FROM wapipe_messages").await == total },
    )
    .await;
    running.stop().await;

    assert!(at_cut < total, "the cut came after everything was written");
    assert_eq!(
        count(&db, "SELECT count(DISTINCT wamid) FROM wapipe_messages").await,
        total
    );
    assert_eq!(
        setup.dead_letter_count(),
        0,
        "an outage is no event's fault"
    );
    for user in &users {
        assert_eq!(
            wamids_in_write_order(&db, user).await,
            per_user(&messages, user),
            "order of {user}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_events_around_an_unreadable_one_keep_their_order_when_their_batch_is_split() {
    let setup = Setup::new("batchsplit", 1).await;
    let producer = setup.producer();
    let db = setup.database().await;
    let user = "15550800";
    produce_text(&producer, &setup.topic, user, "wamid.first", "first").await;
    // Unreadable: leaves the batch at routing, with the user's later events behind it.
    produce_other(&producer, &setup.topic, user, b"\x00garbage", "unparsed").await;
    produce_text(&producer, &setup.topic, user, "wamid.third", "third").await;
    // Another user's poison message makes the database reject the batch: it is split.
    let others: Vec<(String, String, String)> = (0..10)
        .map(|u| {
            let other = format!("155508{:02}", u + 1);
            let body = if u == 4 { "bad \u{0} text" } else { "fine" };
            (other.clone(), format!("wamid.{other}"), body.to_string())
        })
        .collect();
    produce_messages(&producer, &setup.topic, &others).await;

    drain_into_postgres(&setup, 13).await;

    assert_eq!(
        wamids_in_write_order(&db, user).await,
        ["wamid.first", "wamid.third"],
        "the user's events in order around the unreadable one"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM wapipe_messages").await, 11);
    assert_eq!(
        setup.dead_letter_count(),
        2,
        "the unreadable record and the poison message"
    );
}
