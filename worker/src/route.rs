//! Routing: turns one record of the raw topic into a typed [`Event`] (message, status, error or
//! other field) that a sink can write. A record that cannot be understood is the event's own
//! fault ([`Error::ParseEvent`]): it is retried and then dead-lettered, never dropped.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::{Headers, Message};
use serde::Deserialize;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wapipe_core::record::{
    HEADER_BODY_SHA256, HEADER_EVENT_INDEX, HEADER_KIND, HEADER_PROVIDER, HEADER_RECEIVED_AT,
};
use wapipe_core::{EventKind, Provider};

use crate::error::{Error, Result};
use crate::model::{
    unix_seconds, DeliveryStatus, MetaChange, MetaEnvelope, MetaMessagesValue, Text,
    WasenderEnvelope, WasenderMessage,
};

/// A record taken off the raw topic, detached from the consumer: its bytes copied once off
/// librdkafka's buffer, and shared from here on (the routed [`Event`]'s raw JSON is the same
/// buffer, not a copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Shared by the records of one topic, not copied per record.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Bytes>,
    pub headers: RecordHeaders,
}

impl Incoming {
    /// The record `message`, read from `topic` (the subscribed topic's name, shared; a record
    /// of another topic gets its own).
    pub fn from_message<M: Message>(message: &M, topic: &Arc<str>) -> Incoming {
        let headers = message
            .headers()
            .map(|headers| {
                // The first few read once and sized, so the two buffers are allocated once, not
                // grown header by header (librdkafka's lookups are not free either).
                const FEW: usize = 8;
                let mut few: [(&str, &[u8]); FEW] = [("", &[]); FEW];
                let (mut count, mut bytes) = (0, 0);
                // One pass: each step of librdkafka's iterator is a call and a key checked as
                // UTF-8, so the rest are not reached by stepping over the first few again.
                let mut all = headers.iter();
                for h in all.by_ref().take(FEW) {
                    let value = h.value.unwrap_or_default();
                    bytes += h.key.len() + value.len();
                    few[count] = (h.key, value);
                    count += 1;
                }
                let mut out = RecordHeaders::with_capacity(count, bytes);
                for &(key, value) in &few[..count] {
                    out.push(key, value);
                }
                for h in all {
                    out.push(h.key, h.value.unwrap_or_default());
                }
                out
            })
            .unwrap_or_default();
        Incoming {
            topic: if message.topic() == &**topic {
                topic.clone()
            } else {
                Arc::from(message.topic())
            },
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(Bytes::copy_from_slice),
            headers,
        }
    }

    /// The first header called `name`, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn key_str(&self) -> String {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default()
    }

    /// Receive time at the ingress, unix milliseconds.
    pub fn received_at_ms(&self) -> Option<i64> {
        self.header(HEADER_RECEIVED_AT)
            .and_then(|v| v.trim().parse().ok())
    }
}

/// A record's headers in order, keys and values back to back in one buffer (two allocations
/// per record, not two per header). A header without a value reads as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordHeaders {
    bytes: Vec<u8>,
    /// Where each header's key ends and its value ends, in `bytes`.
    ends: Vec<(usize, usize)>,
}

impl RecordHeaders {
    /// Room for `count` headers of `bytes` key and value bytes in all.
    pub fn with_capacity(count: usize, bytes: usize) -> RecordHeaders {
        RecordHeaders {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(count),
        }
    }

