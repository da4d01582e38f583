//! Splitting one provider POST into one record per event, each keyed by its user.
//!
//! A Meta POST holds `entry[]`, each with `changes[]`; a `messages` change holds any number of
//! `messages[]`, `statuses[]` and `errors[]`, possibly for several users. Every one of them
//! becomes its own record whose value is a single-event envelope of Meta's own shape (the other
//! keys of the change value are kept, `contacts` is narrowed to the event's user). Every event
//! object is copied byte for byte from the POST, so nothing is re-encoded.
//!
//! Keys, so that one user's events land on one partition in order:
//! - message: `from`, else `from_user_id` (usernames hide the phone number);
//! - status: `recipient_participant_id` for group sends, else `recipient_id`, else
//!   `recipient_user_id`;
//! - echo (`smb_message_echoes`): the user it went `to`;
//! - call (`calls`): the caller of a user-initiated call, the callee of a business-initiated
//!   one; a call status its `recipient_id`;
//! - group event (`group_*` fields): the `group_id`;
//! - history: one record per thread, keyed by the thread's `id`;
//! - `user_preferences` and `smb_app_state_sync`: their user;
//! - everything with no user: the business `phone_number_id`, else the entry id (WABA);
//! - WASender: the participant's phone in groups, else the sender's phone.
//!
//! A body that is not JSON, or whose shape is not understood, is still produced whole under
//! the fallback key: nothing signed is ever dropped.

use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::record::{EventKind, Provider, Record, UnknownShape};

/// Splits `body` from `provider` into records. Never fails and never returns an empty list.
pub fn split(provider: Provider, body: &[u8], fallback_key: &str) -> Vec<Record> {
    let records = match provider {
        Provider::Meta => split_meta(body),
        Provider::Wasender => split_wasender(body),
    };
    match records {
        Some(mut records) if !records.is_empty() => {
            for record in &mut records {
                if record.key.is_empty() {
                    record.key = fallback_key.to_string();
                }
            }
            records
        }
        _ => vec![unparsed(body, fallback_key)],
    }
}

fn unparsed(body: &[u8], fallback_key: &str) -> Record {
    Record {
        key: fallback_key.to_string(),
        value: body.to_vec(),
        kind: EventKind::Unparsed,
        field: None,
        message_id: None,
        status: None,
        unknown: None,
    }
}

/// A JSON object kept as its members' raw bytes, in their original order.
struct RawObject<'a>(Vec<(String, &'a RawValue)>);

impl<'a> RawObject<'a> {
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    fn parse(raw: &'a RawValue) -> Option<RawObject<'a>> {
        serde_json::from_str(raw.get()).ok()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(RawObject(members))
            }
        }
        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// A JSON array kept as its elements' raw bytes.
fn raw_array(raw: &RawValue) -> Option<Vec<&RawValue>> {
    struct ArrayVisitor;
    impl<'de> Visitor<'de> for ArrayVisitor {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    deserializer.deserialize_seq(ArrayVisitor).ok()
}

/// Reads the string (or number) members named in `path` from an event object without
/// building a full tree: the identifiers used for keys and headers.
fn lookup(raw: &RawValue, path: &[&str]) -> Option<String> {
    let mut current = raw;
    for name in path {
        current = RawObject::parse(current)?.get(name)?;
    }
    match serde_json::from_str::<Value>(current.get()).ok()? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Normalizes a user identifier for keying: Meta documents `from` with a leading `+` in places
/// and without it in examples; WASender JIDs carry an `@server` suffix.
pub fn normalize_user(id: &str) -> Option<String> {
    let id = id.trim();
    let id = id.strip_prefix('+').unwrap_or(id);
    let id = id.split_once('@').map_or(id, |(user, _)| user);
    (!id.is_empty()).then(|| id.to_string())
}

fn first_user(raw: &RawValue, paths: &[&[&str]]) -> Option<String> {
    paths
        .iter()
        .find_map(|path| lookup(raw, path).and_then(|id| normalize_user(&id)))
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// Appends `"name":value` members to a JSON object under construction.
fn push_member(out: &mut String, name: &str, value: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push_str(&json_string(name));
    out.push(':');
    out.push_str(value);
}

fn json_array<'a>(items: impl IntoIterator<Item = &'a RawValue>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item.get());
    }
    out.push(']');
    out
}

/// The parts of a Meta POST shared by every event in one change.
struct MetaChangeContext<'a> {
    object: Option<&'a RawValue>,
    entry: &'a RawObject<'a>,
    field: &'a str,
    field_raw: &'a RawValue,
}

