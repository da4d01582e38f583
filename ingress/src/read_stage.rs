//! The read stage: where a POST's body is read, before its signature can be checked.
//!
//! Everything here is unauthenticated, so it is bounded on its own, apart from the produce
//! stage's `--max-in-flight` permits: in time (`--body-read-timeout`), in count
//! (`--max-body-reads`) and in bytes held (`--max-body-read-bytes`, counted as they arrive, so
//! a large `Content-Length` alone reserves nothing). Past the count or the bytes, the stage
//! does not refuse the newcomer: it cuts off the read that started longest ago. A provider's
//! body follows its headers within moments, so the oldest read is almost always a client that
//! holds its connection open on purpose; shedding it rather than the new request means slow
//! clients cannot keep signed ones out, they only cut each other off.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

/// Why a body was not read whole.
#[derive(Debug)]
pub enum ReadError {
    /// It grew past the body limit.
    TooLarge,
    /// It did not arrive whole within the body read timeout.
    TimedOut(Duration),
    /// It was cut off to make room for newer reads.
    Evicted,
    /// The connection failed mid-body.
    Broken(String),
}

/// The bounds of the stage.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_reads: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Reads bodies within [`Limits`], and reports how full it is on two gauges.
pub struct ReadStage {
    limits: Limits,
    pool: Mutex<Pool>,
    reads_gauge: Gauge,
    bytes_gauge: Gauge,
}

impl ReadStage {
    pub fn new(limits: Limits, reads_gauge: Gauge, bytes_gauge: Gauge) -> ReadStage {
        ReadStage {
            limits,
            pool: Mutex::new(Pool::default()),
            reads_gauge,
            bytes_gauge,
        }
    }

    /// Reads `body` whole, up to `limit` bytes, within the stage's bounds.
    ///
    /// The bytes go into one buffer as they arrive, sized up front from the declared length:
    /// collecting chunks and joining them at the end held every body twice for a moment, and
    /// a burst of large bodies all ends its reads at once. The capacity is only address
    /// space until bytes are written to it, so a large `Content-Length` alone still costs no
    /// memory.
    pub async fn read(&self, mut body: Body, limit: usize) -> Result<Bytes, ReadError> {
        let deadline = tokio::time::sleep(self.limits.timeout);
        tokio::pin!(deadline);
        let (id, mut cut) = self.with_pool(|pool| pool.admit(self.limits.max_reads));
        let _leave = Leave { stage: self, id };
        let declared = HttpBody::size_hint(&body).exact().unwrap_or(0);
        let capacity = usize::try_from(declared).map_or(limit, |d| d.min(limit));
        // A body that comes in one frame (most webhooks) is kept as it came, not copied.
        let mut first: Option<Bytes> = None;
        let mut buffer = BytesMut::new();
        let mut len = 0usize;
        loop {
            let frame = tokio::select! {
                biased;
                _ = &mut cut => return Err(ReadError::Evicted),
                _ = &mut deadline => return Err(ReadError::TimedOut(self.limits.timeout)),
                frame = body.frame() => frame,
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|error| ReadError::Broken(error.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            len += data.len();
            if len > limit {
                return Err(ReadError::TooLarge);
            }
            if !self.with_pool(|pool| pool.charge(id, data.len(), self.limits.max_bytes)) {
                return Err(ReadError::Evicted);
            }
            match first.take() {
                None if buffer.is_empty() => first = Some(data),
                earlier => {
                    if buffer.is_empty() {
                        buffer.reserve(capacity.max(len));
                    }
                    if let Some(earlier) = earlier {
                        buffer.extend_from_slice(&earlier);
                    }
                    buffer.extend_from_slice(&data);
                }
            }
        }
        Ok(first.unwrap_or_else(|| buffer.freeze()))
    }

    fn with_pool<T>(&self, change: impl FnOnce(&mut Pool) -> T) -> T {
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let out = change(&mut pool);
        self.reads_gauge.set(pool.reads.len() as i64);
        self.bytes_gauge.set(pool.bytes as i64);
        out
    }
}

/// Takes a read out of the pool however it ends, early return or dropped future.
struct Leave<'a> {
    stage: &'a ReadStage,
    id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.stage.with_pool(|pool| pool.leave(self.id));
    }
}