    pub fn push(&mut self, key: &str, value: &[u8]) {
        self.bytes.extend_from_slice(key.as_bytes());
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ends.push((key_end, self.bytes.len()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(key_end, value_end)| {
            let key = std::str::from_utf8(&self.bytes[start..key_end]).unwrap_or_default();
            let value = &self.bytes[key_end..value_end];
            start = value_end;
            (key, value)
        })
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let mut start = 0;
        for &(key_end, value_end) in &self.ends {
            if &self.bytes[start..key_end] == name.as_bytes() {
                return Some(&self.bytes[key_end..value_end]);
            }
            start = value_end;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> FromIterator<(K, V)> for RecordHeaders {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut headers = RecordHeaders::default();
        for (key, value) in pairs {
            headers.push(key.as_ref(), value.as_ref());
        }
        headers
    }
}

/// One routed event, ready for a sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The event's identity, the same for every delivery of the same event and different for
    /// different events (see [`event_id`] and the worker's README): sinks fold writes of one id
    /// into one effect.
    pub id: String,
    pub provider: &'static str,
    pub kind: &'static str,
    /// The partition key: the user the event belongs to.
    pub user_key: String,
    /// Where the record is in Kafka, for log lines (not sent to sinks).
    #[serde(skip)]
    pub partition: i32,
    #[serde(skip)]
    pub offset: i64,
    pub received_at_ms: Option<i64>,
    #[serde(flatten)]
    pub body: EventBody,
    /// The event exactly as the provider shaped it.
    pub raw: RawJson,
}

/// A record's JSON text as it came: the record's own buffer (shared, not copied), trimmed of the
/// whitespace around the value. Routing's typed parse of the whole record has checked it to be
/// JSON and UTF-8; it is not built into a tree (building and dropping one per event cost more
/// than the rest of routing), and only sinks that store it read it as a [`RawValue`].
#[derive(Debug, Clone, PartialEq)]
pub struct RawJson(Bytes);

impl RawJson {
    /// `bytes` must be UTF-8 (routing checked it); anything else reads as empty.
    fn trimmed(bytes: &Bytes) -> RawJson {
        let text = bytes.as_ref();
        let is_space = |b: &u8| JSON_WHITESPACE.contains(&char::from(*b));
        let start = text.iter().position(|b| !is_space(b)).unwrap_or(text.len());
        let end = text
            .iter()
            .rposition(|b| !is_space(b))
            .map_or(start, |i| i + 1);
        RawJson(bytes.slice(start..end))
    }

    pub fn get(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text as a [`RawValue`], for serializers and the jsonb binding.
    pub fn to_raw_value(&self) -> serde_json::Result<Box<RawValue>> {
        RawValue::from_string(self.get().to_string())
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.to_raw_value()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    Message(MessageEvent),
    Status(StatusEvent),
    Error(ErrorEvent),
    Field(FieldEvent),
    Echo(EchoEvent),
    Call(CallEvent),
    Group(GroupEvent),
    History(HistoryEvent),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageEvent {
    pub wamid: String,
    pub from: Option<String>,
    pub from_user_id: Option<String>,
    pub phone_number_id: Option<String>,
    pub message_type: String,
    pub group_id: Option<String>,
    pub text: Option<String>,
    pub contact_name: Option<String>,
    /// Unix seconds at which the user sent it.
    pub sent_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusEvent {
    pub wamid: String,
    pub status: DeliveryStatus,
    pub rank: i16,
    pub recipient_id: Option<String>,
    /// The group member the receipt is from, for a message sent to a group (normalized as the
    /// partition key is); `None` for a 1:1 message.
    pub participant: Option<String>,
    pub phone_number_id: Option<String>,
    /// Unix seconds of the status change.
    pub status_at: Option<i64>,
    pub errors: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorEvent {
    pub code: Option<i64>,
    pub title: Option<String>,
    pub message: Option<String>,
    pub phone_number_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldEvent {
    pub field: String,
}

/// A message the business sent from the WhatsApp Business app (`smb_message_echoes`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EchoEvent {
    pub wamid: Option<String>,
    /// The user it was sent to.
    pub to: Option<String>,
    pub message_type: Option<String>,
    /// Unix seconds at which the business sent it.
    pub sent_at: Option<i64>,
    pub phone_number_id: Option<String>,
}

/// A call event (`connect`, `terminate`) or call status (`RINGING`, ...) of the `calls` field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallEvent {
    pub call_id: Option<String>,
    /// The call's `event`, or the status of a call status.
    pub event: Option<String>,
    pub direction: Option<String>,
    pub phone_number_id: Option<String>,
}

/// A group event (`group_lifecycle_update`, `group_participants_update`, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupEvent {
    pub field: String,
    pub group_id: Option<String>,
    /// The event's `type` (`group_create`, `group_participants_add`, ...).
    pub event_type: Option<String>,
}

/// One thread of a chat history chunk (`history`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEvent {
    /// The thread's user, `None` for a chunk without threads (sharing declined, errors).
    pub thread_id: Option<String>,
    pub phase: Option<i64>,
    pub chunk_order: Option<i64>,
    /// Messages of the thread in this chunk.
    pub messages: usize,
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Message(_) => EventKind::Message,
            EventBody::Status(_) => EventKind::Status,
            EventBody::Error(_) => EventKind::Error,
            EventBody::Field(_) => EventKind::Field,
            EventBody::Echo(_) => EventKind::Echo,
            EventBody::Call(_) => EventKind::Call,
            EventBody::Group(_) => EventKind::Group,
            EventBody::History(_) => EventKind::History,
        }
    }

    /// What the log sink's `detail` and the events table's `field` say: the message type, the
    /// field of a change, the kind otherwise.
    pub fn detail(&self) -> &str {
        match self {
            EventBody::Message(m) => &m.message_type,
            EventBody::Status(_) => "status",
            EventBody::Error(_) => "error",
            EventBody::Field(f) => &f.field,
            EventBody::Echo(_) => "smb_message_echoes",
            EventBody::Call(_) => "calls",
            EventBody::Group(g) => &g.field,
            EventBody::History(_) => "history",
        }
    }
}

impl Event {
    pub fn event_kind(&self) -> EventKind {
        self.body.kind()
    }

    /// The wamid the event is about, if any.
    pub fn wamid(&self) -> Option<&str> {
        match &self.body {
            EventBody::Message(m) => Some(&m.wamid),
            EventBody::Status(s) => Some(&s.wamid),
            _ => None,
        }
    }
}

/// The kind a record claims in its header, for metrics before it is parsed.
pub fn claimed_kind(incoming: &Incoming) -> Option<EventKind> {
    incoming
        .header(HEADER_KIND)
        .and_then(|k| k.parse::<EventKind>().ok())
}

/// Routes one record. Content wins over headers where they disagree.
pub fn route(incoming: &Incoming) -> Result<Event> {
    if incoming.header(HEADER_KIND) == Some(EventKind::Unparsed.as_str()) {
        return Err(Error::ParseEvent(
            "the ingress could not parse the body this event came from".into(),
        ));
    }
    let record = incoming
        .payload
        .as_ref()
        .ok_or_else(|| Error::ParseEvent("the record has no value".into()))?;
    let payload = record.as_ref();
    let text = std::str::from_utf8(payload).map_err(|e| not_json(&e))?;
    // Read once, into typed fields: that parse checks the whole text is JSON (see RawJson).
    let provider = match incoming.header(HEADER_PROVIDER) {
        Some(p) => p
            .parse::<Provider>()
            .map_err(|e| Error::ParseEvent(e.to_string()))?,
        None => match EnvelopeKeys::of(text)? {
            EnvelopeKeys {
                object: Present(true),
                ..
            } => Provider::Meta,
            EnvelopeKeys {
                event: Present(true),
                ..
            } => Provider::Wasender,
            _ => {
                return Err(Error::ParseEvent(
                    "neither a Meta nor a WASender envelope".into(),
                ))
            }
        },
    };
    let body = match provider {
        Provider::Meta => route_meta(text)?,
        Provider::Wasender => route_wasender(text)?,
    };
    let id = event_id(provider, incoming, payload, &body);
    let kind = body.kind();
    Ok(Event {
        id,
        provider: provider.as_str(),
        kind: kind.as_str(),
        user_key: incoming.key_str(),
        partition: incoming.partition,
        offset: incoming.offset,
        received_at_ms: incoming.received_at_ms(),
        body,
        raw: RawJson::trimmed(record),
    })
}

/// What JSON allows around a value.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

fn not_json(error: &dyn std::fmt::Display) -> Error {
    Error::ParseEvent(format!("the value is not JSON: {error}"))
}

/// A typed parse's failure: the text is not JSON at all, or not the shape `what` names.
fn shape_error(what: &str, error: serde_json::Error) -> Error {
    match error.classify() {
        serde_json::error::Category::Data => Error::ParseEvent(format!("{what}: {error}")),
        _ => not_json(&error),
    }
}

/// Which of the two providers' top-level keys a JSON object has (with any value, even null).
#[derive(Default, Deserialize)]
struct EnvelopeKeys {
    #[serde(default)]
    object: Present,
    #[serde(default)]
    event: Present,
}

#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

impl EnvelopeKeys {
    fn of(text: &str) -> Result<EnvelopeKeys> {
        serde_json::from_str::<&RawValue>(text).map_err(|e| not_json(&e))?;
        // Only an object has keys (a derived struct would also read an array by position).
        if !text.trim_start_matches(JSON_WHITESPACE).starts_with('{') {
            return Ok(EnvelopeKeys::default());
        }
        Ok(serde_json::from_str(text).unwrap_or_default())
    }
}

/// The identity of an event: what makes two deliveries of it the same event, and nothing more.
///
/// - a message: its wamid (WASender: `key.id`);
/// - a status: `wamid:status` for a 1:1 message, `wamid:status:participant` for a group send
///   (each member's receipt is its own event);
/// - anything else: a digest. Where the event carries a time of its own (the entry's `time` of
///   a field change; echoes, calls, group events and history threads carry their own ids and
///   timestamps; every WASender event its `timestamp`), the digest is of the provider, entry
///   id, entry time, field and the event's bytes: the same event re-sent, in the same POST or
///   another batch, keeps its id, and the same change at another time is another event.
///   Without one (a value-level error), the event is identified by where it came from: the
///   digest of its POST and its index there (the ingress's headers), so a retry of that POST
///   and a re-read of the record give one id, and two POSTs never do. A record without those
///   headers is identified by its place in Kafka.
pub fn event_id(
    provider: Provider,
    incoming: &Incoming,
    payload: &[u8],
    body: &EventBody,
) -> String {
    match body {
        EventBody::Message(m) => m.wamid.clone(),
        EventBody::Status(s) => status_id(&s.wamid, s.status.as_str(), s.participant.as_deref()),
        _ => digest_id(provider, incoming, payload, body.kind()),
    }
}

/// `wamid:status`, with `:participant` for a group member's receipt.
pub fn status_id(wamid: &str, status: &str, participant: Option<&str>) -> String {
    match participant {
        Some(participant) => format!("{wamid}:{status}:{participant}"),
        None => format!("{wamid}:{status}"),
    }
}

fn digest_id(provider: Provider, incoming: &Incoming, payload: &[u8], kind: EventKind) -> String {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        entry: Vec<Entry<'a>>,
    }
    #[derive(Deserialize)]
    struct Entry<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(borrow)]
        time: Option<&'a RawValue>,
        #[serde(borrow)]
        changes: Vec<Change<'a>>,
    }
    #[derive(Deserialize)]
    struct Change<'a> {
        #[serde(borrow)]
        field: &'a RawValue,
        #[serde(borrow)]
        value: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Timestamp<'a> {
        #[serde(borrow)]
        timestamp: Option<&'a RawValue>,
    }

    let mut digest = Sha256::new();
    let mut part = |bytes: &[u8]| {
        digest.update(bytes);
        digest.update([0u8]);
    };
    part(provider.as_str().as_bytes());
    let timed_parts = match provider {
        Provider::Meta => serde_json::from_slice::<Envelope<'_>>(payload)
            .ok()
            .and_then(|envelope| {
                let entry = envelope.entry.into_iter().next()?;
                let change = entry.changes.into_iter().next()?;
                let own_time = matches!(
                    kind,
                    EventKind::Echo | EventKind::Call | EventKind::Group | EventKind::History
                );
                (entry.time.is_some() || own_time).then(|| {
                    [
                        entry.id.map_or("", RawValue::get),
                        entry.time.map_or("", RawValue::get),
                        change.field.get(),
                        change.value.get(),
                    ]
                    .map(|p| p.as_bytes().to_vec())
                })
            }),
        Provider::Wasender => serde_json::from_slice::<Timestamp<'_>>(payload)
            .ok()
            .and_then(|t| t.timestamp)
            .map(|_| {
                [
                    b"content".to_vec(),
                    payload.to_vec(),
                    Vec::new(),
                    Vec::new(),
                ]
            }),
    };
    match timed_parts {
        Some(parts) => {
            part(b"content");
            for p in &parts {
                part(p);
            }
        }
        None => match (
            incoming.header(HEADER_BODY_SHA256),
            incoming.header(HEADER_EVENT_INDEX),
        ) {
            (Some(body), Some(index)) => {
                part(b"post");
                part(body.as_bytes());
                part(index.as_bytes());
            }
            _ => {
                part(b"record");
                part(incoming.topic.as_bytes());
                part(incoming.partition.to_string().as_bytes());
                part(incoming.offset.to_string().as_bytes());
            }
        },
    }
    hex::encode(digest.finalize())
}