impl MetaChangeContext<'_> {
    /// `{"object":..,"entry":[{<entry members but changes>,"changes":[{"field":..,"value":VALUE}]}]}`
    fn envelope(&self, value: &str) -> Vec<u8> {
        let mut out = String::from("{");
        if let Some(object) = self.object {
            push_member(&mut out, "object", object.get());
        }
        out.push_str(if out.ends_with('{') { "" } else { "," });
        out.push_str("\"entry\":[{");
        for (name, member) in &self.entry.0 {
            if name != "changes" {
                push_member(&mut out, name, member.get());
            }
        }
        let mut change = String::from("{");
        push_member(&mut change, "field", self.field_raw.get());
        push_member(&mut change, "value", value);
        change.push('}');
        push_member(&mut out, "changes", &format!("[{change}]"));
        out.push_str("}]}");
        out.into_bytes()
    }

    fn business_key(&self, value: Option<&RawObject>) -> String {
        value
            .and_then(|v| v.get("metadata"))
            .and_then(|m| lookup(m, &["phone_number_id"]))
            .or_else(|| self.entry.get("id").and_then(|id| lookup(id, &[])))
            .unwrap_or_default()
    }
}

/// Meta's change fields wapipe knows (the webhook reference's subscribable fields, calls and
/// the group fields); a change of any other field is kept whole and flagged as unknown.
pub const KNOWN_META_FIELDS: &[&str] = &[
    "account_alerts",
    "account_review_update",
    "account_update",
    "automatic_events",
    "business_capability_update",
    "calls",
    "group_lifecycle_update",
    "group_participants_update",
    "group_settings_update",
    "group_status_update",
    "history",
    "message_template_components_update",
    "message_template_quality_update",
    "message_template_status_update",
    "messages",
    "partner_solutions",
    "payment_configuration_update",
    "phone_number_name_update",
    "phone_number_quality_update",
    "security",
    "smb_app_state_sync",
    "smb_message_echoes",
    "template_category_update",
    "user_preferences",
];

/// Inbound message types wapipe knows; a message of another type is still produced whole and
/// flagged as unknown.
pub const KNOWN_MESSAGE_TYPES: &[&str] = &[
    "audio",
    "button",
    "contacts",
    "document",
    "edit",
    "image",
    "interactive",
    "location",
    "order",
    "reaction",
    "request_welcome",
    "revoke",
    "sticker",
    "system",
    "text",
    "unsupported",
    "video",
];

/// Who an event names as its user: a phone number, else a business-scoped user id.
type UserOf = fn(&RawValue, &RawObject) -> (Option<String>, Option<String>);

/// One array of events in a change value: its member name, the kind of its events and how
/// each names its user.
struct EventArray {
    name: &'static str,
    kind: EventKind,
    user: UserOf,
}

fn no_user(_: &RawValue, _: &RawObject) -> (Option<String>, Option<String>) {
    (None, None)
}

fn message_user(event: &RawValue, _: &RawObject) -> (Option<String>, Option<String>) {
    (
        first_user(event, &[&["from"]]),
        first_user(event, &[&["from_user_id"]]),
    )
}

fn status_user(event: &RawValue, _: &RawObject) -> (Option<String>, Option<String>) {
    let group = lookup(event, &["recipient_type"]).as_deref() == Some("group");
    let participant = first_user(event, &[&["recipient_participant_id"]]);
    let phone = if group || participant.is_some() {
        participant.or_else(|| first_user(event, &[&["recipient_id"]]))
    } else {
        first_user(event, &[&["recipient_id"]])
    };
    (phone, first_user(event, &[&["recipient_user_id"]]))
}

