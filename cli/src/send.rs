//! `wapipe send`: posts signed, realistic webhooks at a chosen rate and concurrency to any
//! ingress and reports what came back. Benchmarks use it as their load generator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use wapipe_core::signature::sign_meta;
use wapipe_core::Provider;

use crate::payloads::Generator;

#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// Webhook URL of the ingress.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhook")]
    pub url: String,
    /// Provider whose payloads and signature to use: meta or wasender.
    #[arg(long, default_value = "meta")]
    pub provider: Provider,
    /// The app secret (Meta) or webhook secret (WASender) the ingress verifies with.
    #[arg(long, env = wapipe_core::env::APP_SECRET, hide_env_values = true)]
    pub secret: String,
    /// Requests sent at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Total requests per second across all connections; unlimited when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How many requests to send.
    #[arg(long, default_value_t = 1000)]
    pub requests: u64,
    /// Events per POST (Meta batches up to 1000).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Distinct users the events are spread over.
    #[arg(long, default_value_t = 100)]
    pub users: u64,
    /// Tag put into message ids, so runs never collide; random when absent.
    #[arg(long)]
    pub run_id: Option<String>,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
}

/// What a run of `send` saw.
#[derive(Debug, Default)]
pub struct Report {
    pub statuses: BTreeMap<String, u64>,
    pub events_acknowledged: u64,
    /// Events sent in requests answered 200.
    pub events_sent_ok: u64,
    /// Requests answered 200 whose `{"events":N}` differed from the events the POST carried.
    pub event_count_mismatches: u64,
    /// One response body per status other than 200, to show why.
    pub samples: BTreeMap<String, String>,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Report {
    pub fn requests(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn ok(&self) -> u64 {
        self.statuses.get("200").copied().unwrap_or(0)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }

    /// Every request answered 200: `wapipe send` exits 0, else 3.
    pub fn all_accepted(&self) -> bool {
        self.ok() == self.requests()
    }

    /// What `wapipe send -o json` prints: the same figures as [`Report::print`], latencies in
    /// milliseconds.
    pub fn to_json(&self) -> serde_json::Value {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ms = |p: f64| (self.percentile(p).as_secs_f64() * 1e5).round() / 100.0;
        serde_json::json!({
            "requests": self.requests(),
            "statuses": self.statuses,
            "answers": self.samples,
            "eventsAcknowledged": self.events_acknowledged,
            "eventsSentInAcceptedRequests": self.events_sent_ok,
            "eventCountMismatches": self.event_count_mismatches,
            "elapsedSeconds": self.elapsed.as_secs_f64(),
            "requestsPerSecond": (self.requests() as f64 / secs).round(),
            "eventsPerSecond": (self.events_acknowledged as f64 / secs).round(),
            "latencyMs": {"p50": ms(0.50), "p99": ms(0.99)},
            "allAccepted": self.all_accepted(),
        })
    }

    pub fn print(&self) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        println!("requests       {}", self.requests());
        for (status, count) in &self.statuses {
            println!("  {status:<12} {count}");
        }
        for (status, body) in &self.samples {
            println!("  {status} answer  {body}");
        }
        println!(
            "events         {} acknowledged by the ingress ({} sent in accepted requests{})",
            self.events_acknowledged,
            self.events_sent_ok,
            if self.event_count_mismatches > 0 {
                format!(
                    ", {} answers with another count",
                    self.event_count_mismatches
                )
            } else {
                String::new()
            }
        );
        println!("requests/s     {:.0}", self.requests() as f64 / secs);
        println!(
            "events/s       {:.0} (acknowledged)",
            self.events_acknowledged as f64 / secs
        );
        println!(
            "latency p50    {:.2} ms",
            self.percentile(0.50).as_secs_f64() * 1e3
        );
        println!(
            "latency p99    {:.2} ms",
            self.percentile(0.99).as_secs_f64() * 1e3
        );
    }
}

pub fn random_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("r{:x}", (nanos as u64) ^ u64::from(std::process::id()))
}

