//! When the consumer loop takes records, holds, pauses fetching or resumes it. A full buffer
//! first only stops taking records: librdkafka's own prefetch (bounded by
//! `queued.max.messages.kbytes`) waits, and a fast sink drains the buffer within milliseconds.
//! Pausing purges that prefetch and costs a fetch round trip to undo, so a pause (which keeps
//! the consumer polling, and so in the group, through a long sink outage) comes only once the
//! buffer has stayed full for [`HOLD_BEFORE_PAUSE`]. Fetching resumes at half the limit.

use std::time::Duration;

use tokio::time::Instant;

use crate::sink::Sink;

/// The fewest and the most events buffered by default ([`WriteWindow::default_max_buffered`]).
pub const DEFAULT_BUFFER_BOUNDS: (usize, usize) = (1_000, 4_000);

/// What a worker has the sink write at once: batches of at most `max_batch` events, at most
/// `batches` of them in flight. Derived once, from the sink and `--concurrency`; the batch
/// launcher and the default buffer both follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteWindow {
    pub max_batch: usize,
    pub batches: usize,
}

impl WriteWindow {
    /// The sink's batch size and the batches it takes at once, the latter capped by
    /// `concurrency`; each at least 1.
    pub fn new(max_batch: usize, max_concurrent_batches: usize, concurrency: usize) -> Self {
        WriteWindow {
            max_batch: max_batch.max(1),
            batches: max_concurrent_batches.clamp(1, concurrency.max(1)),
        }
    }

    pub fn of(sink: &dyn Sink, concurrency: usize) -> Self {
        WriteWindow::new(sink.max_batch(), sink.max_concurrent_batches(), concurrency)
    }

    /// Events a worker buffers (received and not finished) unless told: twice the window,
    /// within [`DEFAULT_BUFFER_BOUNDS`]. A user's next events wait while one of theirs is being
    /// written; with only what is in flight buffered, the next batch could gather only from the
    /// few users with nothing in flight, and a database sink committed half-full batches
    /// (PostgreSQL: four connections of 500, about 265 events a batch with 2,000 buffered, 460
    /// with 4,000; docs/benchmarks.md). The upper bound keeps the memory a worker holds for a
    /// sink that takes many batches at once (the log sink) at what the PostgreSQL sink holds.
    pub fn default_max_buffered(self) -> usize {
        let (least, most) = DEFAULT_BUFFER_BOUNDS;
        self.max_batch
            .saturating_mul(self.batches)
            .saturating_mul(2)
            .clamp(least, most)
    }
}

/// librdkafka's prefetch for a buffer of `max_buffered` events: `queued.min.messages` (per
/// partition) two and a half times the buffer and `queued.max.messages.kbytes` 4 KiB per
/// buffered event, each within bounds (librdkafka's own defaults, 100,000 messages and 64 MiB,
/// are the upper ones). So `--max-buffered` bounds what a worker holds when it reads a
/// backlog: a buffer of 4,000 (the most by default) gives 10,000 messages and 16,000 KiB,
/// which drained a backlog as fast as librdkafka's defaults and peaked 60 MiB lower
/// (docs/benchmarks.md).
pub(super) fn prefetch(max_buffered: usize) -> Prefetch {
    Prefetch {
        messages: (max_buffered.saturating_mul(5) / 2).clamp(1_000, 100_000),
        kbytes: max_buffered.saturating_mul(4).clamp(4_096, 65_536),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prefetch {
    pub(super) messages: usize,
    pub(super) kbytes: usize,
}

/// How long the buffer may stay full, with no record taken, before fetching is paused.
pub(super) const HOLD_BEFORE_PAUSE: Duration = Duration::from_secs(2);

/// A change of the fetch state the consumer loop must apply to its assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FetchChange {
    Pause,
    Resume,
}

/// What the consumer loop does next, from the buffer's fill and how long it has been full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FetchDecision {
    /// Since when the buffer has been full (carried to the next decision).
    pub(super) full_since: Option<Instant>,
    /// Pause or resume now, if the state changes.
    pub(super) change: Option<FetchChange>,
    /// Whether fetching is paused once the change is applied.
    pub(super) paused: bool,
    /// Full but not paused yet: take no record until space frees or `hold_over`.
    pub(super) holding: bool,
    /// When a hold turns into a pause.
    pub(super) hold_over: Instant,
}

