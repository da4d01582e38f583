//! The produce stage's byte budget: how many bytes of verified bodies the ingress holds at once
//! while it splits them and waits for Kafka (`--max-in-flight-bytes`).
//!
//! A verified body stays in memory with its records and librdkafka's copies of them until the
//! broker acknowledges, so `--max-in-flight` alone lets a burst of large bodies outgrow the
//! container's memory. The budget counts a request's body once, in KiB, for as long as the
//! request holds its permit; what the body costs beyond that (records, the producer's copies)
//! is a multiple of it, measured in docs/ingress.md, and left to the size of the budget.
//! Only signed requests take from it, as with the produce permits: unverified bodies are the
//! read stage's to bound. A body larger than the whole budget takes the whole budget, so it is
//! admitted whenever nothing else is in flight rather than never.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget; permits are KiB.
pub struct ByteBudget {
    kib: Arc<Semaphore>,
    capacity_kib: u32,
    held_bytes: Gauge,
}

/// Bytes of the budget held by one request; given back when dropped, whether the request
/// finished, failed or was cancelled with its client.
pub struct BytePermit {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    held_bytes: Gauge,
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        self.held_bytes.dec_by(self.bytes);
    }
}

impl ByteBudget {
    /// A budget of `max_bytes` (rounded up to whole KiB, at most 4 TiB); 0 means no bound.
    pub fn new(max_bytes: usize, held_bytes: Gauge) -> ByteBudget {
        let capacity_kib = u32::try_from(max_bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        ByteBudget {
            kib: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
            held_bytes,
        }
    }

    /// What a body of `bytes` takes: its size in KiB, at most the whole budget.
    fn cost(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.capacity_kib)
    }

    /// Whether a body of `bytes` would be admitted now. Nothing is reserved: a declared
    /// `Content-Length` is only a claim, and an unverified request must not hold the budget.
    pub fn fits_now(&self, bytes: u64) -> bool {
        self.cost(bytes) as usize <= self.kib.available_permits()
    }

    /// Takes the budget for a body of `bytes`, or `None` when what is left is too little.
    pub fn try_take(&self, bytes: usize) -> Option<BytePermit> {
        let kib = self.cost(bytes as u64);
        let permit = self.kib.clone().try_acquire_many_owned(kib).ok()?;
        let bytes = i64::from(kib) * 1024;
        self.held_bytes.inc_by(bytes);
        Some(BytePermit {
            _permit: permit,
            bytes,
            held_bytes: self.held_bytes.clone(),
        })
    }

    /// KiB free now.
    pub fn available_kib(&self) -> usize {
        self.kib.available_permits()
    }

    /// KiB in all.
    pub fn capacity_kib(&self) -> usize {
        self.capacity_kib as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_counted_in_whole_kib_and_given_back_when_dropped() {
        let gauge = Gauge::default();
        let budget = ByteBudget::new(4 * 1024, gauge.clone());
        let a = budget.try_take(1025).expect("2 KiB of 4");
        assert_eq!((budget.available_kib(), gauge.get()), (2, 2048));
        assert!(budget.fits_now(2048) && !budget.fits_now(2049));
        assert!(budget.try_take(3000).is_none());
        drop(a);
        assert_eq!((budget.available_kib(), gauge.get()), (4, 0));
    }

    #[test]
    fn a_body_larger_than_the_budget_takes_all_of_it_and_only_when_it_is_free() {
        let budget = ByteBudget::new(2 * 1024, Gauge::default());
        let small = budget.try_take(1).expect("1 KiB");
        assert!(!budget.fits_now(10_000));
        assert!(budget.try_take(10_000).is_none());
        drop(small);
        let large = budget.try_take(10_000).expect("the whole budget");
        assert_eq!(budget.available_kib(), 0);
        drop(large);
        assert_eq!(budget.available_kib(), budget.capacity_kib());
    }

    #[test]
    fn a_zero_budget_bounds_nothing() {
        let budget = ByteBudget::new(0, Gauge::default());
        assert!(budget.fits_now(3 << 20));
        let _held = budget.try_take(3 << 20).expect("no bound");
        assert!(budget.try_take(3 << 20).is_some());
    }
}
