//! The live view of `wapipe up`: one [`Snapshot`] per tick, drawn as a small table on a
//! terminal, as one line otherwise, and written as `status.json` in the state directory for
//! scripts and tests.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Lag and Burrow-style status of one partition.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct PartitionRow {
    pub partition: i32,
    pub lag: u64,
    pub status: String,
    /// Age of the oldest unconsumed record (0 without lag), when read.
    pub time_lag_secs: Option<u64>,
    /// Records/s committed since the previous poll.
    pub drain_rate: Option<f64>,
}

/// Process ids of everything `wapipe up` started.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Pids {
    pub broker: Option<u32>,
    pub ingress: Option<u32>,
    pub workers: Vec<u32>,
}

/// Everything the view shows at one tick.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    pub pipeline: String,
    /// How to send webhooks (it holds the secret, so it stays out of status.json).
    #[serde(skip)]
    pub hint: String,
    pub brokers: String,
    pub ingress_url: String,
    pub uptime_secs: u64,
    pub requests_per_sec: f64,
    pub events_per_sec: f64,
    pub requests_total: u64,
    pub failed_requests_total: u64,
    pub events_total: u64,
    pub total_lag: u64,
    /// Age of the oldest unconsumed record over every partition (0 when caught up).
    pub time_lag_secs: u64,
    pub worst_partition: Option<i32>,
    /// Records/s the group committed and records/s produced since the previous poll.
    pub drain_rate: Option<f64>,
    pub arrival_rate: Option<f64>,
    pub partitions: Vec<PartitionRow>,
    pub workers_current: u32,
    pub workers_desired: u32,
    pub workers_min: u32,
    pub workers_max: u32,
    pub workers_stopping: usize,
    pub worker_restarts: u32,
    /// The scaler's reason at the last poll (`ScaledUp`, `ScaleDownDelayed`, ...).
    pub reason: String,
    pub decision: String,
    /// Records on the dead-letter topic (its high watermarks).
    pub dead_letters: i64,
    pub pids: Pids,
    /// The last lag read error, if the last read failed.
    pub lag_error: Option<String>,
}

/// Where the view goes: a table redrawn in place on a terminal; otherwise one line whenever
/// something but the uptime changed, and at least every 10 s.
pub struct Screen {
    tui: bool,
    last_line: String,
    last_line_at: Instant,
}

impl Screen {
    /// Clears the terminal when drawing a table.
    pub fn new(tui: bool) -> Screen {
        if tui {
            print!("\x1b[2J");
        }
        Screen {
            tui,
            last_line: String::new(),
            last_line_at: Instant::now(),
        }
    }

    /// Prints a notice (a scaling step) that the table would show anyway.
    pub fn notice(&self, line: &str) {
        if !self.tui {
            println!("{line}");
        }
    }

    pub fn show(&mut self, snapshot: &Snapshot) {
        if self.tui {
            print!("\x1b[H{}", render_table(snapshot));
            let _ = std::io::stdout().flush();
            return;
        }
        let line = render_line(snapshot);
        let after_uptime = |line: &str| line.split_once(' ').map(|(_, rest)| rest.to_string());
        let changed = after_uptime(&line) != after_uptime(&self.last_line);
        if changed || self.last_line_at.elapsed() >= Duration::from_secs(10) {
            println!("{line}");
            self.last_line = line;
            self.last_line_at = Instant::now();
        }
    }
}

fn uptime(secs: u64) -> String {
    format!("{}m{:02}s", secs / 60, secs % 60)
}

