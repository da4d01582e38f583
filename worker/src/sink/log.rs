//! The `log` sink: one JSON line per event on standard output, for trying the pipeline out.
//! Lines go to a buffer flushed every 100 ms, when full, when the worker is about to store or
//! commit offsets ([`Sink::flush`]) and when the sink is dropped: a busy worker pays neither a
//! write(2) nor a full log-record format per event, and no committed event's line is lost
//! with the buffer.

use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::error::Result;
use crate::route::{Event, EventBody};

use super::Sink;

/// Most events the worker hands the sink at once: their lines go into the buffer together.
const MAX_BATCH: usize = 1024;

/// How long a line may wait in the buffer.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

type Out = Mutex<BufWriter<Box<dyn Write + Send>>>;

pub struct LogSink {
    out: Arc<Out>,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink").finish_non_exhaustive()
    }
}

impl Default for LogSink {
    fn default() -> Self {
        LogSink::stdout()
    }
}

impl LogSink {
    pub fn stdout() -> LogSink {
        LogSink::to_writer(Box::new(std::io::stdout()))
    }

    /// Writes the lines to `writer` (the benchmark discards them).
    pub fn to_writer(writer: Box<dyn Write + Send>) -> LogSink {
        LogSink::to_writer_flushing_every(writer, Some(FLUSH_INTERVAL))
    }

    /// Like [`LogSink::to_writer`], flushed by a thread every `interval`, or only when asked
    /// ([`Sink::flush`], a full buffer, drop) with `None`.
    pub fn to_writer_flushing_every(
        writer: Box<dyn Write + Send>,
        interval: Option<Duration>,
    ) -> LogSink {
        let out: Arc<Out> = Arc::new(Mutex::new(BufWriter::with_capacity(64 * 1024, writer)));
        if let Some(interval) = interval {
            let weak = Arc::downgrade(&out);
            // A thread, not a task: the sink may be built outside a runtime.
            let _ = std::thread::Builder::new()
                .name("wapipe-log-sink".into())
                .spawn(move || flush_until_dropped(weak, interval));
        }
        LogSink { out }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        // Here, not in the flushing thread's last round: what was written is out once dropped.
        let _ = lock(&self.out).flush();
    }
}

fn flush_until_dropped(out: Weak<Out>, interval: Duration) {
    loop {
        std::thread::sleep(interval);
        let Some(out) = out.upgrade() else {
            return;
        };
        let _ = lock(&out).flush();
    }
}

fn lock(out: &Out) -> std::sync::MutexGuard<'_, BufWriter<Box<dyn Write + Send>>> {
    out.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait::async_trait]
impl Sink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn flush(&self) {
        // Standard output going away is no event's fault, and nothing to wait out.
        let _ = lock(&self.out).flush();
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn write_batch(&self, events: &[Event]) -> Result<()> {
        // Whole lines into the buffer, under one lock, so a flush never splits one.
        let mut bytes = Vec::with_capacity(256 * events.len());
        for event in events {
            push_line(&mut bytes, event);
        }
        // Standard output going away is no event's fault, and nothing to wait out.
        let _ = lock(&self.out).write_all(&bytes);
        Ok(())
    }
}

/// Appends the event's line to `bytes`: `{"id", "wamid" (if any), "kind", "provider", "key",
/// "partition", "offset", "detail" (the message type, `status`, `error` or the field of a field
/// change), "status" (of a status)}`, written directly (strings that need no escaping copied as
/// they are, the rest escaped by serde_json): a third of what serializing a struct cost.
fn push_line(bytes: &mut Vec<u8>, event: &Event) {
    let detail = event.body.detail();
    let status = match &event.body {
        EventBody::Status(s) => Some(s.status.as_str()),
        _ => None,
    };
    bytes.extend_from_slice(b"{\"id\":");
    push_str(bytes, &event.id);
    if let Some(wamid) = event.wamid() {
        bytes.extend_from_slice(b",\"wamid\":");
        push_str(bytes, wamid);
    }
    bytes.extend_from_slice(b",\"kind\":");
    push_str(bytes, event.kind);
    bytes.extend_from_slice(b",\"provider\":");
    push_str(bytes, event.provider);
    bytes.extend_from_slice(b",\"key\":");
    push_str(bytes, &event.user_key);
    bytes.extend_from_slice(b",\"partition\":");
    push_int(bytes, i64::from(event.partition));
    bytes.extend_from_slice(b",\"offset\":");
    push_int(bytes, event.offset);
    bytes.extend_from_slice(b",\"detail\":");
    push_str(bytes, detail);
    if let Some(status) = status {
        bytes.extend_from_slice(b",\"status\":");
        push_str(bytes, status);
    }
    bytes.extend_from_slice(b"}\n");
}