/// An echo is sent by the business: its user is the one it went `to`.
fn echo_user(event: &RawValue, _: &RawObject) -> (Option<String>, Option<String>) {
    (
        first_user(event, &[&["to"]]),
        first_user(event, &[&["to_user_id"], &["recipient_user_id"]]),
    )
}

/// A call's user is the caller of a user-initiated call and the callee of a business-initiated
/// one; without a direction, the side that is not the business's number.
fn call_user(event: &RawValue, value: &RawObject) -> (Option<String>, Option<String>) {
    let direction = lookup(event, &["direction"])
        .unwrap_or_default()
        .to_ascii_uppercase();
    let from = (
        first_user(event, &[&["from"]]),
        first_user(event, &[&["from_user_id"]]),
    );
    let to = (
        first_user(event, &[&["to"]]),
        first_user(event, &[&["to_user_id"]]),
    );
    match direction.as_str() {
        "USER_INITIATED" => from,
        "BUSINESS_INITIATED" => to,
        _ => {
            let business = value
                .get("metadata")
                .and_then(|m| first_user(m, &[&["display_phone_number"]]));
            if business.is_some() && from.0 == business {
                to
            } else {
                from
            }
        }
    }
}

fn group_user(event: &RawValue, _: &RawObject) -> (Option<String>, Option<String>) {
    (lookup(event, &["group_id"]), None)
}

fn thread_user(thread: &RawValue, _: &RawObject) -> (Option<String>, Option<String>) {
    (first_user(thread, &[&["id"]]), None)
}

fn preferences_user(event: &RawValue, _: &RawObject) -> (Option<String>, Option<String>) {
    (
        first_user(event, &[&["wa_id"]]),
        first_user(event, &[&["user_id"]]),
    )
}

fn state_sync_user(event: &RawValue, _: &RawObject) -> (Option<String>, Option<String>) {
    (first_user(event, &[&["contact", "phone_number"]]), None)
}

const ERRORS: EventArray = EventArray {
    name: "errors",
    kind: EventKind::Error,
    user: no_user,
};

/// The event arrays of a field's value, in the order their events are produced; `None` for a
/// field whose change is one event.
fn event_arrays(field: &str) -> Option<&'static [EventArray]> {
    const MESSAGES: &[EventArray] = &[
        EventArray {
            name: "messages",
            kind: EventKind::Message,
            user: message_user,
        },
        EventArray {
            name: "statuses",
            kind: EventKind::Status,
            user: status_user,
        },
        ERRORS,
    ];
    const ECHOES: &[EventArray] = &[
        EventArray {
            name: "message_echoes",
            kind: EventKind::Echo,
            user: echo_user,
        },
        ERRORS,
    ];
    const CALLS: &[EventArray] = &[
        EventArray {
            name: "calls",
            kind: EventKind::Call,
            user: call_user,
        },
        EventArray {
            name: "statuses",
            kind: EventKind::Call,
            user: status_user,
        },
        ERRORS,
    ];
    const GROUPS: &[EventArray] = &[
        EventArray {
            name: "groups",
            kind: EventKind::Group,
            user: group_user,
        },
        ERRORS,
    ];
    const HISTORY: &[EventArray] = &[EventArray {
        name: "history",
        kind: EventKind::History,
        user: thread_user,
    }];
    const PREFERENCES: &[EventArray] = &[EventArray {
        name: "user_preferences",
        kind: EventKind::Field,
        user: preferences_user,
    }];
    const STATE_SYNC: &[EventArray] = &[EventArray {
        name: "state_sync",
        kind: EventKind::Field,
        user: state_sync_user,
    }];
    match field {
        "messages" => Some(MESSAGES),
        "smb_message_echoes" => Some(ECHOES),
        "calls" => Some(CALLS),
        "history" => Some(HISTORY),
        "user_preferences" => Some(PREFERENCES),
        "smb_app_state_sync" => Some(STATE_SYNC),
        f if f.starts_with("group_") => Some(GROUPS),
        _ => None,
    }
}

