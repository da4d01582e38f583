//! The ingress against Apache Kafka (a private broker where the test stops and starts it
//! again, or needs settings of its own; the shared one otherwise): records, keys and headers,
//! a broker outage, body and record limits, startup options and readiness. Shutdown, the two
//! ports, slow connections and secret rotation are in `serving.rs`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use wapipe_core::record::{
    HEADER_BODY_SHA256, HEADER_KIND, HEADER_MESSAGE_ID, HEADER_PROVIDER, HEADER_RECEIVED_AT,
};
use wapipe_core::signature::body_sha256;
use wapipe_ingress::{server, Config};
use wapipe_testkit::{create_topic, create_topic_with, unique_name, Kafka};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_splits_into_keyed_records_and_broker_outage_answers_503_then_recovers() {
    let (mut broker, topic) = private_broker_with_topic(4).await;
    let brokers = broker.bootstrap();
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
async fn a_request_answered_503_leaves_no_record_behind_and_the_producer_recovers_by_itself() {
    // Records are queued no longer than their request waits (message.timeout.ms = the produce
    // timeout): when the broker comes back, nothing of a POST answered 503 is delivered late,
    // ahead of or behind the provider's retry. The idempotent producer whose records timed out
    // locally recovers on its own (Kafka bumps its epoch); nothing is rebuilt.
    let (mut broker, topic) = private_broker_with_topic(4).await;
    let brokers = broker.bootstrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_request_marks_the_ingress_ready_before_the_next_metadata_check() {
    // After a broker restart the periodic check lags; a pod that acknowledges must not be
    // reported unready meanwhile (the kubelet would take it out of its Service). The check runs
    // once at start, before the topic exists, and not again for an hour.
    let (brokers, _broker) = wapipe_testkit::broker().expect("a broker");
    let topic = unique_name("ready-by-delivery");
    let ingress =
        Ingress::start_with(&brokers, &topic, "2s", &["--readiness-interval", "1h"]).await;
    let readyz = || async {
        reqwest::get(format!("{}/readyz", ingress.admin_url))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(readyz().await, 503, "ready before its topic exists");

    create_topic(&brokers, &topic, 2).await.unwrap();
    assert!(ingress.posts_until_ok().await, "never answered 200");
    assert_eq!(
        readyz().await,
        200,
        "acknowledged a request yet reports unready"
    );
    ingress.shutdown().await;
}