/// Reads what routing needs from the record's text: a `messages` change, which nearly every
/// event is, by [`crate::scan`]'s one pass; what that declines by a typed parse (the first
/// entry's first change; strings borrowed from the record, everything else skipped), the
/// change's value read as a `messages` value. Any other field, or a value that does not read
/// as one, is read again with the value kept as the record's own text until its field says how
/// to read it (which also gives a `messages` value's error).
fn route_meta(text: &str) -> Result<EventBody> {
    if let Some((field, value)) = crate::scan::meta_messages(text) {
        return Ok(route_messages_value(field, value));
    }
    // Boxed: the value is large, and a parse moves it up through every level of the envelope.
    if let Ok(envelope) = serde_json::from_str::<MetaEnvelope<'_, Box<MetaMessagesValue<'_>>>>(text)
    {
        if let Some(MetaChange {
            field,
            value: Some(value),
        }) = envelope.entry.0.and_then(|entry| entry.changes.0)
        {
            if field.as_str() == "messages" {
                return Ok(route_messages_value(field, *value));
            }
        }
    }
    let envelope: MetaEnvelope<'_, &RawValue> =
        serde_json::from_str(text).map_err(|e| shape_error("not a Meta envelope", e))?;
    let change = envelope
        .entry
        .0
        .and_then(|entry| entry.changes.0)
        .ok_or_else(|| Error::ParseEvent("the Meta envelope has no entry.changes".into()))?;
    if change.field.as_str() != "messages" {
        return route_other_field(change.field.into_string(), change.value);
    }
    let value: MetaMessagesValue<'_> =
        serde_json::from_str(change.value.map_or("null", RawValue::get))
            .map_err(|e| Error::ParseEvent(format!("not a messages value: {e}")))?;
    Ok(route_messages_value(change.field, value))
}

