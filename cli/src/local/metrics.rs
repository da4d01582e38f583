//! Reading the ingress's Prometheus text: totals of its counters, and rates between two scrapes.

use std::time::Instant;

/// Sum of every sample of `metric` (all label sets) in a Prometheus text exposition.
pub fn sum(text: &str, metric: &str) -> f64 {
    sum_where(text, metric, |_| true)
}

/// Sum of the samples of `metric` whose label set satisfies `labels`.
pub fn sum_where(text: &str, metric: &str, labels: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let (label_set, value) = if let Some(rest) = rest.strip_prefix('{') {
                let (label_set, value) = rest.split_once('}')?;
                (label_set, value)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None;
            };
            if !labels(label_set) {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Counters of the ingress at one scrape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IngressCounters {
    pub at: Instant,
    pub requests: f64,
    /// Requests not answered 200 (or a handshake): refused, shed or failed.
    pub failed_requests: f64,
    pub events: f64,
}

impl IngressCounters {
    pub fn parse(text: &str, at: Instant) -> Self {
        let requests = sum(text, "wapipe_ingress_requests_total");
        let succeeded = sum_where(text, "wapipe_ingress_requests_total", |labels| {
            labels.contains("outcome=\"ok\"") || labels.contains("outcome=\"verified\"")
        });
        IngressCounters {
            at,
            requests,
            failed_requests: requests - succeeded,
            events: sum(text, "wapipe_ingress_events_produced_total"),
        }
    }

    /// (requests/s, events/s) from `earlier` to `self`.
    pub fn rates_since(&self, earlier: &IngressCounters) -> (f64, f64) {
        let secs = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        if secs <= 0.0 {
            return (0.0, 0.0);
        }
        (
            ((self.requests - earlier.requests) / secs).max(0.0),
            ((self.events - earlier.events) / secs).max(0.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SCRAPE: &str = r#"# HELP wapipe_ingress_requests Webhook requests by outcome.
# TYPE wapipe_ingress_requests counter
wapipe_ingress_requests_total{outcome="ok"} 40
wapipe_ingress_requests_total{outcome="unauthorized"} 2
wapipe_ingress_events_produced_total{kind="message"} 70
wapipe_ingress_events_produced_total{kind="status"} 30
wapipe_ingress_in_flight_requests 3
wapipe_ingress_requests_total_other 1000
# EOF
"#;

    #[test]
    fn counters_are_summed_over_their_labels_and_never_mixed_with_similar_names() {
        let now = Instant::now();
        let counters = IngressCounters::parse(SCRAPE, now);
        assert_eq!(counters.requests, 42.0);
        assert_eq!(counters.failed_requests, 2.0);
        assert_eq!(counters.events, 100.0);
        assert_eq!(sum(SCRAPE, "wapipe_ingress_in_flight_requests"), 3.0);
    }

    #[test]
    fn rates_are_differences_over_the_time_between_scrapes() {
        let start = Instant::now();
        let earlier = IngressCounters::parse(SCRAPE, start);
        let later = IngressCounters {
            at: start + Duration::from_secs(2),
            requests: 62.0,
            failed_requests: 2.0,
            events: 140.0,
        };
        assert_eq!(later.rates_since(&earlier), (10.0, 20.0));
        assert_eq!(earlier.rates_since(&later), (0.0, 0.0));
    }
}
