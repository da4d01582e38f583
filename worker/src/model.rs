//! Typed views of the single-event envelopes the ingress puts on the raw topic, in the
//! providers' own JSON shapes. Every struct ignores fields it does not know and every enum has
//! a catch-all, so a new field or message type from Meta never stops the pipeline.

use std::borrow::Cow;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Meta's webhook envelope, cut down by the ingress to exactly one event, read as far as routing
/// needs: the first entry's first change, its `value` read as `V`: the record's own text
/// (`&RawValue`, borrowed, not copied) until its field says how to read it, or directly as a
/// [`MetaMessagesValue`] when it is most likely one.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "'de: 'a, V: Deserialize<'de>"))]
pub struct MetaEnvelope<'a, V> {
    #[serde(default)]
    pub entry: First<MetaEntry<'a, V>>,
}

#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "'de: 'a, V: Deserialize<'de>"))]
pub struct MetaEntry<'a, V> {
    #[serde(default)]
    pub changes: First<MetaChange<'a, V>>,
}

#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "'de: 'a, V: Deserialize<'de>"))]
pub struct MetaChange<'a, V> {
    pub field: Text<'a>,
    #[serde(default = "none")]
    pub value: Option<V>,
}

fn none<V>() -> Option<V> {
    None
}

/// The `value` of a `messages` change, borrowing its strings from the record.
#[derive(Debug, Default, Deserialize)]
pub struct MetaMessagesValue<'a> {
    #[serde(borrow, default)]
    pub metadata: Option<MetaMetadata<'a>>,
    #[serde(borrow, default)]
    pub contacts: First<MetaContact<'a>>,
    #[serde(borrow, default)]
    pub messages: First<MetaMessage<'a>>,
    #[serde(borrow, default)]
    pub statuses: First<MetaStatus<'a>>,
    #[serde(borrow, default)]
    pub errors: First<MetaError<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MetaMetadata<'a> {
    #[serde(borrow, default)]
    pub phone_number_id: Loose<'a>,
}

#[derive(Debug, Deserialize)]
pub struct MetaContact<'a> {
    #[serde(borrow, default)]
    pub profile: Option<MetaProfile<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct MetaProfile<'a> {
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
}

/// One inbound message. Type-specific content (`text`, `image`, ...) stays in the raw event.
#[derive(Debug, Deserialize)]
pub struct MetaMessage<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    #[serde(borrow, default)]
    pub from: Loose<'a>,
    #[serde(borrow, default)]
    pub from_user_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub timestamp: Loose<'a>,
    /// Any type, known to wapipe or not, is kept under its own name.
    #[serde(borrow, rename = "type", default)]
    pub message_type: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub group_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub text: Option<MetaText<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct MetaText<'a> {
    #[serde(borrow, default)]
    pub body: Option<Text<'a>>,
}

/// A delivery status of an outbound message.
#[derive(Debug, Deserialize)]
pub struct MetaStatus<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
    #[serde(borrow)]
    pub status: Text<'a>,
    #[serde(borrow, default)]
    pub timestamp: Loose<'a>,
    #[serde(borrow, default)]
    pub recipient_id: Loose<'a>,
    #[serde(borrow, default)]
    pub recipient_user_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub recipient_participant_id: Option<Text<'a>>,
    #[serde(default)]
    pub errors: Vec<Value>,
}

/// An error reported by the platform (`value.errors[]`).
#[derive(Debug, Deserialize)]
pub struct MetaError<'a> {
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(borrow, default)]
    pub title: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub message: Option<Text<'a>>,
}

/// The first element of a JSON array; the rest are skipped unread (the ingress puts one event
/// in a record, so there is no rest). Absent, or an empty array: `None`.
#[derive(Debug)]
pub struct First<T>(pub Option<T>);

impl<T> Default for First<T> {
    fn default() -> Self {
        First(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Visit<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

/// A JSON string, borrowed from the record unless it has escapes. (serde's own `Cow<str>`
/// borrows only outside an `Option`, so routing's optional fields use this.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0.into_owned()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// An id or a timestamp: Meta sends them as strings, some senders (and test tools) as numbers;
/// anything else (null, an object) reads as absent.
#[derive(Debug, Default)]
pub struct Loose<'a>(pub Option<Cow<'a, str>>);

impl<'a> Loose<'a> {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn into_string(self) -> Option<String> {
        self.0.map(Cow::into_owned)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Loose<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Loose<'de>, E> {
                Ok(Loose(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose<'de>, E> {
                Ok(Loose(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Loose<'de>, E> {
                Ok(Loose(Some(Cow::Owned(v))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Loose<'de>, E> {
                Ok(Loose(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Loose<'de>, E> {
                Ok(Loose(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Loose<'de>, E> {
                // As serde_json writes a number it read.
                Ok(Loose(
                    serde_json::Number::from_f64(v).map(|n| Cow::Owned(n.to_string())),
                ))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Loose<'de>, E> {
                Ok(Loose(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Loose<'de>, E> {
                Ok(Loose(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Loose<'de>, E> {
                Ok(Loose(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose<'de>, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
        }
        d.deserialize_any(Visit)
    }
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
    fn a_message_borrows_its_strings_and_reads_numbers_as_text() {
        let text = r#"{"id": "wamid.1", "from": 15550001, "timestamp": "1700000000",
            "type": "hologram", "hologram": {"depth": 3}, "brand_new_field": true,
            "text": {"body": "line\nbreak"}}"#;
        let message: MetaMessage<'_> = serde_json::from_str(text).unwrap();
        assert!(matches!(message.id.0, Cow::Borrowed("wamid.1")));
        assert_eq!(message.from.as_deref(), Some("15550001"));
        assert!(matches!(
            message.timestamp.0,
            Some(Cow::Borrowed("1700000000"))
        ));
        assert_eq!(
            message.message_type.map(Text::into_string).as_deref(),
            Some("hologram")
        );
        // An escape cannot be borrowed: the string is unescaped into its own buffer.
        let body = message.text.and_then(|t| t.body).unwrap();
        assert_eq!(body.as_str(), "line\nbreak");
        assert!(matches!(body.0, Cow::Owned(_)));
    }

    #[test]
    fn only_the_first_element_of_an_array_is_read_and_the_rest_must_still_be_json() {
        let first: First<Text<'_>> = serde_json::from_str(r#"["a", {"b": [1, 2]}, null]"#).unwrap();
        assert_eq!(first.0.map(Text::into_string).as_deref(), Some("a"));
        let empty: First<Text<'_>> = serde_json::from_str("[]").unwrap();
        assert!(empty.0.is_none());
        assert!(serde_json::from_str::<First<Text<'_>>>(r#"["a", {"b" 1}]"#).is_err());
        assert!(serde_json::from_str::<First<Text<'_>>>(r#""a""#).is_err());
    }

    #[test]
    fn loose_ids_are_absent_when_neither_string_nor_number() {
        for (json, expected) in [
            (r#""pn1""#, Some("pn1")),
            ("106540352242922", Some("106540352242922")),
            ("-3", Some("-3")),
            ("1.5", Some("1.5")),
            ("null", None),
            ("true", None),
            (r#"{"a": [1]}"#, None),
            ("[1, 2]", None),
        ] {
            let loose: Loose<'_> = serde_json::from_str(json).unwrap();
            assert_eq!(loose.as_deref(), expected, "{json}");
        }
    }
}
