//! The ingress against a real Kafka-protocol broker (Tansu, private to this test so it can be
//! stopped and started again).

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use wapipe_core::record::{
    HEADER_BODY_SHA256, HEADER_KIND, HEADER_MESSAGE_ID, HEADER_PROVIDER, HEADER_RECEIVED_AT,
};
use wapipe_core::signature::{body_sha256, sign_meta};
use wapipe_ingress::{server, Config};
use wapipe_testkit::{create_topic, free_port, unique_name, Tansu};

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
    url: String,
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
        let mut args = vec![
            "wapipe-ingress",
            "--listen",
            &listen,
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
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(format!("{url}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ingress {
            url,
            stop: Some(stop),
            task,
        }
    }

    async fn post(&self, body: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/webhook", self.url))
            .header(
                "x-hub-signature-256",
                sign_meta(SECRET.as_bytes(), body.as_bytes()),
            )
            .body(body.to_string())
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
}

fn consume(brokers: &str, topic: &str, expected: usize) -> Vec<Consumed> {
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
    while out.len() < expected && std::time::Instant::now() < deadline {
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
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_splits_into_keyed_records_and_broker_outage_answers_503_then_recovers() {
    let mut broker = Tansu::start().expect("tansu starts");
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
    broker.restart().expect("tansu restarts");
    let recovered = ingress.posts_until_ok().await;
    assert!(
        recovered,
        "the ingress never answered 200 after the broker came back"
    );
    ingress.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_in_flight_request_finish_and_then_stops() {
    let mut broker = Tansu::start().expect("tansu starts");
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
            reqwest::Client::new()
                .post(format!("{url}/webhook"))
                .header(
                    "x-hub-signature-256",
                    sign_meta(SECRET.as_bytes(), body.as_bytes()),
                )
                .body(body)
                .send()
                .await
        }
    });
    let metrics_url = format!("{}/metrics", ingress.url);
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
        reqwest::get(format!("{}/healthz", ingress.url))
            .await
            .is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_stuck_after_local_message_timeouts_is_rebuilt_and_recovers() {
    // Records that time out inside librdkafka leave an idempotent producer that has already
    // produced needing an epoch bump Tansu cannot give: without the rebuild this producer never
    // acknowledges again (checked: with --producer-stuck-after 1h this test fails).
    let mut broker = Tansu::start().expect("tansu starts");
    let brokers = broker.bootstrap();
    let topic = unique_name("raw");
    create_topic(&brokers, &topic, 4).await.unwrap();
    let ingress = Ingress::start_with(
        &brokers,
        &topic,
        "2s",
        &[
            "--producer-message-timeout",
            "2s",
            "--producer-stuck-after",
            "3s",
        ],
    )
    .await;
    assert_eq!(ingress.post(&batch(6, 5)).await.status(), 200);

    broker.stop();
    for _ in 0..3 {
        assert_eq!(ingress.post(&batch(2, 1)).await.status(), 503);
    }
    broker.restart().expect("tansu restarts");
    let recovered = ingress.posts_until_ok().await;
    assert!(recovered, "the stuck producer was never rebuilt");
    ingress.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_until_the_topic_exists_then_200() {
    let (brokers, _broker) = wapipe_testkit::broker().expect("a broker");
    let topic = unique_name("not-yet");
    let ingress = Ingress::start(&brokers, &topic, "2s").await;
    let ready = || async {
        reqwest::get(format!("{}/readyz", ingress.url))
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
    // Tansu never auto-creates topics on a metadata request, so this guards only the
    // brokers that do (Apache Kafka with auto.create.topics.enable): the probe asks for all
    // topics, never for ours by name.
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
