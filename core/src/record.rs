//! The contract of one record on the raw topic.
//!
//! The key is the user the event belongs to (see [`crate::split`]); the value is a single-event
//! envelope in the provider's own JSON shape; the headers below carry provenance so that the
//! worker, the dead-letter topic and an operator reading records by hand can tell where an event
//! came from without parsing it.

use std::fmt;
use std::str::FromStr;

/// `meta` or `wasender`.
pub const HEADER_PROVIDER: &str = "wapipe-provider";
/// Unix time in milliseconds at which the ingress received the POST, as a decimal string.
pub const HEADER_RECEIVED_AT: &str = "wapipe-received-at";
/// One of [`EventKind`]'s names.
pub const HEADER_KIND: &str = "wapipe-kind";
/// Provider's message id (the wamid for Meta, `key.id` for WASender); absent when the event has none.
pub const HEADER_MESSAGE_ID: &str = "wapipe-message-id";
/// Delivery status of a status event (`sent`, `delivered`, `read`, `failed`, `played`, ...).
pub const HEADER_STATUS: &str = "wapipe-status";
/// Meta's change `field` (`messages`, `message_template_status_update`, ...) or WASender's event name.
pub const HEADER_FIELD: &str = "wapipe-field";
/// Lowercase hex SHA-256 of the whole POST body the event was split from.
pub const HEADER_BODY_SHA256: &str = "wapipe-body-sha256";
/// Zero-based position of the event within its POST.
pub const HEADER_EVENT_INDEX: &str = "wapipe-event-index";

/// Dead-letter headers, written by the worker beside the original headers.
pub const HEADER_DLQ_ERROR: &str = "wapipe-dlq-error";
pub const HEADER_DLQ_ATTEMPTS: &str = "wapipe-dlq-attempts";
pub const HEADER_DLQ_SOURCE_TOPIC: &str = "wapipe-dlq-source-topic";
pub const HEADER_DLQ_SOURCE_PARTITION: &str = "wapipe-dlq-source-partition";
pub const HEADER_DLQ_SOURCE_OFFSET: &str = "wapipe-dlq-source-offset";
pub const HEADER_DLQ_FIRST_FAILURE_AT: &str = "wapipe-dlq-first-failure-at";
pub const HEADER_DLQ_LAST_FAILURE_AT: &str = "wapipe-dlq-last-failure-at";

/// Whether `key` is one of the dead-letter headers above. A record dead-lettered again, or
/// replayed to the raw topic, drops them first: the next failure writes its own, and a
/// replayed record must look like the original.
pub fn is_dead_letter_header(key: &str) -> bool {
    key.starts_with("wapipe-dlq-")
}