/// The event a `messages` change's value holds: a message, a status, an error, or (none of
/// those) a field event.
pub(crate) fn route_messages_value(field: Text<'_>, value: MetaMessagesValue<'_>) -> EventBody {
    let phone_number_id = value.metadata.and_then(|m| m.phone_number_id.into_string());
    if let Some(message) = value.messages.0 {
        let contact_name = value
            .contacts
            .0
            .and_then(|c| c.profile)
            .and_then(|p| p.name)
            .map(Text::into_string);
        return EventBody::Message(MessageEvent {
            message_type: message
                .message_type
                .map_or_else(|| "unknown".to_string(), Text::into_string),
            sent_at: unix_seconds(message.timestamp.as_deref()),
            wamid: message.id.into_string(),
            from: message.from.into_string(),
            from_user_id: message.from_user_id.map(Text::into_string),
            phone_number_id,
            group_id: message.group_id.map(Text::into_string),
            text: message.text.and_then(|t| t.body).map(Text::into_string),
            contact_name,
        });
    }
    if let Some(status) = value.statuses.0 {
        let participant = status
            .recipient_participant_id
            .as_ref()
            .and_then(|p| wapipe_core::split::normalize_user(p.as_str()));
        let recipient_id = status
            .recipient_participant_id
            .map(Text::into_string)
            .or(status.recipient_id.into_string())
            .or(status.recipient_user_id.map(Text::into_string));
        let delivery = DeliveryStatus::from(status.status.into_string());
        return EventBody::Status(StatusEvent {
            rank: delivery.rank(),
            status_at: unix_seconds(status.timestamp.as_deref()),
            wamid: status.id.into_string(),
            status: delivery,
            recipient_id,
            participant,
            phone_number_id,
            errors: status.errors,
        });
    }
    if let Some(error) = value.errors.0 {
        return EventBody::Error(ErrorEvent {
            code: error.code,
            title: error.title.map(Text::into_string),
            message: error.message.map(Text::into_string),
            phone_number_id,
        });
    }
    EventBody::Field(FieldEvent {
        field: field.into_string(),
    })
}

