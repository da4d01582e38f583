//! Shared by the ingress's broker tests: an ingress served in-process against a broker, a
//! consumer of what it produced, Meta-shaped batches, and connections that misbehave on purpose.
#![allow(dead_code)] // not every test file uses every helper

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use wapipe_ingress::{server, Config};
use wapipe_testkit::{create_topic, free_port, unique_name, Kafka};

pub const SECRET: &str = "integration-secret";

/// A private broker (for a test that stops it, or must not share it) and a fresh raw topic of
/// `partitions` on it.
pub async fn private_broker_with_topic(partitions: i32) -> (Kafka, String) {
    let broker = Kafka::start().expect("kafka starts");
    let topic = unique_name("raw");
    create_topic(&broker.bootstrap(), &topic, partitions)
        .await
        .unwrap();
    (broker, topic)
}

/// A POST with `senders` users, `per_sender` text messages each, interleaved as Meta batches
/// them: message i of every sender before message i+1 of any.
pub fn batch(senders: usize, per_sender: usize) -> String {
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

pub struct Ingress {
    /// The public port: the webhook only.
    pub url: String,
    /// The admin port: `/healthz`, `/readyz`, `/metrics`.
    pub admin_url: String,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Ingress {
    pub async fn start(brokers: &str, topic: &str, produce_timeout: &str) -> Ingress {
        Ingress::start_with(brokers, topic, produce_timeout, &[]).await
    }

    pub async fn start_with(
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
        ];
        if !extra.contains(&"--readiness-interval") {
            args.extend_from_slice(&["--readiness-interval", "200ms"]);
        }
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

    pub async fn post(&self, body: &str) -> reqwest::Response {
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
    pub async fn posts_until_ok(&self) -> bool {
        for _ in 0..60 {
            if self.post(&batch(2, 1)).await.status() == 200 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("ingress task ends cleanly");
    }
}

pub struct Consumed {
    pub key: String,
    pub partition: i32,
    pub headers: HashMap<String, String>,
    pub value_len: usize,
}

pub fn consume(brokers: &str, topic: &str, expected: usize) -> Vec<Consumed> {
    consume_until(brokers, topic, |seen| seen.len() >= expected)
}

/// Reads `topic` from the start until `done` says so (or a minute passes).
pub fn consume_until(
    brokers: &str,
    topic: &str,
    done: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
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

/// How a connection that misbehaves on purpose ended.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// The ingress answered with this status.
    Answered(u16),
    /// The ingress closed the connection without an answer.
    Closed,
}

/// Reads the status of the first answer on `reader`, or notes that the connection closed.
pub async fn status_or_close(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Ended {
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
pub fn post_head(addr: &str, content_length: usize) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-hub-signature-256: sha256={}\r\ncontent-length: {content_length}\r\n\r\n",
        "0".repeat(64)
    )
}

/// `len` letters and digits that no compressor shrinks much (xorshift, fixed seed).
pub fn noise(len: usize) -> String {
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

pub async fn metrics_of(ingress: &Ingress) -> String {
    reqwest::get(format!("{}/metrics", ingress.admin_url))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the sample `name` (with its labels, if any) in a `/metrics` text; 0 if absent.
pub fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
}