fn split_meta(body: &[u8]) -> Option<Vec<Record>> {
    let text = std::str::from_utf8(body).ok()?;
    let root: RawObject = serde_json::from_str(text).ok()?;
    let object = root.get("object");
    let entries = raw_array(root.get("entry")?)?;
    let mut records = Vec::new();
    for entry_raw in entries {
        let Some(entry) = RawObject::parse(entry_raw) else {
            records.push(unparsed_part(entry_raw, ""));
            continue;
        };
        let Some(changes) = entry.get("changes").and_then(raw_array) else {
            records.push(unparsed_part(entry_raw, &lookup_key(&entry)));
            continue;
        };
        for change_raw in changes {
            split_meta_change(object, &entry, change_raw, &mut records);
        }
    }
    Some(records)
}

fn lookup_key(entry: &RawObject) -> String {
    entry
        .get("id")
        .and_then(|id| lookup(id, &[]))
        .unwrap_or_default()
}

/// A piece of a POST that could not be understood, kept whole.
fn unparsed_part(raw: &RawValue, key: &str) -> Record {
    Record {
        key: key.to_string(),
        value: raw.get().as_bytes().to_vec(),
        kind: EventKind::Unparsed,
        field: None,
        message_id: None,
        status: None,
        unknown: None,
    }
}

fn split_meta_change<'a>(
    object: Option<&'a RawValue>,
    entry: &'a RawObject<'a>,
    change_raw: &'a RawValue,
    records: &mut Vec<Record>,
) {
    let change = RawObject::parse(change_raw);
    let field_raw = change.as_ref().and_then(|c| c.get("field"));
    let field = field_raw.and_then(|f| lookup(f, &[]));
    let value_raw = change.as_ref().and_then(|c| c.get("value"));
    let (Some(field_raw), Some(field), Some(value_raw)) = (field_raw, field, value_raw) else {
        records.push(unparsed_part(change_raw, &lookup_key(entry)));
        return;
    };
    let ctx = MetaChangeContext {
        object,
        entry,
        field: &field,
        field_raw,
    };
    let value = RawObject::parse(value_raw);
    let before = records.len();
    if let (Some(value), Some(arrays)) = (&value, event_arrays(&field)) {
        split_value(&ctx, value, arrays, records);
    }
    if records.len() == before {
        // Another field, or a change with nothing we know in it: one record, whole.
        let known = KNOWN_META_FIELDS.contains(&field.as_str());
        records.push(Record {
            key: ctx.business_key(value.as_ref()),
            value: ctx.envelope(value_raw.get()),
            kind: if value.is_some() {
                EventKind::Field
            } else {
                EventKind::Unparsed
            },
            field: Some(field.clone()),
            message_id: None,
            status: None,
            unknown: (!known).then(|| UnknownShape {
                field: field.clone(),
                message_type: "-".into(),
            }),
        });
    }
}

/// One record per event of the value's arrays, each in an envelope of the value's other
/// members (contacts narrowed to the event's user); a history item, one per thread.
fn split_value(
    ctx: &MetaChangeContext,
    value: &RawObject,
    arrays: &[EventArray],
    records: &mut Vec<Record>,
) {
    let contacts: Vec<&RawValue> = value
        .get("contacts")
        .and_then(raw_array)
        .unwrap_or_default();
    for array in arrays {
        let Some(events) = value.get(array.name).and_then(raw_array) else {
            continue;
        };
        for event in events {
            if array.kind == EventKind::History {
                split_history_item(ctx, value, array, event, records);
                continue;
            }
            let (user, user_id) = (array.user)(event, value);
            let mut out = String::from("{");
            for (name, member) in &value.0 {
                let is_event_array = arrays.iter().any(|a| a.name == name);
                if name != "contacts" && !is_event_array {
                    push_member(&mut out, name, member.get());
                }
            }
            if array.kind != EventKind::Error && !contacts.is_empty() {
                let matching = matching_contacts(&contacts, user.as_deref(), user_id.as_deref());
                if !matching.is_empty() {
                    push_member(&mut out, "contacts", &json_array(matching));
                }
            }
            push_member(&mut out, array.name, &json_array([event]));
            out.push('}');
            records.push(event_record(
                ctx,
                value,
                array,
                event,
                user.or(user_id),
                out,
            ));
        }
    }
}

