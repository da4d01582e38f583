//! Arbitrary JSON placed where the providers' payloads have structure (entries, changes,
//! values, events), so the fuzzer explores the splitter's paths rather than the JSON parser's.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

#[path = "invariants.rs"]
mod invariants;

#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A name the splitter looks for, so objects hit its branches often.
    Known(u8),
    Array(Vec<Json>),
    Object(Vec<(Key, Json)>),
}

#[derive(Debug, Arbitrary)]
enum Key {
    Known(u8),
    Other(String),
}

const NAMES: &[&str] = &[
    "object", "entry", "id", "time", "changes", "field", "value", "messages", "statuses",
    "errors", "contacts", "metadata", "phone_number_id", "from", "from_user_id", "wa_id",
    "user_id", "recipient_id", "recipient_type", "group", "recipient_participant_id",
    "recipient_user_id", "status", "type", "event", "data", "sessionId", "key",
    "cleanedSenderPn", "cleanedParticipantPn", "senderPn", "remoteJid", "update",
    "messages.upsert", "messages.update", "+52155", "a@b",
];

fn name(n: u8) -> String {
    NAMES[n as usize % NAMES.len()].to_string()
}

fn to_value(json: Json, depth: u32) -> Value {
    if depth > 12 {
        return Value::Null;
    }
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Int(i) => json!(i),
        Json::Float(f) => json!(f),
        Json::Str(s) => Value::String(s),
        Json::Known(n) => Value::String(name(n)),
        Json::Array(items) => Value::Array(items.into_iter().map(|j| to_value(j, depth + 1)).collect()),
        Json::Object(members) => {
            let mut map = Map::new();
            for (key, value) in members {
                let key = match key {
                    Key::Known(n) => name(n),
                    Key::Other(s) => s,
                };
                map.insert(key, to_value(value, depth + 1));
            }
            Value::Object(map)
        }
    }
}

fuzz_target!(|input: (u8, Json)| {
    let (shape, json) = input;
    let inner = to_value(json, 0);
    // Embed the arbitrary value at one of the places the providers' payloads have structure.
    let body = match shape % 6 {
        0 => inner,
        1 => json!({"object": "whatsapp_business_account", "entry": inner}),
        2 => json!({"entry": [{"id": "1", "changes": inner}]}),
        3 => json!({"entry": [{"id": "1", "changes": [{"field": "messages", "value": inner}]}]}),
        4 => json!({"entry": [{"id": "1", "changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "9"}, "messages": [inner], "statuses": [{"id": "w", "status": "read"}]}}]}]}),
        _ => json!({"event": "messages.upsert", "sessionId": "s", "data": inner}),
    };
    invariants::check(body.to_string().as_bytes());
});
