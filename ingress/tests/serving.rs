//! The ingress serving, against Apache Kafka: shutdown drains in-flight requests and serves
//! new connections for the delay, the public port serves only the webhook, slow unsigned
//! connections are cut off while signed webhooks get 200, and a secret rotated under steady
//! load refuses nothing.

mod common;

use std::time::Duration;

use wapipe_core::record::HEADER_MESSAGE_ID;
use wapipe_testkit::{create_topic, unique_name};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_in_flight_request_finish_and_then_stops() {
    let (mut broker, topic) = private_broker_with_topic(2).await;
    let brokers = broker.bootstrap();
    let mut ingress = Ingress::start(&brokers, &topic, "3s").await;
    assert_eq!(ingress.post(&batch(1, 1)).await.status(), 200);

    // With the broker gone, a request stays in flight until the produce bound fires.
    broker.stop();
    let url = ingress.url.clone();
    let in_flight = tokio::spawn({
        let body = batch(3, 2);
        async move {
            wapipe_testkit::signed_meta_post(
                &reqwest::Client::new(),
                &format!("{url}/webhook"),
                SECRET,
                body,
            )
            .send()
            .await
        }
    });
    let metrics_url = format!("{}/metrics", ingress.admin_url);
    loop {
        let metrics = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("wapipe_ingress_in_flight_requests 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Shutdown while it is in flight: it still gets a real answer, not a reset connection.
    let _ = ingress.stop.take().unwrap().send(());
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 503);
    ingress.task.await.expect("the ingress stops cleanly");
    assert!(
        reqwest::get(format!("{}/healthz", ingress.admin_url))
            .await
            .is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_stop_signal_new_connections_are_served_for_the_delay_then_refused() {
    // A rolling update behind a Service: the old pod gets SIGTERM before every proxy has
    // dropped it, so connections keep arriving for a moment. They are answered (readiness
    // already says 503, which takes the pod out of the endpoints), then the listener closes.
    let (broker, topic) = private_broker_with_topic(1).await;
    let brokers = broker.bootstrap();
    let mut ingress =
        Ingress::start_with(&brokers, &topic, "3s", &["--shutdown-delay", "5s"]).await;
    assert_eq!(ingress.post(&batch(1, 1)).await.status(), 200);

    let _ = ingress.stop.take().unwrap().send(());
    let mut ready = reqwest::get(format!("{}/readyz", ingress.admin_url))
        .await
        .unwrap()
        .status();
    while ready == 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        ready = reqwest::get(format!("{}/readyz", ingress.admin_url))
            .await
            .unwrap()
            .status();
    }
    assert_eq!(ready, 503, "readiness fails once stopping");
    // A fresh client: a new connection, as a proxy that has not caught up would open.
    let late = wapipe_testkit::signed_meta_post(
        &reqwest::Client::new(),
        &format!("{}/webhook", ingress.url),
        SECRET,
        batch(2, 1),
    )
    .send()
    .await
    .expect("a new connection during the delay is accepted");
    assert_eq!(late.status(), 200);
    ingress.task.await.expect("the ingress stops cleanly");
    for url in [
        format!("{}/healthz", ingress.admin_url),
        format!("{}/webhook", ingress.url),
    ] {
        assert!(
            reqwest::get(&url).await.is_err(),
            "no new connections once the delay is over: {url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_port_serves_only_the_webhook_and_the_admin_port_health_and_metrics() {
    // Served as the binary serves them, over TCP. No broker is needed: nothing is produced,
    // and readiness only says the broker is unreachable.
    let mut ingress = Ingress::start("127.0.0.1:1", "raw", "1s").await;
    let status = |url: String| async move {
        reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .status()
            .as_u16()
    };
    for path in ["/metrics", "/readyz", "/healthz"] {
        assert_eq!(
            status(format!("{}{path}", ingress.url)).await,
            404,
            "public {path}"
        );
    }
    assert_eq!(status(format!("{}/metrics", ingress.admin_url)).await, 200);
    assert_eq!(status(format!("{}/healthz", ingress.admin_url)).await, 200);
    assert_eq!(status(format!("{}/readyz", ingress.admin_url)).await, 503);
    let metrics = metrics_of(&ingress).await;
    assert!(
        metrics.contains("wapipe_ingress_requests_total"),
        "{metrics}"
    );
    // The handshake is on the public port, and not on the admin one.
    let handshake = "/webhook?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1";
    assert_eq!(status(format!("{}{handshake}", ingress.url)).await, 403);
    assert_eq!(
        status(format!("{}{handshake}", ingress.admin_url)).await,
        404
    );

    // A graceful stop closes both listeners.
    let _ = ingress.stop.take().unwrap().send(());
    ingress.task.await.expect("the ingress stops cleanly");
    for url in [&ingress.url, &ingress.admin_url] {
        assert!(
            reqwest::get(format!("{url}/healthz")).await.is_err(),
            "{url} closed"
        );
    }
}

/// A POST whose headers announce a 3 MB body, of which it sends a few bytes and then, if
/// `trickle`, one more byte every 200 ms (else nothing). `sent` hears once the headers are out.
async fn slow_body(addr: String, trickle: bool, sent: tokio::sync::mpsc::Sender<()>) -> Ended {
    use tokio::io::AsyncWriteExt;
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = post_head(&addr, 3_000_000) + "{\"object\":";
    writer.write_all(head.as_bytes()).await.expect("send head");
    let _ = sent.send(()).await;
    let drip = async move {
        if trickle {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            loop {
                every.tick().await;
                if writer.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
        // Keep the write half, and so the connection, open until the ingress ends it.
        std::future::pending::<()>().await;
        drop(writer);
    };
    tokio::select! {
        ended = status_or_close(&mut reader) => ended,
        _ = drip => unreachable!("dripping never ends by itself"),
    }
}

/// A connection that sends the start of a request's headers and never the rest.
async fn stalled_headers(addr: String, sent: tokio::sync::mpsc::Sender<()>) -> Ended {
    use tokio::io::AsyncWriteExt;
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(format!("POST /webhook HTTP/1.1\r\nhost: {addr}\r\n").as_bytes())
        .await
        .expect("send part of the head");
    let _ = sent.send(()).await;
    let ended = status_or_close(&mut reader).await;
    drop(writer);
    ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_unsigned_connections_are_cut_off_while_signed_webhooks_still_get_200() {
    // Slow clients must not starve the ones that sign: a request holds a produce permit only
    // once its signature is verified, and an unverified one waits in the read stage, bounded
    // in count, bytes and time. 64 slow bodies outnumber both the 32 permits and the 48 reads;
    // the header and body timeouts are the defaults.
    const SLOW_BODIES: usize = 64;
    const STALLED_HEADERS: usize = 32;
    const SIGNED: usize = 20;
    const READS: usize = 48;
    let (brokers, _broker) = wapipe_testkit::broker().expect("a broker");
    let topic = unique_name("raw");
    create_topic(&brokers, &topic, 2).await.unwrap();
    let reads = READS.to_string();
    let ingress = Ingress::start_with(
        &brokers,
        &topic,
        "10s",
        &["--max-in-flight", "32", "--max-body-reads", &reads],
    )
    .await;
    let addr = ingress.url.trim_start_matches("http://").to_string();

    let (sent, mut heads) = tokio::sync::mpsc::channel(SLOW_BODIES + STALLED_HEADERS);
    let slow: Vec<_> = (0..SLOW_BODIES)
        .map(|i| tokio::spawn(slow_body(addr.clone(), i % 2 == 0, sent.clone())))
        .collect();
    let stalled: Vec<_> = (0..STALLED_HEADERS)
        .map(|_| tokio::spawn(stalled_headers(addr.clone(), sent.clone())))
        .collect();
    drop(sent);
    for _ in 0..SLOW_BODIES + STALLED_HEADERS {
        heads
            .recv()
            .await
            .expect("every slow client sends its head");
    }
    // The slow bodies fill the read stage, and none of them holds a produce permit.
    let mut during = metrics_of(&ingress).await;
    for _ in 0..200 {
        if sample(&during, "wapipe_ingress_body_reads") == READS as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        during = metrics_of(&ingress).await;
    }
    assert_eq!(
        sample(&during, "wapipe_ingress_body_reads"),
        READS as f64,
        "{during}"
    );
    assert_eq!(
        sample(&during, "wapipe_ingress_in_flight_requests"),
        0.0,
        "{during}"
    );

    let mut statuses = Vec::new();
    for i in 0..SIGNED {
        let body = batch(1, 1).replace("wamid.", &format!("wamid.signed{i}."));
        statuses.push(ingress.post(&body).await.status().as_u16());
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "signed webhooks among slow clients were answered {statuses:?}\n{during}"
    );

    let bound = Duration::from_secs(60);
    for task in slow {
        let ended = tokio::time::timeout(bound, task)
            .await
            .expect("a slow body is cut off")
            .unwrap();
        assert!(
            matches!(ended, Ended::Answered(408) | Ended::Closed),
            "{ended:?}"
        );
    }
    for task in stalled {
        let ended = tokio::time::timeout(bound, task)
            .await
            .expect("a connection without complete headers is closed")
            .unwrap();
        assert_eq!(ended, Ended::Closed);
    }

    let after = metrics_of(&ingress).await;
    let cut_off = sample(
        &after,
        r#"wapipe_ingress_requests_total{outcome="body_timeout"}"#,
    ) + sample(
        &after,
        r#"wapipe_ingress_requests_total{outcome="body_evicted"}"#,
    );
    assert_eq!(cut_off, SLOW_BODIES as f64, "{after}");
    assert!(
        sample(&after, "wapipe_ingress_header_timeouts_total") >= STALLED_HEADERS as f64,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"wapipe_ingress_requests_total{outcome="overloaded"}"#
        ),
        0.0,
        "{after}"
    );
    assert_eq!(sample(&after, "wapipe_ingress_body_read_bytes"), 0.0);
    ingress.shutdown().await;

    let records = tokio::task::spawn_blocking(move || consume(&brokers, &topic, SIGNED))
        .await
        .unwrap();
    assert_eq!(records.len(), SIGNED);
    assert!(records
        .iter()
        .all(|r| r.headers[HEADER_MESSAGE_ID].starts_with("wamid.signed")));
}

/// Swaps a kubelet-style Secret directory to `keys`: a new timestamped directory, `..data`
/// pointed at it by a rename, then the keys' symlinks added and removed.
fn kubelet_swap(dir: &std::path::Path, generation: u32, keys: &[(&str, &str)]) {
    let data = dir.join(format!("..gen_{generation}"));
    std::fs::create_dir(&data).unwrap();
    for (key, value) in keys {
        std::fs::write(data.join(key), value).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (key, _) in keys {
        let link = dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{key}"), &link).unwrap();
        }
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !keys.iter().any(|(key, _)| *key == name) {
            std::fs::remove_file(dir.join(&name)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_secret_under_steady_signed_load_answers_no_request_but_200() {
    let (broker, topic) = private_broker_with_topic(1).await;
    let brokers = broker.bootstrap();
    let secrets = tempfile::tempdir().unwrap();
    kubelet_swap(secrets.path(), 1, &[("old", "old-secret")]);
    let dir = secrets.path().to_str().unwrap().to_string();
    let ingress = Ingress::start_with(
        &brokers,
        &topic,
        "5s",
        &[
            "--app-secret-dir",
            &dir,
            "--secret-reload-interval",
            "200ms",
        ],
    )
    .await;
    let mut ready = false;
    for _ in 0..100 {
        if reqwest::get(format!("{}/readyz", ingress.admin_url))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the ingress became ready");

    let signing_key = std::sync::Arc::new(std::sync::Mutex::new("old-secret".to_string()));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn({
        let (url, key) = (ingress.url.clone(), signing_key.clone());
        async move {
            let client = reqwest::Client::new();
            let (mut sent, mut refused) = (0u64, Vec::new());
            while !*stopped.borrow_and_update() {
                let body = batch(1, 1);
                let secret = key.lock().unwrap().clone();
                let status = wapipe_testkit::signed_meta_post(
                    &client,
                    &format!("{url}/webhook"),
                    &secret,
                    body,
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
                sent += 1;
                if status != 200 {
                    refused.push(status);
                }
            }
            (sent, refused)
        }
    });
    let loaded = |name: &'static str, want: f64| {
        let ingress = &ingress;
        async move {
            for _ in 0..100 {
                let metrics = metrics_of(ingress).await;
                let series =
                    format!("wapipe_ingress_secrets{{kind=\"signing\",secret=\"{name}\"}}");
                if sample(&metrics, &series) == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{name} never showed {want}");
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 1. The Secret gains the new key.
    kubelet_swap(
        secrets.path(),
        2,
        &[("old", "old-secret"), ("new", "new-secret")],
    );
    loaded("new", 1.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 2. The sender switches.
    *signing_key.lock().unwrap() = "new-secret".to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // 3. The old key is removed.
    kubelet_swap(secrets.path(), 3, &[("new", "new-secret")]);
    loaded("old", 0.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(true);
    let (sent, refused) = load.await.unwrap();
    println!(
        "rotation under load: {sent} requests, {} not 200 ({refused:?})",
        refused.len()
    );
    assert!(sent > 0);
    assert!(refused.is_empty(), "{refused:?}");
    let body = batch(1, 1);
    let stale = wapipe_testkit::signed_meta_post(
        &reqwest::Client::new(),
        &format!("{}/webhook", ingress.url),
        "old-secret",
        body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(stale.status(), 401);
    ingress.shutdown().await;
}