/// The table drawn on a terminal; every line is cleared to its end so a redraw leaves no debris.
pub fn render_table(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        let _ = writeln!(out, "{text}\x1b[K");
    };
    line(format!(
        "wapipe up: {}   up {}   Ctrl-C stops everything",
        s.pipeline,
        uptime(s.uptime_secs)
    ));
    line(format!("  webhooks  {}", s.ingress_url));
    line(format!("  broker    {}", s.brokers));
    if !s.hint.is_empty() {
        line(format!("  send      {}", s.hint));
    }
    line(String::new());
    line(format!(
        "  requests/s {:>8.0}   events/s {:>8.0}   (total {} requests, {} events, {} not accepted)",
        s.requests_per_sec,
        s.events_per_sec,
        s.requests_total,
        s.events_total,
        s.failed_requests_total
    ));
    line(format!(
        "  workers    {:>3} running / {} desired   (min {}, max {}{}{})",
        s.workers_current,
        s.workers_desired,
        s.workers_min,
        s.workers_max,
        if s.workers_stopping > 0 {
            format!(", {} stopping", s.workers_stopping)
        } else {
            String::new()
        },
        if s.worker_restarts > 0 {
            format!(", {} restarts", s.worker_restarts)
        } else {
            String::new()
        }
    ));
    line(format!(
        "  delay      {}s{}   draining {}/s   arriving {}/s",
        s.time_lag_secs,
        s.worst_partition
            .map(|p| format!(" (partition {p})"))
            .unwrap_or_default(),
        per_second(s.drain_rate),
        per_second(s.arrival_rate)
    ));
    line(format!("  scaler     {}: {}", s.reason, s.decision));
    line(format!("  dead letters {}", s.dead_letters));
    if let Some(error) = &s.lag_error {
        line(format!("  lag read failed: {error}"));
    }
    line(String::new());
    line(format!(
        "  {:>9}  {:>9}  {:>6}  {:>8}  status",
        "partition", "lag", "delay", "drain/s"
    ));
    for p in &s.partitions {
        line(format!(
            "  {:>9}  {:>9}  {:>6}  {:>8}  {}",
            p.partition,
            p.lag,
            p.time_lag_secs
                .map_or_else(|| "-".to_string(), |age| format!("{age}s")),
            per_second(p.drain_rate),
            p.status
        ));
    }
    line(format!("  {:>9}  {:>9}", "total", s.total_lag));
    out.push_str("\x1b[J");
    out
}

/// A rate in whole records per second, `-` before the second poll.
fn per_second(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |rate| format!("{rate:.0}"))
}

/// One line per tick for logs and pipes.
pub fn render_line(s: &Snapshot) -> String {
    let not_ok = s
        .partitions
        .iter()
        .filter(|p| p.status != "ok")
        .map(|p| format!("{}:{}", p.partition, p.status))
        .collect::<Vec<_>>();
    format!(
        "up={}s req/s={:.0} events/s={:.0} lag={} delay={}s drain/s={} workers={}/{} scaler={} dead_letters={}{}",
        s.uptime_secs,
        s.requests_per_sec,
        s.events_per_sec,
        s.total_lag,
        s.time_lag_secs,
        per_second(s.drain_rate),
        s.workers_current,
        s.workers_desired,
        s.reason,
        s.dead_letters,
        if not_ok.is_empty() {
            String::new()
        } else {
            format!(" partitions={}", not_ok.join(","))
        }
    )
}

/// Writes `status.json` atomically (write, then rename) so readers never see half a file.
pub fn write_status(dir: &Path, s: &Snapshot) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
    let tmp = dir.join("status.json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, dir.join("status.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            pipeline: "demo".into(),
            requests_per_sec: 120.0,
            events_per_sec: 600.0,
            total_lag: 1500,
            time_lag_secs: 42,
            worst_partition: Some(0),
            drain_rate: Some(250.0),
            arrival_rate: Some(300.0),
            partitions: vec![
                PartitionRow {
                    partition: 0,
                    lag: 1500,
                    status: "lagging".into(),
                    time_lag_secs: Some(42),
                    drain_rate: Some(250.0),
                },
                PartitionRow {
                    partition: 1,
                    lag: 0,
                    status: "ok".into(),
                    time_lag_secs: Some(0),
                    drain_rate: Some(0.0),
                },
            ],
            workers_current: 2,
            workers_desired: 3,
            reason: "ScaledUp".into(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn the_line_names_rates_lag_workers_and_only_the_partitions_that_need_a_look() {
        let line = render_line(&snapshot());
        assert!(
            line.contains(
                "req/s=120 events/s=600 lag=1500 delay=42s drain/s=250 workers=2/3 scaler=ScaledUp"
            ),
            "{line}"
        );
        assert!(line.ends_with("partitions=0:lagging"), "{line}");
    }

    #[test]
    fn the_table_has_a_row_per_partition_and_clears_what_it_overwrites() {
        let table = render_table(&snapshot());
        assert!(table.contains("2 running / 3 desired"));
        assert!(table
            .lines()
            .any(|l| l.contains("1500     42s       250  lagging")));
        assert!(table.contains("delay      42s (partition 0)   draining 250/s   arriving 300/s"));
        assert!(table
            .lines()
            .all(|l| l.ends_with("\x1b[K") || l == "\x1b[J"));
    }
}