/// A fieldless enum declared with each variant's name: `ALL` (every variant, in order),
/// `as_str` (a variant's name, as headers and labels write it) and `Display` (the same name)
/// all come from that one list.
macro_rules! named_enum {
    (
        $(#[$attr:meta])*
        pub enum $name:ident {
            $($(#[$variant_attr:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$attr])*
        pub enum $name {
            $($(#[$variant_attr])* $variant,)+
        }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// Which provider signed and sent a webhook. On command lines its choices are listed by
    /// `--help` (clap's `ValueEnum`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[cfg_attr(any(feature = "kafka", feature = "service"), derive(clap::ValueEnum))]
    pub enum Provider {
        /// Meta's WhatsApp Cloud API (`X-Hub-Signature-256`).
        Meta => "meta",
        /// WASenderApi (`X-Webhook-Signature`).
        Wasender => "wasender",
    }
}

impl FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "meta" => Ok(Provider::Meta),
            "wasender" => Ok(Provider::Wasender),
            other => Err(format!(
                "unknown provider {other:?}: expected meta or wasender"
            )),
        }
    }
}

named_enum! {
    /// What one record on the raw topic holds.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum EventKind {
        /// An inbound message from a user (any type, including ones wapipe does not know).
        Message => "message",
        /// A delivery status of an outbound message.
        Status => "status",
        /// An error reported by the platform with no message attached (`value.errors[]`).
        Error => "error",
        /// A change of a field other than messages (template status, quality updates, ...), or a
        /// provider event that is neither a message nor a status.
        Field => "field",
        /// A signed body whose shape was not understood, kept whole so it can be dead-lettered.
        Unparsed => "unparsed",
        /// A message the business sent from the WhatsApp Business app, echoed to the API
        /// (`smb_message_echoes`), keyed by the user it was sent to.
        Echo => "echo",
        /// A call event or call status (`calls`), keyed by the user's side of the call.
        Call => "call",
        /// A group event (`group_lifecycle_update`, `group_participants_update`, ...), keyed by
        /// the group.
        Group => "group",
        /// One thread of a chat history chunk (`history`), keyed by the thread's user.
        History => "history",
    }
}

impl EventKind {
    /// The kind of a WASender event, by its `event` name: the ingress writes it into the
    /// record's header and the worker routes by it, so both use this one rule.
    ///
    /// Messages are the events that carry a received or upserted message in `data.messages`;
    /// statuses are `messages.update` (a status code per message) and `message-receipt.update`
    /// (per-member receipts in groups); every other event (`message.sent`, `messages.delete`,
    /// `messages.reaction`, `chats.upsert`, `session.status`, ...) is kept as a field event.
    pub fn of_wasender_event(event: &str) -> EventKind {
        match event {
            "messages.received"
            | "messages.upsert"
            | "messages.personal.received"
            | "messages.group.received" => EventKind::Message,
            "messages.update" | "message-receipt.update" => EventKind::Status,
            _ => EventKind::Field,
        }
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind {s:?}"))
    }
}

/// One event split from a POST, ready to be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition key: the user the event belongs to.
    pub key: String,
    /// Single-event envelope in the provider's JSON shape (or the whole body for `Unparsed`).
    pub value: Vec<u8>,
    pub kind: EventKind,
    /// Meta change field or WASender event name, when known.
    pub field: Option<String>,
    pub message_id: Option<String>,
    pub status: Option<String>,
    /// Set when the event is of a field or message type wapipe does not know: it is still
    /// produced (and written by the worker as raw JSON), and the ingress counts it.
    pub unknown: Option<UnknownShape>,
}

/// A shape wapipe does not know: the field (or WASender event) and the message type, `-` when
/// the field itself is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownShape {
    pub field: String,
    pub message_type: String,
}

impl Record {
    /// Headers as (name, value) pairs, in a stable order. `received_at_ms` and `body_sha256`
    /// are per POST; `index` is the event's position in it.
    pub fn headers<'a>(
        &'a self,
        provider: Provider,
        received_at_ms: &'a str,
        body_sha256: &'a str,
        index: &'a str,
    ) -> Vec<(&'static str, &'a str)> {
        let mut headers = vec![
            (HEADER_PROVIDER, provider.as_str()),
            (HEADER_RECEIVED_AT, received_at_ms),
            (HEADER_KIND, self.kind.as_str()),
            (HEADER_BODY_SHA256, body_sha256),
            (HEADER_EVENT_INDEX, index),
        ];
        if let Some(field) = &self.field {
            headers.push((HEADER_FIELD, field));
        }
        if let Some(id) = &self.message_id {
            headers.push((HEADER_MESSAGE_ID, id));
        }
        if let Some(status) = &self.status {
            headers.push((HEADER_STATUS, status));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_variant() {
        for kind in EventKind::ALL {
            assert_eq!(kind.to_string().parse(), Ok(kind));
        }
        assert!(
            "Message".parse::<EventKind>().is_err(),
            "kinds match exactly"
        );
        for provider in Provider::ALL {
            assert_eq!(provider.as_str().to_uppercase().parse(), Ok(provider));
        }
    }
}