/// A change of a field other than `messages`: the typed kinds the ingress splits by user
/// (echoes, calls, group events, history threads), a value-level error of those fields, or a
/// field change kept whole.
fn route_other_field(field: String, value: Option<&RawValue>) -> Result<EventBody> {
    let value: Value = match value {
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| Error::ParseEvent(format!("not a change value: {e}")))?,
        None => Value::Null,
    };
    let text = |v: &Value, name: &str| -> Option<String> {
        match v.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let first = |name: &str| value.get(name).and_then(Value::as_array)?.first();
    let phone_number_id = value
        .get("metadata")
        .and_then(|m| text(m, "phone_number_id"));
    let typed = match field.as_str() {
        "smb_message_echoes" => first("message_echoes").map(|echo| {
            EventBody::Echo(EchoEvent {
                wamid: text(echo, "id"),
                to: text(echo, "to"),
                message_type: text(echo, "type"),
                sent_at: unix_seconds(text(echo, "timestamp").as_deref()),
                phone_number_id: phone_number_id.clone(),
            })
        }),
        "calls" => first("calls").or_else(|| first("statuses")).map(|call| {
            EventBody::Call(CallEvent {
                call_id: text(call, "id"),
                event: text(call, "event").or_else(|| text(call, "status")),
                direction: text(call, "direction"),
                phone_number_id: phone_number_id.clone(),
            })
        }),
        "history" => first("history").map(|item| {
            let metadata = item.get("metadata");
            let number = |name: &str| metadata.and_then(|m| text(m, name)?.parse().ok());
            let thread = item
                .get("threads")
                .and_then(Value::as_array)
                .and_then(|t| t.first());
            EventBody::History(HistoryEvent {
                thread_id: thread.and_then(|t| text(t, "id")),
                phase: number("phase"),
                chunk_order: number("chunk_order"),
                messages: thread
                    .and_then(|t| t.get("messages"))
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len),
            })
        }),
        f if f.starts_with("group_") => first("groups").map(|group| {
            EventBody::Group(GroupEvent {
                field: field.clone(),
                group_id: text(group, "group_id"),
                event_type: text(group, "type"),
            })
        }),
        _ => None,
    };
    if let Some(body) = typed {
        return Ok(body);
    }
    if let Some(error) = first("errors").filter(|_| field != "history") {
        return Ok(EventBody::Error(ErrorEvent {
            code: error.get("code").and_then(Value::as_i64),
            title: text(error, "title"),
            message: text(error, "message"),
            phone_number_id,
        }));
    }
    Ok(EventBody::Field(FieldEvent { field }))
}

fn route_wasender(text: &str) -> Result<EventBody> {
    let envelope: WasenderEnvelope =
        serde_json::from_str(text).map_err(|e| shape_error("not a WASender envelope", e))?;
    let kind = EventKind::of_wasender_event(&envelope.event);
    if kind == EventKind::Status {
        if let Some(status) = wasender_status_event(&envelope) {
            return Ok(EventBody::Status(status));
        }
    }
    let message = envelope.data.get("messages").and_then(|m| match m {
        Value::Array(items) => items.first(),
        other => Some(other),
    });
    match (kind, message) {
        (EventKind::Message, Some(message)) => {
            let message = WasenderMessage::deserialize(message)
                .map_err(|e| Error::ParseEvent(format!("not a WASender message: {e}")))?;
            let from = message
                .key
                .cleaned_participant_pn
                .clone()
                .or_else(|| message.key.cleaned_sender_pn.clone())
                .or_else(|| message.key.remote_jid.clone());
            let group_id = message
                .key
                .remote_jid
                .clone()
                .filter(|jid| jid.ends_with("@g.us"));
            let message_type = message
                .message
                .as_ref()
                .and_then(Value::as_object)
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_else(|| "unknown".into());
            let sent_at = wasender_seconds(
                message
                    .message_timestamp
                    .as_ref()
                    .or(envelope.timestamp.as_ref()),
            );
            Ok(EventBody::Message(MessageEvent {
                wamid: message.key.id,
                from,
                from_user_id: None,
                phone_number_id: envelope.session_id,
                message_type,
                group_id,
                text: message.message_body,
                contact_name: None,
                sent_at,
            }))
        }
        _ => Ok(EventBody::Field(FieldEvent {
            field: envelope.event,
        })),
    }
}

