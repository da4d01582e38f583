//! Clock readings and retry delays, the same in every binary.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the unit of `wapipe-received-at` and of the dead-letter
/// timestamps. 0 on a clock set before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The delay before retry number `attempt` (1 for the first retry): `base`, doubled for each
/// further attempt, never more than `max`.
pub fn doubling_backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_and_stops_at_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let delays: Vec<u128> = (0..=6)
            .map(|attempt| doubling_backoff(base, max, attempt).as_millis())
            .collect();
        assert_eq!(delays, [100, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(doubling_backoff(base, max, u32::MAX), max);
    }

    #[test]
    fn now_is_after_the_time_this_test_was_written() {
        assert!(now_ms() > 1_700_000_000_000);
    }
}