/// Decides from `buffered` events of at most `max_buffered`, whether fetching `was_paused`,
/// and since when the buffer has been full.
pub(super) fn fetch_decision(
    buffered: usize,
    max_buffered: usize,
    was_paused: bool,
    full_since: Option<Instant>,
    now: Instant,
) -> FetchDecision {
    let full = buffered >= max_buffered;
    let full_since = match (full, full_since) {
        (false, _) => None,
        (true, None) => Some(now),
        (true, since) => since,
    };
    let pause_now = !was_paused
        && full_since.is_some_and(|since| now.duration_since(since) >= HOLD_BEFORE_PAUSE);
    let resume_now = was_paused && buffered <= max_buffered / 2;
    let change = match (pause_now, resume_now) {
        (true, _) => Some(FetchChange::Pause),
        (false, true) => Some(FetchChange::Resume),
        (false, false) => None,
    };
    let paused = (was_paused && !resume_now) || pause_now;
    FetchDecision {
        full_since,
        change,
        paused,
        holding: full && !paused,
        hold_over: full_since.map_or(now, |since| since + HOLD_BEFORE_PAUSE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefetch_follows_the_buffer_within_librdkafkas_bounds() {
        let default = prefetch(DEFAULT_BUFFER_BOUNDS.1);
        assert_eq!((default.messages, default.kbytes), (10_000, 16_000));
        let small = prefetch(10);
        assert_eq!((small.messages, small.kbytes), (1_000, 4_096));
        let large = prefetch(1_000_000);
        assert_eq!((large.messages, large.kbytes), (100_000, 65_536));
        assert_eq!(prefetch(usize::MAX), large);
    }

    #[test]
    fn the_default_buffer_is_twice_what_the_sink_writes_at_once_within_bounds() {
        // postgres: 4 connections of 500.
        assert_eq!(WriteWindow::new(500, 4, 16).default_max_buffered(), 4_000);
        // 2 connections: the window's double.
        assert_eq!(WriteWindow::new(500, 2, 16).default_max_buffered(), 2_000);
        // --concurrency caps the batches in flight.
        assert_eq!(WriteWindow::new(500, 4, 1).default_max_buffered(), 1_000);
        // Many batches at once (log, sqlite): the upper bound.
        assert_eq!(
            WriteWindow::new(1024, usize::MAX, 16).default_max_buffered(),
            4_000
        );
        assert_eq!(
            WriteWindow::new(usize::MAX, usize::MAX, usize::MAX).default_max_buffered(),
            4_000
        );
        // One event a write (http): the lower bound.
        assert_eq!(
            WriteWindow::new(1, usize::MAX, 16).default_max_buffered(),
            1_000
        );
        assert_eq!(WriteWindow::new(0, 0, 0).default_max_buffered(), 1_000);
    }

    #[test]
    fn a_full_buffer_first_holds_and_pauses_fetching_only_once_it_stayed_full_for_the_hold() {
        let start = Instant::now();
        let first = fetch_decision(100, 100, false, None, start);
        assert_eq!(first.full_since, Some(start));
        assert_eq!(first.change, None);
        assert!(first.holding && !first.paused);
        assert_eq!(first.hold_over, start + HOLD_BEFORE_PAUSE);

        let almost = start + HOLD_BEFORE_PAUSE - Duration::from_millis(1);
        let still = fetch_decision(100, 100, false, first.full_since, almost);
        assert_eq!(still.change, None);
        assert!(still.holding);

        let over = fetch_decision(100, 100, false, still.full_since, start + HOLD_BEFORE_PAUSE);
        assert_eq!(over.change, Some(FetchChange::Pause));
        assert!(over.paused && !over.holding);
    }

    #[test]
    fn space_freed_during_the_hold_forgets_it() {
        let start = Instant::now();
        let full = fetch_decision(100, 100, false, None, start);
        let later = start + Duration::from_secs(1);
        let freed = fetch_decision(99, 100, false, full.full_since, later);
        assert_eq!(freed.full_since, None);
        assert_eq!(freed.change, None);
        assert!(!freed.holding && !freed.paused);
        // Full again: the hold starts over.
        let again = fetch_decision(100, 100, false, freed.full_since, later);
        assert_eq!(again.full_since, Some(later));
        assert_eq!(again.change, None);
    }

    #[test]
    fn paused_fetching_resumes_only_at_half_the_limit() {
        let now = Instant::now();
        let above_half = fetch_decision(51, 100, true, None, now);
        assert_eq!(above_half.change, None);
        assert!(above_half.paused && !above_half.holding);
        let half = fetch_decision(50, 100, true, None, now);
        assert_eq!(half.change, Some(FetchChange::Resume));
        assert!(!half.paused && !half.holding);
        // Still full while paused: it stays paused, it does not hold.
        let full = fetch_decision(100, 100, true, Some(now), now + HOLD_BEFORE_PAUSE * 3);
        assert_eq!(full.change, None);
        assert!(full.paused && !full.holding);
    }
}