pub async fn send(args: &SendArgs) -> anyhow::Result<Report> {
    let run = args.run_id.clone().unwrap_or_else(random_run_id);
    let generator = Arc::new(Generator::new(args.provider, run, args.users, args.batch));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let remaining = Arc::new(std::sync::atomic::AtomicU64::new(args.requests));
    let pacer = args.rate.filter(|r| *r > 0.0).map(|rate| {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        Arc::new(Mutex::new(interval))
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, generator, remaining, pacer, args) = (
            client.clone(),
            generator.clone(),
            remaining.clone(),
            pacer.clone(),
            args.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut report = Report::default();
            loop {
                let left = remaining.fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                );
                if left.is_err() {
                    break;
                }
                if let Some(pacer) = &pacer {
                    pacer.lock().await.tick().await;
                }
                let payload = generator.next();
                let request = client
                    .post(&args.url)
                    .header("content-type", "application/json");
                let request = match args.provider {
                    Provider::Meta => request.header(
                        "x-hub-signature-256",
                        sign_meta(args.secret.as_bytes(), payload.body.as_bytes()),
                    ),
                    Provider::Wasender => request.header("x-webhook-signature", &args.secret),
                };
                let sent = Instant::now();
                let outcome = request.body(payload.body).send().await;
                report.latencies.push(sent.elapsed());
                let status = match outcome {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let retry_after = response
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .map(|v| format!(" (Retry-After: {v})"))
                            .unwrap_or_default();
                        let body = response.bytes().await.unwrap_or_default();
                        if status == 200 {
                            let answered = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["events"].as_u64());
                            report.events_sent_ok += payload.events as u64;
                            report.events_acknowledged += answered.unwrap_or(payload.events as u64);
                            if answered != Some(payload.events as u64) {
                                report.event_count_mismatches += 1;
                            }
                        } else {
                            report.samples.entry(status.to_string()).or_insert_with(|| {
                                let text = String::from_utf8_lossy(&body);
                                let text: String = text.chars().take(200).collect();
                                format!("{}{retry_after}", text.trim())
                            });
                        }
                        status.to_string()
                    }
                    Err(error) if error.is_timeout() => "timeout".to_string(),
                    Err(error) => {
                        report
                            .samples
                            .entry("connect-error".into())
                            .or_insert_with(|| error.to_string());
                        "connect-error".to_string()
                    }
                };
                *report.statuses.entry(status).or_default() += 1;
            }
            report
        }));
    }
    let mut total = Report::default();
    for task in tasks {
        let part = task.await?;
        for (status, count) in part.statuses {
            *total.statuses.entry(status).or_default() += count;
        }
        total.events_acknowledged += part.events_acknowledged;
        total.events_sent_ok += part.events_sent_ok;
        total.event_count_mismatches += part.event_count_mismatches;
        for (status, body) in part.samples {
            total.samples.entry(status).or_insert(body);
        }
        total.latencies.extend(part.latencies);
    }
    total.elapsed = started.elapsed();
    total.latencies.sort();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_report_has_the_printed_figures_and_says_whether_all_were_accepted() {
        let mut report = Report {
            statuses: BTreeMap::from([("200".to_string(), 3), ("503".to_string(), 1)]),
            events_acknowledged: 30,
            events_sent_ok: 30,
            samples: BTreeMap::from([("503".to_string(), "kafka unavailable".to_string())]),
            elapsed: Duration::from_secs(2),
            latencies: [1, 2, 3, 40].map(Duration::from_millis).to_vec(),
            ..Report::default()
        };
        let json = report.to_json();
        assert_eq!(json["requests"], 4);
        assert_eq!(json["statuses"]["503"], 1);
        assert_eq!(json["answers"]["503"], "kafka unavailable");
        assert_eq!(json["eventsPerSecond"], 15.0);
        assert_eq!(json["latencyMs"]["p99"], 40.0);
        assert_eq!(json["allAccepted"], false);
        report.statuses.remove("503");
        assert!(report.all_accepted());
    }
}