/// The reads in progress and the bytes they hold.
#[derive(Default)]
struct Pool {
    next_id: u64,
    /// By the order they started: the first is the oldest.
    reads: BTreeMap<u64, Read>,
    bytes: usize,
}

struct Read {
    bytes: usize,
    /// Dropping it tells the read it was cut off.
    _cut: oneshot::Sender<()>,
}

impl Pool {
    /// Enters a new read, first cutting off the oldest ones while the pool is full. The
    /// receiver resolves if this read is cut off in turn.
    fn admit(&mut self, max_reads: usize) -> (u64, oneshot::Receiver<()>) {
        while self.reads.len() >= max_reads.max(1) {
            self.evict_oldest();
        }
        let id = self.next_id;
        self.next_id += 1;
        let (cut, cut_off) = oneshot::channel();
        self.reads.insert(
            id,
            Read {
                bytes: 0,
                _cut: cut,
            },
        );
        (id, cut_off)
    }

    /// Counts `bytes` more for read `id`, cutting off the oldest reads (it may be `id`
    /// itself) until the total fits. False when `id` is no longer reading.
    fn charge(&mut self, id: u64, bytes: usize, max_bytes: usize) -> bool {
        let Some(read) = self.reads.get_mut(&id) else {
            return false;
        };
        read.bytes += bytes;
        self.bytes += bytes;
        while self.bytes > max_bytes {
            // The cut-off reads drop their chunks when they next wake; until then the pool
            // already counts their bytes as gone.
            self.evict_oldest();
        }
        self.reads.contains_key(&id)
    }

    fn leave(&mut self, id: u64) {
        if let Some(read) = self.reads.remove(&id) {
            self.bytes -= read.bytes;
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((_, read)) = self.reads.pop_first() {
            self.bytes -= read.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_cut_off(receiver: &mut oneshot::Receiver<()>) -> bool {
        matches!(
            receiver.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        )
    }

    #[test]
    fn a_full_pool_cuts_off_its_oldest_read_to_let_a_new_one_in() {
        let mut pool = Pool::default();
        let (_, mut first) = pool.admit(2);
        let (_, mut second) = pool.admit(2);
        let (_, mut third) = pool.admit(2);
        assert!(is_cut_off(&mut first));
        assert!(!is_cut_off(&mut second));
        assert!(!is_cut_off(&mut third));
        assert_eq!(pool.reads.len(), 2);
    }

    #[test]
    fn bytes_past_the_budget_cut_off_the_oldest_reads_until_they_fit() {
        let mut pool = Pool::default();
        let (a, mut a_cut) = pool.admit(10);
        let (b, mut b_cut) = pool.admit(10);
        let (c, mut c_cut) = pool.admit(10);
        assert!(pool.charge(a, 40, 100));
        assert!(pool.charge(b, 40, 100));
        // 40 + 40 + 30 > 100: the oldest read goes, the one that brought the bytes stays.
        assert!(pool.charge(c, 30, 100));
        assert!(is_cut_off(&mut a_cut));
        assert!(!is_cut_off(&mut b_cut) && !is_cut_off(&mut c_cut));
        assert_eq!(pool.bytes, 70);
        // The read that is itself the oldest is cut off by its own bytes.
        assert!(!pool.charge(b, 50, 100));
        assert!(is_cut_off(&mut b_cut));
        assert_eq!(pool.bytes, 30);
        assert!(!pool.charge(a, 1, 100), "a cut-off read is charged nothing");
        assert_eq!(pool.bytes, 30);
    }

    #[test]
    fn leaving_gives_back_the_bytes_and_the_place() {
        let mut pool = Pool::default();
        let (a, _a_cut) = pool.admit(1);
        assert!(pool.charge(a, 10, 100));
        pool.leave(a);
        pool.leave(a);
        assert_eq!((pool.reads.len(), pool.bytes), (0, 0));
    }
}
