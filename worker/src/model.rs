//! Typed views of the single-event envelopes the ingress puts on the raw topic, in the
//! providers' own JSON shapes. Every struct ignores fields it does not know and every enum has
//! a catch-all, so a new field or message type from Meta never stops the pipeline.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// Meta's webhook envelope, cut down by the ingress to exactly one event.
#[derive(Debug, Clone, Deserialize)]
pub struct MetaEnvelope {
    #[serde(default)]
    pub object: Option<String>,
    #[serde(default)]
    pub entry: Vec<MetaEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetaEntry {
    /// WhatsApp Business Account id.
    #[serde(default, deserialize_with = "string_or_number")]
    pub id: Option<String>,
    #[serde(default)]
    pub changes: Vec<MetaChange>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetaChange {
    pub field: String,
    /// The change's value as it came, parsed only when its field is understood.
    #[serde(default)]
    pub value: Option<Box<RawValue>>,
}

/// The `value` of a `messages` change.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetaMessagesValue {
    #[serde(default)]
    pub metadata: Option<MetaMetadata>,
    #[serde(default)]
    pub contacts: Vec<MetaContact>,
    #[serde(default)]
    pub messages: Vec<MetaMessage>,
    #[serde(default)]
    pub statuses: Vec<MetaStatus>,
    #[serde(default)]
    pub errors: Vec<MetaError>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetaMetadata {
    #[serde(default, deserialize_with = "string_or_number")]
    pub display_phone_number: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub phone_number_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetaContact {
    #[serde(default)]
    pub wa_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub profile: Option<MetaProfile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetaProfile {
    #[serde(default)]
    pub name: Option<String>,
}

/// One inbound message. Type-specific content (`text`, `image`, ...) stays in the raw event.
#[derive(Debug, Clone, Deserialize)]
pub struct MetaMessage {
    pub id: String,
    #[serde(default, deserialize_with = "string_or_number")]
    pub from: Option<String>,
    #[serde(default)]
    pub from_user_id: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub timestamp: Option<String>,
    #[serde(rename = "type", default)]
    pub message_type: MessageType,
    #[serde(default)]
    pub group_id: Option<String>,
    #[serde(default)]
    pub context: Option<Value>,
    #[serde(default)]
    pub text: Option<MetaText>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetaText {
    #[serde(default)]
    pub body: Option<String>,
}

/// A message type; types wapipe does not know are kept under their own name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum MessageType {
    Text,
    Image,
    Audio,
    Video,
    Document,
    Sticker,
    Location,
    Contacts,
    Interactive,
    Button,
    Reaction,
    Order,
    System,
    Unsupported,
    Other(String),
}

impl Default for MessageType {
    fn default() -> Self {
        MessageType::Other("unknown".into())
    }
}

impl MessageType {
    pub fn as_str(&self) -> &str {
        match self {
            MessageType::Text => "text",
            MessageType::Image => "image",
            MessageType::Audio => "audio",
            MessageType::Video => "video",
            MessageType::Document => "document",
            MessageType::Sticker => "sticker",
            MessageType::Location => "location",
            MessageType::Contacts => "contacts",
            MessageType::Interactive => "interactive",
            MessageType::Button => "button",
            MessageType::Reaction => "reaction",
            MessageType::Order => "order",
            MessageType::System => "system",
            MessageType::Unsupported => "unsupported",
            MessageType::Other(other) => other,
        }
    }
}

impl From<String> for MessageType {
    fn from(raw: String) -> Self {
        match raw.as_str() {
            "text" => MessageType::Text,
            "image" => MessageType::Image,
            "audio" => MessageType::Audio,
            "video" => MessageType::Video,
            "document" => MessageType::Document,
            "sticker" => MessageType::Sticker,
            "location" => MessageType::Location,
            "contacts" => MessageType::Contacts,
            "interactive" => MessageType::Interactive,
            "button" => MessageType::Button,
            "reaction" => MessageType::Reaction,
            "order" => MessageType::Order,
            "system" => MessageType::System,
            "unsupported" => MessageType::Unsupported,
            _ => MessageType::Other(raw),
        }
    }
}

impl From<MessageType> for String {
    fn from(t: MessageType) -> Self {
        t.as_str().to_string()
    }
}

/// A delivery status of an outbound message.
#[derive(Debug, Clone, Deserialize)]
pub struct MetaStatus {
    pub id: String,
    pub status: DeliveryStatus,
    #[serde(default, deserialize_with = "string_or_number")]
    pub timestamp: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub recipient_id: Option<String>,
    #[serde(default)]
    pub recipient_user_id: Option<String>,
    #[serde(default)]
    pub recipient_participant_id: Option<String>,
    #[serde(default)]
    pub errors: Vec<Value>,
}

/// An error reported by the platform (`value.errors[]`).
#[derive(Debug, Clone, Deserialize)]
pub struct MetaError {
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// Delivery statuses, ordered by how far a message got.
///
/// `sent < delivered < read < played`: a status only replaces the current one when it ranks
/// higher, so a `delivered` that arrives after `read` changes nothing. `failed` is terminal: it
/// replaces any status (the platform gave up on the message) and nothing replaces it. Statuses
/// wapipe does not know rank lowest: they are recorded but never become the current status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Played,
    Failed,
    Other(String),
}

impl DeliveryStatus {
    pub fn as_str(&self) -> &str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Played => "played",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Other(other) => other,
        }
    }

    /// Position in the progression; the current status of a message is the highest seen.
    pub fn rank(&self) -> i16 {
        match self {
            DeliveryStatus::Other(_) => 0,
            DeliveryStatus::Sent => 1,
            DeliveryStatus::Delivered => 2,
            DeliveryStatus::Read => 3,
            DeliveryStatus::Played => 4,
            DeliveryStatus::Failed => 10,
        }
    }

    /// Whether `self`, arriving when `current` is recorded, becomes the current status.
    pub fn supersedes(&self, current: &DeliveryStatus) -> bool {
        self.rank() > current.rank()
    }
}

impl From<String> for DeliveryStatus {
    fn from(raw: String) -> Self {
        match raw.to_ascii_lowercase().as_str() {
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "read" => DeliveryStatus::Read,
            "played" => DeliveryStatus::Played,
            "failed" => DeliveryStatus::Failed,
            _ => DeliveryStatus::Other(raw),
        }
    }
}

impl From<DeliveryStatus> for String {
    fn from(s: DeliveryStatus) -> Self {
        s.as_str().to_string()
    }
}

/// WASenderApi's webhook: `{"event": .., "timestamp": .., "sessionId": .., "data": {..}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct WasenderEnvelope {
    pub event: String,
    #[serde(default)]
    pub timestamp: Option<Value>,
    #[serde(default, rename = "sessionId")]
    pub session_id: Option<String>,
    #[serde(default)]
    pub data: Value,
}

/// `data.messages` of a `messages.received` event (one message after the split).
#[derive(Debug, Clone, Deserialize)]
pub struct WasenderMessage {
    pub key: WasenderKey,
    #[serde(default, rename = "messageBody")]
    pub message_body: Option<String>,
    #[serde(default)]
    pub message: Option<Value>,
    #[serde(default, rename = "messageTimestamp")]
    pub message_timestamp: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WasenderKey {
    pub id: String,
    #[serde(default, rename = "fromMe")]
    pub from_me: Option<bool>,
    #[serde(default, rename = "remoteJid")]
    pub remote_jid: Option<String>,
    #[serde(default, rename = "cleanedSenderPn")]
    pub cleaned_sender_pn: Option<String>,
    #[serde(default, rename = "cleanedParticipantPn")]
    pub cleaned_participant_pn: Option<String>,
}

/// Meta sends ids and timestamps as strings, but some senders (and test tools) use numbers.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Parses a unix-seconds timestamp as Meta sends it.
pub fn unix_seconds(raw: Option<&str>) -> Option<i64> {
    raw.and_then(|s| s.trim().parse::<i64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_delivered_never_supersedes_read() {
        assert!(!DeliveryStatus::Delivered.supersedes(&DeliveryStatus::Read));
        assert!(DeliveryStatus::Read.supersedes(&DeliveryStatus::Delivered));
        assert!(DeliveryStatus::Delivered.supersedes(&DeliveryStatus::Sent));
        assert!(DeliveryStatus::Played.supersedes(&DeliveryStatus::Read));
    }

    #[test]
    fn failed_is_terminal_and_unknown_statuses_never_become_current() {
        assert!(DeliveryStatus::Failed.supersedes(&DeliveryStatus::Read));
        assert!(!DeliveryStatus::Read.supersedes(&DeliveryStatus::Failed));
        let unknown = DeliveryStatus::from("deleted".to_string());
        assert_eq!(unknown.as_str(), "deleted");
        assert!(!unknown.supersedes(&DeliveryStatus::Sent));
    }

    #[test]
    fn unknown_message_types_keep_their_name() {
        let message: MetaMessage = serde_json::from_value(serde_json::json!({
            "id": "wamid.1", "from": "15550001", "timestamp": "1700000000",
            "type": "hologram", "hologram": {"depth": 3}, "brand_new_field": true
        }))
        .unwrap();
        assert_eq!(message.message_type, MessageType::Other("hologram".into()));
        assert_eq!(message.message_type.as_str(), "hologram");
    }
}