/// Unix seconds from a WASender timestamp, which comes as a number or a string, in seconds or
/// milliseconds depending on the event.
fn wasender_seconds(timestamp: Option<&Value>) -> Option<i64> {
    timestamp
        .and_then(|t| match t {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .map(|t| if t > 100_000_000_000 { t / 1000 } else { t })
}

/// A `messages.update` after the split: `data` is one `{key: {id, remoteJid}, update: {status}}`.
/// An update without a status code (a group's per-member receipt) is not a status of the
/// message and stays a field event.
fn wasender_status_event(envelope: &WasenderEnvelope) -> Option<StatusEvent> {
    let data = match &envelope.data {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let wamid = data.pointer("/key/id")?.as_str()?.to_string();
    let code = match data.pointer("/update/status")? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let status = match wapipe_core::split::wasender_status(&code).as_str() {
        "error" => DeliveryStatus::Failed,
        other => DeliveryStatus::from(other.to_string()),
    };
    let recipient_id = data
        .pointer("/key/remoteJid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let status_at = wasender_seconds(envelope.timestamp.as_ref());
    // In a group chat the update names the member it is about.
    let participant = recipient_id
        .as_deref()
        .filter(|jid| jid.ends_with("@g.us"))
        .and_then(|_| data.pointer("/key/participant")?.as_str())
        .and_then(wapipe_core::split::normalize_user);
    Some(StatusEvent {
        wamid,
        rank: status.rank(),
        status,
        recipient_id,
        participant,
        phone_number_id: envelope.session_id.clone(),
        status_at,
        errors: Vec::new(),
    })
}

/// The records the ingress produces for a POST of `body`, as the worker reads them (split,
/// keyed and with the ingress's headers; all on partition 0, offsets from 0): for tests and
/// tools that feed the worker without Kafka.
pub fn as_ingress_produces(provider: Provider, body: &[u8], topic: &str) -> Vec<Incoming> {
    let digest = wapipe_core::signature::body_sha256(body);
    wapipe_core::split::split(provider, body, "unparsed")
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let position = index.to_string();
            let headers = record
                .headers(provider, "1767000000000", &digest, &position)
                .into_iter()
                .collect();
            Incoming {
                topic: topic.into(),
                partition: 0,
                offset: index as i64,
                key: Some(record.key.into_bytes()),
                payload: Some(record.value.into()),
                headers,
            }
        })
        .collect()
}

/// A record as the ingress writes a Meta event, for the sinks' tests.
#[cfg(test)]
pub(crate) fn meta_record(key: &str, value: &Value) -> Incoming {
    Incoming {
        topic: "raw".into(),
        partition: 0,
        offset: 0,
        key: Some(key.as_bytes().to_vec()),
        payload: Some(
            serde_json::to_vec(value)
                .expect("a JSON value serializes")
                .into(),
        ),
        headers: [(HEADER_PROVIDER, "meta")].into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn incoming(kind: &str, provider: &str, value: Value) -> Incoming {
        Incoming {
            topic: "raw".into(),
            partition: 0,
            offset: 7,
            key: Some(b"15550001".to_vec()),
            payload: Some(serde_json::to_vec(&value).unwrap().into()),
            headers: [
                (HEADER_KIND, kind),
                (HEADER_PROVIDER, provider),
                (HEADER_RECEIVED_AT, "1700000000123"),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn meta(value: Value) -> Value {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "waba1", "changes": [
            {"field": "messages", "value": value}]}]})
    }

    #[test]
    fn a_meta_message_of_an_unknown_type_is_routed_as_a_message() {
        let event = route(&incoming(
            "message",
            "meta",
            meta(json!({"messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "1555", "phone_number_id": "pn1"},
                "contacts": [{"wa_id": "15550001", "profile": {"name": "Ann"}}],
                "messages": [{"from": "15550001", "id": "wamid.A", "timestamp": "1700000000",
                    "type": "hologram", "hologram": {}}]})),
        ))
        .unwrap();
        assert_eq!(event.id, "wamid.A");
        assert_eq!(event.received_at_ms, Some(1_700_000_000_123));
        let EventBody::Message(m) = &event.body else {
            panic!("not a message: {event:?}")
        };
        assert_eq!(m.message_type, "hologram");
        assert_eq!(m.contact_name.as_deref(), Some("Ann"));
        assert_eq!(m.sent_at, Some(1_700_000_000));
    }

    #[test]
    fn a_one_to_one_meta_status_is_identified_by_wamid_and_status() {
        let event = route(&incoming(
            "status",
            "meta",
            meta(json!({"statuses": [{"id": "wamid.B", "status": "read",
                "timestamp": "1700000001", "recipient_id": "15550002"}]})),
        ))
        .unwrap();
        assert_eq!(event.id, "wamid.B:read");
        assert!(matches!(&event.body, EventBody::Status(s) if s.rank == 3));
    }

    #[test]
    fn meta_errors_and_other_fields_are_routed_by_shape() {
        let error = route(&incoming(
            "error",
            "meta",
            meta(json!({"errors": [{"code": 131051, "title": "Unsupported"}]})),
        ))
        .unwrap();
        assert!(matches!(
            error.body,
            EventBody::Error(ErrorEvent {
                code: Some(131051),
                ..
            })
        ));
        let field = route(&incoming(
            "field",
            "meta",
            json!({"object": "whatsapp_business_account", "entry": [{"id": "w", "time": 1,
                "changes": [{"field": "message_template_status_update", "value": {"event": "APPROVED"}}]}]}),
        ))
        .unwrap();
        assert_eq!(
            field.body,
            EventBody::Field(FieldEvent {
                field: "message_template_status_update".into()
            })
        );
    }

    fn ingress_records(body: &str) -> Vec<Incoming> {
        as_ingress_produces(Provider::Meta, body.as_bytes(), "raw")
    }

    fn ids_of_kind(body: &str, kind: EventKind) -> Vec<String> {
        ingress_records(body)
            .iter()
            .map(|incoming| route(incoming).unwrap())
            .filter(|event| event.kind == kind.as_str())
            .map(|event| event.id)
            .collect()
    }

    fn errors_post(entry_time: Option<u32>, list: &[&str]) -> String {
        let time = entry_time.map_or(String::new(), |t| format!(r#""time":{t},"#));
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1001",{time}"changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550000","phone_number_id":"106540352242922"}},"errors":[{}]}}}}]}}]}}"#,
            list.join(",")
        )
    }

    fn template_post(entry_id: &str, time: u32, event: &str, extra: &str) -> String {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{entry_id}","time":{time},"changes":[{extra}{{"field":"message_template_status_update","value":{{"event":"{event}","message_template_id":42}}}}]}}]}}"#
        )
    }

    #[test]
    fn the_same_error_in_two_posts_is_two_events_and_a_retried_post_is_one() {
        let e1 =
            r#"{"code":131056,"title":"(Business Account, Consumer Account) pair rate limit hit"}"#;
        let e2 = r#"{"code":130429,"title":"Rate limit hit"}"#;
        // A value-level error carries no time: two occurrences of the same error are two
        // events, told apart by the POST they came in.
        let first = ids_of_kind(&errors_post(None, &[e1, e2]), EventKind::Error);
        let second = ids_of_kind(&errors_post(None, &[e1, e2]), EventKind::Error);
        assert_eq!(first.len(), 2);
        assert_ne!(first[0], first[1]);
        // Byte-identical bodies are one POST retried by Meta: the same ids.
        assert_eq!(first, second, "a retried POST got other ids");
        let again = ids_of_kind(&errors_post(None, &[e1, e1]), EventKind::Error);
        assert_ne!(again[0], again[1], "two errors of one POST merged");
        assert!(!first.contains(&again[1]));
    }

    #[test]
    fn field_changes_at_different_times_are_different_events() {
        let approved = ids_of_kind(
            &template_post("w1", 1767001000, "APPROVED", ""),
            EventKind::Field,
        );
        let paused = ids_of_kind(
            &template_post("w1", 1767002000, "PAUSED", ""),
            EventKind::Field,
        );
        let approved_again = ids_of_kind(
            &template_post("w1", 1767003000, "APPROVED", ""),
            EventKind::Field,
        );
        let all: std::collections::BTreeSet<_> = [&approved, &paused, &approved_again]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(all.len(), 3, "approved, paused, approved again: {all:?}");
        // The same change re-sent in another batch (other siblings) keeps its id.
        let rebatched = ids_of_kind(
            &template_post(
                "w1",
                1767001000,
                "APPROVED",
                r#"{"field":"phone_number_quality_update","value":{"event":"FLAGGED"}},"#,
            ),
            EventKind::Field,
        );
        assert_eq!(rebatched.len(), 2);
        assert_eq!(approved[0], rebatched[1], "the same change got another id");
        // The same change under another account is another event.
        assert_ne!(
            approved,
            ids_of_kind(
                &template_post("w2", 1767001000, "APPROVED", ""),
                EventKind::Field
            )
        );
    }

    #[test]
    fn a_record_read_again_keeps_its_id_and_one_without_ingress_headers_is_told_by_its_place() {
        let body = errors_post(None, &[r#"{"code":131056}"#]);
        let record = ingress_records(&body).remove(0);
        assert_eq!(route(&record).unwrap().id, route(&record).unwrap().id);
        let mut bare = record.clone();
        bare.headers = record
            .headers
            .iter()
            .filter(|(k, _)| *k != HEADER_BODY_SHA256 && *k != HEADER_EVENT_INDEX)
            .collect();
        let id = route(&bare).unwrap().id;
        assert_eq!(id, route(&bare).unwrap().id);
        bare.offset += 1;
        assert_ne!(id, route(&bare).unwrap().id);
    }

    #[test]
    fn group_receipts_of_each_member_are_their_own_events_and_one_to_one_ids_are_unchanged() {
        let receipt = |participant: &str, status: &str, ts: u32| {
            meta(json!({"statuses": [{"id": "wamid.G", "status": status,
                "timestamp": ts.to_string(), "recipient_id": "120363040000000000@g.us",
                "recipient_type": "group", "recipient_participant_id": participant}]}))
        };
        let mut ids = std::collections::BTreeSet::new();
        for (i, participant) in ["+15550001", "15550002", "15550003"].iter().enumerate() {
            for status in ["delivered", "read"] {
                let event = route(&incoming(
                    "status",
                    "meta",
                    receipt(participant, status, i as u32),
                ))
                .unwrap();
                ids.insert(event.id);
            }
        }
        assert_eq!(ids.len(), 6, "{ids:?}");
        assert!(ids.contains("wamid.G:read:15550001"), "{ids:?}");
        let one_to_one = route(&incoming(
            "status",
            "meta",
            meta(
                json!({"statuses": [{"id": "wamid.B", "status": "read", "recipient_id": "1555"}]}),
            ),
        ))
        .unwrap();
        assert_eq!(one_to_one.id, "wamid.B:read");
    }

    #[test]
    fn wasender_status_updates_are_statuses_and_other_events_fields_by_the_shared_rule() {
        let update = incoming(
            "status",
            "wasender",
            json!({"event": "messages.update", "timestamp": 1700000000123_i64, "sessionId": "s1",
                "data": {"key": {"id": "W9", "remoteJid": "15550001@s.whatsapp.net"},
                         "update": {"status": 4}}}),
        );
        let event = route(&update).unwrap();
        assert_eq!(
            event.event_kind(),
            EventKind::of_wasender_event("messages.update")
        );
        match &event.body {
            EventBody::Status(s) => {
                assert_eq!(s.wamid, "W9");
                assert_eq!(s.status, DeliveryStatus::Read);
                assert_eq!(s.status_at, Some(1700000000));
            }
            other => panic!("not a status: {other:?}"),
        }
        let failed = incoming(
            "status",
            "wasender",
            json!({"event": "messages.update", "data": {"key": {"id": "W9"}, "update": {"status": 0}}}),
        );
        assert!(matches!(route(&failed).unwrap().body,
            EventBody::Status(ref s) if s.status == DeliveryStatus::Failed));
        for event in ["messages.reaction", "message.sent", "session.status"] {
            let other = incoming(
                "field",
                "wasender",
                json!({"event": event, "data": {"messages": {"key": {"id": "W1"}}}}),
            );
            let routed = route(&other).unwrap();
            assert_eq!(
                routed.event_kind(),
                EventKind::of_wasender_event(event),
                "{event}"
            );
            assert_eq!(routed.event_kind(), EventKind::Field, "{event}");
        }
    }

    #[test]
    fn a_wasender_message_is_keyed_by_its_id() {
        let event = route(&incoming(
            "message",
            "wasender",
            json!({"event": "messages.received", "timestamp": 1700000000, "sessionId": "s1",
                "data": {"messages": {"key": {"id": "W1", "fromMe": false,
                    "remoteJid": "15550001@s.whatsapp.net", "cleanedSenderPn": "15550001"},
                    "messageBody": "hi", "message": {"conversation": "hi"}}}}),
        ))
        .unwrap();
        assert_eq!(event.wamid(), Some("W1"));
        let EventBody::Message(m) = &event.body else {
            panic!("not a message")
        };
        assert_eq!(m.from.as_deref(), Some("15550001"));
        assert_eq!(m.message_type, "conversation");
    }

    #[test]
    fn the_raw_event_is_the_records_text_and_must_be_json_to_the_end() {
        let text = r#" {"object": "whatsapp_business_account", "entry": [{"id": "w", "changes": [{"field": "messages", "value": {"messages": [{"id": "wamid.r", "type": "text"}]}}]}]}"#;
        let mut record = incoming("message", "meta", json!({}));
        record.payload = Some(format!("{text}\n").into_bytes().into());
        let event = route(&record).unwrap();
        assert_eq!(event.raw.get(), text.trim());
        assert_eq!(
            serde_json::to_value(&event).unwrap()["raw"]["entry"][0]["id"],
            "w"
        );
        record.payload = Some(format!("{text} trailing").into_bytes().into());
        let error = route(&record).unwrap_err().to_string();
        assert!(error.contains("not JSON"), "{error}");
        // Well-formed JSON of the wrong shape says so, rather than "not JSON".
        record.payload = Some(br#"{"entry": 5}"#.to_vec().into());
        let error = route(&record).unwrap_err().to_string();
        assert!(error.contains("not a Meta envelope"), "{error}");
    }

    #[test]
    fn unparsed_and_garbage_records_are_the_events_fault() {
        let mut garbage = incoming("unparsed", "meta", json!({}));
        garbage.payload = Some(b"\x00not json".to_vec().into());
        assert!(matches!(route(&garbage), Err(Error::ParseEvent(_))));
        let mut claimed_message = incoming("message", "meta", json!({}));
        claimed_message.payload = Some(b"{oops".to_vec().into());
        assert!(matches!(route(&claimed_message), Err(Error::ParseEvent(_))));
    }
}