/// A history item's threads, each its own record keyed by the thread's user; an item with no
/// threads (a declined sharing, a chunk's errors) is one record under the business key.
fn split_history_item(
    ctx: &MetaChangeContext,
    value: &RawObject,
    array: &EventArray,
    item_raw: &RawValue,
    records: &mut Vec<Record>,
) {
    let item = RawObject::parse(item_raw);
    let threads = item
        .as_ref()
        .and_then(|i| i.get("threads"))
        .and_then(raw_array);
    let with_item = |item_json: &str| {
        let mut out = String::from("{");
        for (name, member) in &value.0 {
            if name != array.name {
                push_member(&mut out, name, member.get());
            }
        }
        push_member(&mut out, array.name, &format!("[{item_json}]"));
        out.push('}');
        out
    };
    match (item, threads) {
        (Some(item), Some(threads)) if !threads.is_empty() => {
            for thread in threads {
                let mut item_json = String::from("{");
                for (name, member) in &item.0 {
                    if name != "threads" {
                        push_member(&mut item_json, name, member.get());
                    }
                }
                push_member(&mut item_json, "threads", &json_array([thread]));
                item_json.push('}');
                let (user, _) = (array.user)(thread, value);
                let out = with_item(&item_json);
                records.push(event_record(ctx, value, array, thread, user, out));
            }
        }
        _ => {
            let out = with_item(item_raw.get());
            records.push(event_record(ctx, value, array, item_raw, None, out));
        }
    }
}

fn event_record(
    ctx: &MetaChangeContext,
    value: &RawObject,
    array: &EventArray,
    event: &RawValue,
    user: Option<String>,
    value_json: String,
) -> Record {
    let kind = array.kind;
    let message_type = (kind == EventKind::Message)
        .then(|| lookup(event, &["type"]))
        .flatten();
    let unknown = message_type
        .filter(|t| !KNOWN_MESSAGE_TYPES.contains(&t.as_str()))
        .map(|t| UnknownShape {
            field: ctx.field.to_string(),
            message_type: t,
        });
    Record {
        key: user.unwrap_or_else(|| ctx.business_key(Some(value))),
        value: ctx.envelope(&value_json),
        kind,
        field: Some(ctx.field.to_string()),
        message_id: match kind {
            EventKind::Message | EventKind::Status | EventKind::Echo | EventKind::Call => {
                lookup(event, &["id"])
            }
            _ => None,
        },
        status: match kind {
            EventKind::Status => lookup(event, &["status"]),
            EventKind::Call => lookup(event, &["event"]).or_else(|| lookup(event, &["status"])),
            _ => None,
        },
        unknown,
    }
}

/// The contacts that describe the event's user; with a single contact and no match (an
/// identifier format Meta changed), that one contact, since a lone contact is the sender.
fn matching_contacts<'a>(
    contacts: &[&'a RawValue],
    phone: Option<&str>,
    user_id: Option<&str>,
) -> Vec<&'a RawValue> {
    let matching: Vec<&RawValue> = contacts
        .iter()
        .copied()
        .filter(|contact| {
            let wa_id = first_user(contact, &[&["wa_id"]]);
            let contact_user = first_user(contact, &[&["user_id"]]);
            (phone.is_some() && wa_id.as_deref() == phone)
                || (user_id.is_some() && contact_user.as_deref() == user_id)
        })
        .collect();
    if matching.is_empty() && contacts.len() == 1 {
        contacts.to_vec()
    } else {
        matching
    }
}

/// The status a WASender `messages.update` code stands for (`0` error ... `5` played); a code
/// outside that list is kept as it is.
pub fn wasender_status(code: &str) -> String {
    match code {
        "0" => "error",
        "1" => "pending",
        "2" => "sent",
        "3" => "delivered",
        "4" => "read",
        "5" => "played",
        other => other,
    }
    .to_string()
}

