//! The worker binary killed with SIGKILL mid-stream and started again, with dynamic group
//! membership as Deployment pods have it: the new process is a new member, and the killed one's
//! partitions come back to the group when its session expires.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn spawn_worker(setup: &Setup, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_wapipe-worker"))
        .env("WAPIPE_KAFKA_BROKERS", &setup.brokers)
        .env("WAPIPE_TOPIC", &setup.topic)
        .env("WAPIPE_DEAD_LETTER_TOPIC", &setup.dead_letter_topic)
        .env("WAPIPE_GROUP", &setup.group)
        .env("WAPIPE_SINK", "postgres")
        .env("WAPIPE_DATABASE_URL", database_url(postgres_port()))
        .env("WAPIPE_DATABASE_SCHEMA", &setup.schema)
        .env(
            "WAPIPE_LISTEN",
            format!("127.0.0.1:{}", wapipe_testkit::free_port()),
        )
        .env("WAPIPE_CONCURRENCY", "8")
        .env("WAPIPE_DRAIN_TIMEOUT", "10s")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting wapipe-worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_stream_and_restarted_leaves_every_event_exactly_once_in_postgres() {
    let setup = Setup::new("crash", 3).await;
    let producer = setup.producer();
    let db = setup.database().await;
    let log = std::env::temp_dir().join(format!("{}.log", setup.group));
    eprintln!("worker log: {}", log.display());
    let users: Vec<String> = (0..20).map(|u| format!("155506{u:02}")).collect();
    let total = 1500usize;
    for n in 0..total / users.len() {
        for user in &users {
            produce_message(
                &producer,
                &setup.topic,
                user,
                &format!("wamid.{user}.{n:04}"),
            )
            .await;
        }
    }

    let mut worker = spawn_worker(&setup, &log);
    eventually("the worker writes some rows", || async {
        count(&db, "SELECT count(*) FROM wapipe_messages").await >= 150
    })
    .await;
    worker.kill().expect("SIGKILL");
    worker.wait().unwrap();
    let at_kill = count(&db, "SELECT count(*) FROM wapipe_messages").await;
    eprintln!("killed with {at_kill} of {total} rows written");

    let mut worker = spawn_worker(&setup, &log);
    eventually("every event written after the restart", || async {
        count(&db, "SELECT count(*) FROM wapipe_messages").await == total as i64
    })
    .await;
    // A graceful stop drains and commits; the process exits cleanly. The signal is sent once
    // the restarted worker consumes (its handler is installed by then): with batched writes the
    // first one may already have written everything before it was killed.
    eventually("the restarted worker consuming", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("consuming")
            .count()
            >= 2
    })
    .await;
    // A graceful stop drains and commits; the process exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || worker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "worker exit status {exit}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(
        count(&db, "SELECT count(*) FROM wapipe_messages").await,
        total as i64
    );
    for user in &users {
        let got = wamids_in_write_order(&db, user).await;
        let want: Vec<String> = (0..total / users.len())
            .map(|n| format!("wamid.{user}.{n:04}"))
            .collect();
        assert_eq!(got, want, "rows of {user}: each once, in order");
    }
    assert_eq!(setup.dead_letter_count(), 0);
}