/// `text` as a JSON string: copied when nothing in it needs escaping, else escaped by serde_json.
fn push_str(bytes: &mut Vec<u8>, text: &str) {
    if crate::scan::plain_run(text.as_bytes()) == text.len() {
        bytes.push(b'"');
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'"');
    } else {
        let start = bytes.len();
        if serde_json::to_writer(&mut *bytes, text).is_err() {
            // Writing into a Vec does not fail; an empty string keeps the line JSON anyway.
            bytes.truncate(start);
            bytes.extend_from_slice(b"\"\"");
        }
    }
}

/// `n` in decimal.
fn push_int(bytes: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        bytes.push(b'-');
    }
    bytes.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{meta_record, route, Incoming};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn each_event_is_one_json_line_with_its_wamid_once_the_sink_is_dropped() {
        let value = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "w",
            "changes": [{"field": "messages", "value": {"messages": [
                {"id": "wamid.1", "from": "1555", "type": "text", "text": {"body": "hi"}}]}}]}]});
        let event = route(&Incoming {
            partition: 3,
            offset: 7,
            ..meta_record("1555", &value)
        })
        .unwrap();
        let written = Shared::default();
        let sink = LogSink::to_writer(Box::new(written.clone()));
        sink.write(&event).await.unwrap();
        sink.write(&event).await.unwrap();
        drop(sink);
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["wamid"], "wamid.1");
        assert_eq!(lines[0]["detail"], "text");
        assert_eq!(lines[0]["partition"], 3);
        assert_eq!(lines[0]["offset"], 7);
    }

    /// The line as serde_json writes it, to check `push_line` against.
    #[derive(serde::Serialize)]
    struct Line<'a> {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        wamid: Option<&'a str>,
        kind: &'a str,
        provider: &'a str,
        key: &'a str,
        partition: i32,
        offset: i64,
        detail: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<&'a str>,
    }

    #[test]
    fn a_line_is_what_serde_json_writes_escapes_and_negative_numbers_included() {
        let message = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "w",
            "changes": [{"field": "messages", "value": {"messages": [
                {"id": "wamid.\"q\"\\\u{1}é", "from": "1555", "type": "te\nxt", "text": {"body": "hi"}}]}}]}]});
        let status = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "w",
            "changes": [{"field": "messages", "value": {"statuses": [
                {"id": "wamid.s", "status": "delivered", "recipient_id": "1555"}]}}]}]});
        for value in [&message, &status] {
            for (partition, offset) in [
                (0, 0),
                (3, 7),
                (-1, -1),
                (i32::MAX, i64::MIN),
                (12, i64::MAX),
            ] {
                let event = route(&Incoming {
                    partition,
                    offset,
                    ..meta_record("15\"55\u{7f}", value)
                })
                .unwrap();
                let expected = Line {
                    id: &event.id,
                    wamid: event.wamid(),
                    kind: event.kind,
                    provider: event.provider,
                    key: &event.user_key,
                    partition: event.partition,
                    offset: event.offset,
                    detail: event.body.detail(),
                    status: match &event.body {
                        EventBody::Status(s) => Some(s.status.as_str()),
                        _ => None,
                    },
                };
                let mut line = Vec::new();
                push_line(&mut line, &event);
                let mut want = serde_json::to_vec(&expected).unwrap();
                want.push(b'\n');
                assert_eq!(
                    String::from_utf8(line).unwrap(),
                    String::from_utf8(want).unwrap()
                );
            }
        }
    }
}