fn split_wasender(body: &[u8]) -> Option<Vec<Record>> {
    let text = std::str::from_utf8(body).ok()?;
    let root: RawObject = serde_json::from_str(text).ok()?;
    let event = root.get("event").and_then(|e| lookup(e, &[]))?;
    let kind = EventKind::of_wasender_event(&event);
    let session_key = root
        .get("sessionId")
        .and_then(|s| lookup(s, &[]))
        .unwrap_or_default();
    let data = root.get("data");

    // The event items: data.messages (array or single object), or data itself when it is an
    // array of keyed updates; otherwise the event is one record, whole.
    let data_object = data.and_then(RawObject::parse);
    let (items, wrap_in_messages): (Vec<&RawValue>, bool) =
        match data_object.as_ref().and_then(|d| d.get("messages")) {
            Some(messages) => (raw_array(messages).unwrap_or_else(|| vec![messages]), true),
            None => match data.and_then(raw_array) {
                Some(items) => (items, false),
                None => {
                    let user = data.and_then(wasender_user).unwrap_or(session_key);
                    return Some(vec![Record {
                        key: user,
                        value: body.to_vec(),
                        kind,
                        field: Some(event.clone()),
                        message_id: data.and_then(|d| lookup(d, &["key", "id"])),
                        status: None,
                        unknown: wasender_unknown(&event),
                    }]);
                }
            },
        };

    let mut records = Vec::with_capacity(items.len());
    for item in items {
        let mut data_json = String::from("{");
        if wrap_in_messages {
            for (name, member) in data_object.iter().flat_map(|d| d.0.iter()) {
                if name != "messages" {
                    push_member(&mut data_json, name, member.get());
                }
            }
            push_member(&mut data_json, "messages", item.get());
            data_json.push('}');
        } else {
            data_json = item.get().to_string();
        }
        let mut out = String::from("{");
        for (name, member) in &root.0 {
            if name == "data" {
                push_member(&mut out, "data", &data_json);
            } else {
                push_member(&mut out, name, member.get());
            }
        }
        out.push('}');
        let status = (kind == EventKind::Status)
            .then(|| lookup(item, &["update", "status"]).map(|s| wasender_status(&s)))
            .flatten();
        records.push(Record {
            key: wasender_user(item).unwrap_or_else(|| session_key.clone()),
            value: out.into_bytes(),
            kind,
            field: Some(event.clone()),
            message_id: lookup(item, &["key", "id"]),
            status,
            unknown: wasender_unknown(&event),
        });
    }
    Some(records)
}

/// WASender event names wapipe knows (its webhook documentation's list); another is still
/// produced and flagged as unknown.
pub const KNOWN_WASENDER_EVENTS: &[&str] = &[
    "call",
    "chats.delete",
    "chats.update",
    "chats.upsert",
    "contacts.update",
    "contacts.upsert",
    "group-participants.update",
    "groups.update",
    "groups.upsert",
    "message-receipt.update",
    "message.sent",
    "messages.delete",
    "messages.group.received",
    "messages.personal.received",
    "messages.reaction",
    "messages.received",
    "messages.update",
    "messages.upsert",
    "poll.results",
    "qrcode.updated",
    "session.status",
];

fn wasender_unknown(event: &str) -> Option<UnknownShape> {
    (!KNOWN_WASENDER_EVENTS.contains(&event)).then(|| UnknownShape {
        field: event.to_string(),
        message_type: "-".into(),
    })
}

/// The user of a WASender message: the participant in groups, the sender in private chats.
/// `remoteJid` is the chat (a group or a LID), used only when nothing better is there.
fn wasender_user(item: &RawValue) -> Option<String> {
    first_user(
        item,
        &[
            &["key", "cleanedParticipantPn"],
            &["key", "participantPn"],
            &["key", "cleanedSenderPn"],
            &["key", "senderPn"],
            &["key", "participant"],
            &["key", "remoteJid"],
        ],
    )
}
