//! The ingress against Apache Kafka (a private broker where the test stops and starts it
//! again, or needs settings of its own; the shared one otherwise).

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use wapipe_core::record::{
    HEADER_BODY_SHA256, HEADER_KIND, HEADER_MESSAGE_ID, HEADER_PROVIDER, HEADER_RECEIVED_AT,
};
use wapipe_core::signature::body_sha256;
use wapipe_ingress::{server, Config};
use wapipe_testkit::{create_topic, create_topic_with, free_port, unique_name, Kafka};

const SECRET: &str = "integration-secret";

/// A POST with `senders` users, `per_sender` text messages each, interleaved as Meta batches
/// them: message i of every sender before message i+1 of any.
fn batch(senders: usize, per_sender: usize) -> String {
    let mut messages = Vec::new();
    for i in 0..per_sender {
        for s in 0..senders {
            messages.push(format!(
                r#"{{"from":"5215500000{s:03}","id":"wamid.{s}.{i}","timestamp":"1767000000","type":"text","text":{{"body":"m{i}"}}}}"#
            ));
        }
    }
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"phone_number_id":"106540352242922"}},"messages":[{}]}}}}]}}]}}"#,
        messages.join(",")
    )
}

struct Ingress {
    /// The public port: the webhook only.
    url: String,
    /// The admin port: `/healthz`, `/readyz`, `/metrics`.
    admin_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Ingress {
    async fn start(brokers: &str, topic: &str, produce_timeout: &str) -> Ingress {
        Ingress::start_with(brokers, topic, produce_timeout, &[]).await
    }

    async fn start_with(
        brokers: &str,
        topic: &str,
        produce_timeout: &str,
        extra: &[&str],
    ) -> Ingress {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let admin_port = free_port();
        let admin_listen = format!("127.0.0.1:{admin_port}");
        let mut args = vec![
            "wapipe-ingress",
            "--listen",
            &listen,
            "--admin-listen",
            &admin_listen,
            "--app-secret",
            SECRET,
            "--topic",
            topic,
            "--kafka-brokers",
            brokers,
            "--produce-timeout",
            produce_timeout,
            "--readiness-interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::run(config, async {
                let _ = stopped.await;
            })
            .await
            .expect("ingress runs");
        });
        let url = format!("http://127.0.0.1:{port}");
        let admin_url = format!("http://127.0.0.1:{admin_port}");
        let client = reqwest::Client::new();
        // Both listeners are bound before either serves: the admin port answering means the
        // public one is open too.
        for _ in 0..100 {
            if client
                .get(format!("{admin_url}/healthz"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ingress {
            url,
            admin_url,
            stop: Some(stop),
            task,
        }
    }

    async fn post(&self, body: &str) -> reqwest::Response {
        wapipe_testkit::signed_meta_post(
            &reqwest::Client::new(),
            &format!("{}/webhook", self.url),
            SECRET,
            body,
        )
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the ingress answers")
    }

    /// Posts a small batch every half second until one is answered 200 (up to 60 tries).
    async fn posts_until_ok(&self) -> bool {
        for _ in 0..60 {
            if self.post(&batch(2, 1)).await.status() == 200 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("ingress task ends cleanly");
    }
}

struct Consumed {
    key: String,
    partition: i32,
    headers: HashMap<String, String>,
    value_len: usize,
}

fn consume(brokers: &str, topic: &str, expected: usize) -> Vec<Consumed> {
    consume_until(brokers, topic, |seen| seen.len() >= expected)
}

/// Reads `topic` from the start until `done` says so (or a minute passes).
fn consume_until(brokers: &str, topic: &str, done: impl Fn(&[Consumed]) -> bool) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("ingress-test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done(&out) && std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.expect("consume");
        let mut headers = HashMap::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                headers.insert(
                    header.key.to_string(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        out.push(Consumed {
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            partition: message.partition(),
            headers,
            value_len: message.payload().map_or(0, <[u8]>::len),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_splits_into_keyed_records_and_broker_outage_answers_503_then_recovers() {
    let mut broker = Kafka::start().expect("kafka starts");
    let brokers = broker.bootstrap();
    let topic = unique_name("raw");
    create_topic(&brokers, &topic, 4).await.unwrap();
    let ingress = Ingress::start(&brokers, &topic, "2s").await;

    // 1. A batch with several senders becomes one record per event.
    let (senders, per_sender) = (6, 5);
    let body = batch(senders, per_sender);
    let response = ingress.post(&body).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    let records = tokio::task::spawn_blocking({
        let (brokers, topic) = (brokers.clone(), topic.clone());
        move || consume(&brokers, &topic, senders * per_sender)
    })
    .await
    .unwrap();
    assert_eq!(records.len(), senders * per_sender);
    let digest = body_sha256(body.as_bytes());
    let mut partition_of: HashMap<&str, i32> = HashMap::new();
    let mut order: HashMap<&str, Vec<usize>> = HashMap::new();
    for record in &records {
        // Each key on exactly one partition.
        let partition = *partition_of.entry(&record.key).or_insert(record.partition);
        assert_eq!(
            partition, record.partition,
            "key {} split across partitions",
            record.key
        );
        assert_eq!(record.headers[HEADER_PROVIDER], "meta");
        assert_eq!(record.headers[HEADER_KIND], "message");
        assert_eq!(record.headers[HEADER_BODY_SHA256], digest);
        assert!(record.headers[HEADER_RECEIVED_AT].parse::<u64>().unwrap() > 1_700_000_000_000);
        let wamid = &record.headers[HEADER_MESSAGE_ID];
        let i: usize = wamid.rsplit('.').next().unwrap().parse().unwrap();
        order.entry(&record.key).or_default().push(i);
    }
    assert_eq!(order.len(), senders);
    for (key, sequence) in order {
        // Per user, the records are in the order of the POST.
        assert_eq!(
            sequence,
            (0..per_sender).collect::<Vec<_>>(),
            "order of {key}"
        );
    }

    // 2. Broker stopped: 503 with Retry-After, within the produce bound (not asserted as a
    // wall-clock time: the answer itself proves the bound fired, since Kafka never acked).
    broker.stop();
    let response = ingress.post(&batch(2, 1)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());

    // 3. Broker back: 200 again, same ingress process.
    broker.restart().expect("kafka restarts");
    let recovered = ingress.posts_until_ok().await;
    assert!(
        recovered,
        "the ingress never answered 200 after the broker came back"
    );
    ingress.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_in_flight_request_finish_and_then_stops() {
    let mut broker = Kafka::start().expect("kafka starts");
    let brokers = broker.bootstrap();
    let topic = unique_name("raw");
    create_topic(&brokers, &topic, 2).await.unwrap();
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
    let broker = Kafka::start().expect("kafka starts");
    let brokers = broker.bootstrap();
    let topic = unique_name("raw");
    create_topic(&brokers, &topic, 1).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_answered_503_leaves_no_record_behind_and_the_producer_recovers_by_itself() {
    // Records are queued no longer than their request waits (message.timeout.ms = the produce
    // timeout): when the broker comes back, nothing of a POST answered 503 is delivered late,
    // ahead of or behind the provider's retry. The idempotent producer whose records timed out
    // locally recovers on its own (Kafka bumps its epoch); nothing is rebuilt.
    let mut broker = Kafka::start().expect("kafka starts");
    let brokers = broker.bootstrap();
    let topic = unique_name("raw");
    create_topic(&brokers, &topic, 4).await.unwrap();
    let ingress = Ingress::start(&brokers, &topic, "2s").await;
    assert_eq!(ingress.post(&batch(6, 5)).await.status(), 200);

    broker.stop();
    let refused = batch(3, 4).replace("wamid.", "wamid.refused.");
    for _ in 0..3 {
        assert_eq!(ingress.post(&refused).await.status(), 503);
    }
    broker.restart().expect("kafka restarts");
    let recovered = ingress.posts_until_ok().await;
    assert!(recovered, "the producer never acknowledged again");
    // A marker after the recovery: once it is read, everything produced before it has been.
    let marker = batch(1, 1).replace("wamid.", "wamid.marker.");
    assert_eq!(ingress.post(&marker).await.status(), 200);
    ingress.shutdown().await;

    let records = tokio::task::spawn_blocking({
        let (brokers, topic) = (brokers.clone(), topic.clone());
        move || {
            consume_until(&brokers, &topic, |seen| {
                seen.iter()
                    .any(|r| r.headers[HEADER_MESSAGE_ID].starts_with("wamid.marker."))
            })
        }
    })
    .await
    .unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.headers[HEADER_MESSAGE_ID].starts_with("wamid.marker.")),
        "the marker was never read"
    );
    let late: Vec<&String> = records
        .iter()
        .map(|r| &r.headers[HEADER_MESSAGE_ID])
        .filter(|id| id.starts_with("wamid.refused."))
        .collect();
    assert!(
        late.is_empty(),
        "records of a 503 were delivered later: {late:?}"
    );
}

/// How a connection that misbehaves on purpose ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The ingress answered with this status.
    Answered(u16),
    /// The ingress closed the connection without an answer.
    Closed,
}

/// Reads the status of the first answer on `reader`, or notes that the connection closed.
async fn status_or_close(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Ended {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() >= 12 {
            break;
        }
    }
    // "HTTP/1.1 408 ..."
    match std::str::from_utf8(head.get(9..12).unwrap_or_default()).map(str::parse::<u16>) {
        Ok(Ok(status)) => Ended::Answered(status),
        _ => Ended::Closed,
    }
}

/// The head of a POST to `/webhook` announcing `content_length` bytes, with a signature that
/// matches nothing.
fn post_head(addr: &str, content_length: usize) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-hub-signature-256: sha256={}\r\ncontent-length: {content_length}\r\n\r\n",
        "0".repeat(64)
    )
}

/// `len` letters and digits that no compressor shrinks much (xorshift, fixed seed).
fn noise(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_body_of_two_and_a_half_megabytes_lands_and_a_larger_than_the_limit_is_413() {
    // Meta sends bodies up to 3 MB; Kafka's default record limit is about 1 MB. The ingress's
    // producer allows its body limit plus the record overhead, and wapipe's topics are created
    // with max.message.bytes to match (here as the operator and `wapipe up` create them).
    let (brokers, _broker) = wapipe_testkit::broker().expect("a broker");
    let topic = unique_name("raw");
    let limit = (3 * 1024 * 1024 + 64 * 1024).to_string();
    create_topic_with(&brokers, &topic, 2, &[("max.message.bytes", &limit)])
        .await
        .unwrap();
    let ingress = Ingress::start(&brokers, &topic, "10s").await;

    let text = noise(2_500_000);
    let big = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"phone_number_id":"106540352242922"}},"messages":[{{"from":"5215500000999","id":"wamid.big","timestamp":"1767000000","type":"text","text":{{"body":"{text}"}}}}]}}}}]}}]}}"#
    );
    let response = ingress.post(&big).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let records = tokio::task::spawn_blocking({
        let (brokers, topic) = (brokers.clone(), topic.clone());
        move || consume(&brokers, &topic, 1)
    })
    .await
    .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].headers[HEADER_MESSAGE_ID], "wamid.big");
    assert!(records[0].value_len > 2_500_000, "{}", records[0].value_len);

    // Refused on its Content-Length, before the body is sent: a client still writing the body
    // would race the ingress closing the connection (reqwest then reports a broken pipe, not
    // the answer).
    let addr = ingress.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = post_head(addr, big.len() + 3 * 1024 * 1024);
    tokio::io::AsyncWriteExt::write_all(&mut writer, head.as_bytes())
        .await
        .expect("send head");
    assert_eq!(status_or_close(&mut reader).await, Ended::Answered(413));
    ingress.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_a_smaller_record_limit_answers_413_naming_the_setting_not_503() {
    // A body the ingress accepts but the topic refuses can never succeed: retrying (503) would
    // keep the provider sending it for days. The answer names the setting to raise.
    let (brokers, _broker) = wapipe_testkit::broker().expect("a broker");
    let topic = unique_name("raw");
    create_topic_with(&brokers, &topic, 1, &[("max.message.bytes", "100000")])
        .await
        .unwrap();
    let ingress = Ingress::start(&brokers, &topic, "10s").await;
    // Incompressible text: the producer compresses batches (lz4), and a repeated letter would
    // shrink below any limit.
    let text = noise(500_000);
    let body = batch(1, 1).replace("\"m0\"", &format!("\"{text}\""));
    let response = ingress.post(&body).await;
    assert_eq!(response.status(), 413);
    assert!(response.text().await.unwrap().contains("max.message.bytes"));
    ingress.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_that_weaken_a_200_are_refused_at_startup() {
    for option in [
        "acks=1",
        "enable.idempotence=false",
        "message.timeout.ms=300000",
    ] {
        let config = Config::try_parse_from([
            "wapipe-ingress",
            "--app-secret",
            SECRET,
            "--topic",
            "t",
            "--kafka-brokers",
            "127.0.0.1:1",
            "--kafka-option",
            option,
        ])
        .unwrap();
        let error = server::run(config, async {}).await.unwrap_err().to_string();
        let key = option.split('=').next().unwrap();
        assert!(error.contains(key) && error.contains("refused"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_asks_for_its_topic_without_creating_it_then_is_200_once_it_exists() {
    // A broker that does create topics on request (the broker default): the readiness probe
    // asks for the ingress's own topic by name, and must not bring it into being.
    let broker = Kafka::start_with(&[("auto.create.topics.enable", "true")]).expect("kafka starts");
    let brokers = broker.bootstrap();
    let topic = unique_name("not-yet");
    let ingress = Ingress::start(&brokers, &topic, "2s").await;
    let ready = || async {
        reqwest::get(format!("{}/readyz", ingress.admin_url))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    // Several probe intervals pass without the topic: not ready, and the topic still absent.
    for _ in 0..10 {
        assert_eq!(ready().await, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = tokio::task::spawn_blocking({
        let (brokers, topic) = (brokers.clone(), topic.clone());
        move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .unwrap();
            let metadata = consumer
                .fetch_metadata(None, Duration::from_secs(5))
                .unwrap();
            metadata.topics().iter().any(|t| t.name() == topic)
        }
    })
    .await
    .unwrap();
    assert!(!listed, "the readiness probe created the topic");

    create_topic(&brokers, &topic, 2).await.unwrap();
    let mut became_ready = false;
    for _ in 0..100 {
        if ready().await == 200 {
            became_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(became_ready, "never ready after the topic was created");
    ingress.shutdown().await;
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

async fn metrics_of(ingress: &Ingress) -> String {
    reqwest::get(format!("{}/metrics", ingress.admin_url))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the sample `name` (with its labels, if any) in a `/metrics` text; 0 if absent.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
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
    let broker = Kafka::start().expect("kafka starts");
    let brokers = broker.bootstrap();
    let topic = unique_name("raw");
    create_topic(&brokers, &topic, 1).await.unwrap();
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
