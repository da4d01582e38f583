//! The `log` sink: one structured line per event, for trying the pipeline out.

use crate::error::Result;
use crate::route::{Event, EventBody};

use super::Sink;

#[derive(Debug, Default)]
pub struct LogSink;

#[async_trait::async_trait]
impl Sink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn write(&self, event: &Event) -> Result<()> {
        let (detail, status) = match &event.body {
            EventBody::Message(m) => (m.message_type.as_str(), None),
            EventBody::Status(s) => ("status", Some(s.status.as_str())),
            EventBody::Error(_) => ("error", None),
            EventBody::Field(f) => (f.field.as_str(), None),
        };
        tracing::info!(
            target: "wapipe::event",
            id = %event.id,
            wamid = event.wamid().unwrap_or(""),
            kind = event.kind,
            provider = event.provider,
            key = %event.user_key,
            partition = event.partition,
            offset = event.offset,
            detail,
            status = status.unwrap_or(""),
            "event"
        );
        Ok(())
    }
}
