//! The worker's consumer group on a real broker, run in-process: partitions split between
//! workers and handed over on a rebalance, paused partitions and a bounded buffer, a revoked
//! partition's write abandoned before the new owner writes, and offsets committed only after a
//! buffering sink's lines are out.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use wapipe_worker::error::{Error, Result};
use wapipe_worker::route::Event;
use wapipe_worker::sink::{PostgresSink, SharedSink, Sink};
use wapipe_worker::WorkerSettings;

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

    async fn write_batch(&self, events: &[Event]) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Err(Error::SinkUnavailable {
                sink: "gated",
                reason: "gate closed".into(),
            });
        }
        let ids = events.iter().map(|event| event.id.clone());
        self.written.lock().unwrap().extend(ids);
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
        max_buffered: Some(max_buffered),
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

    async fn write_batch(&self, events: &[Event]) -> Result<()> {
        for event in events {
            if self.hang.contains(&event.id) && self.hung.lock().unwrap().insert(event.id.clone()) {
                let _abandoned = LogOnDrop(self.log.clone(), format!("abandoned {}", event.id));
                std::future::pending::<()>().await;
            }
            self.log.lock().unwrap().push(format!("wrote {}", event.id));
        }
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
