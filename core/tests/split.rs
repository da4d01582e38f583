//! Splitting and keys over fixture payloads shaped like the providers' own.

use serde_json::Value;
use wapipe_core::split::split;
use wapipe_core::{EventKind, Provider, Record};

const FALLBACK: &str = "unkeyed";

fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("reading {full}: {e}"))
}

fn meta(name: &str) -> Vec<Record> {
    split(
        Provider::Meta,
        &fixture(&format!("meta/{name}.json")),
        FALLBACK,
    )
}

fn wasender(name: &str) -> Vec<Record> {
    split(
        Provider::Wasender,
        &fixture(&format!("wasender/{name}.json")),
        FALLBACK,
    )
}

/// The one record of `records`, of `kind` and keyed by `key`.
fn one(records: Vec<Record>, kind: EventKind, key: &str) -> Record {
    assert_eq!(records.len(), 1, "{records:?}");
    let record = records.into_iter().next().unwrap();
    assert_eq!((record.kind, record.key.as_str()), (kind, key));
    record
}

/// Each record's key and message id, in order.
fn keys_and_ids(records: &[Record]) -> Vec<(&str, &str)> {
    records
        .iter()
        .map(|r| (r.key.as_str(), r.message_id.as_deref().unwrap()))
        .collect()
}

fn json(record: &Record) -> Value {
    serde_json::from_slice(&record.value).expect("every split record is JSON")
}

fn meta_value(record: &Record) -> Value {
    let envelope = json(record);
    let changes = envelope["entry"][0]["changes"].as_array().unwrap().clone();
    assert_eq!(changes.len(), 1, "a single-event envelope has one change");
    changes[0]["value"].clone()
}

/// Asserts the record holds exactly one event under `array` and returns it.
fn only_event(record: &Record, array: &str) -> Value {
    let value = meta_value(record);
    let events = value[array]
        .as_array()
        .unwrap_or_else(|| panic!("no {array} in {value}"));
    assert_eq!(events.len(), 1);
    for other in ["messages", "statuses", "errors"] {
        if other != array {
            assert!(
                value.get(other).is_none(),
                "{other} leaked into a {array} record"
            );
        }
    }
    events[0].clone()
}

#[test]
fn text_message_is_keyed_by_sender_and_keeps_escaped_bytes() {
    let r = &one(meta("text"), EventKind::Message, "5215512345678");
    assert_eq!(r.message_id.as_deref(), Some("wamid.TEXT1"));
    assert_eq!(r.field.as_deref(), Some("messages"));
    // The message object is copied from the POST byte for byte, escapes included.
    let raw = String::from_utf8(r.value.clone()).unwrap();
    assert!(
        raw.contains(r#"\u00bfTienen env\u00edo hoy? https:\/\/x.example\/a @ana \ud83d\ude00"#)
    );
    let envelope = json(r);
    assert_eq!(envelope["object"], "whatsapp_business_account");
    assert_eq!(envelope["entry"][0]["id"], "102290129340398");
    let value = meta_value(r);
    assert_eq!(value["metadata"]["phone_number_id"], "106540352242922");
    assert_eq!(value["contacts"][0]["wa_id"], "5215512345678");
    assert_eq!(only_event(r, "messages")["type"], "text");
}

#[test]
fn media_reaction_interactive_location_contacts_are_one_message_each() {
    for (name, wamid, kind) in [
        ("image", "wamid.IMAGE1", "image"),
        ("reaction", "wamid.REACT1", "reaction"),
        ("interactive", "wamid.INTER1", "interactive"),
        ("location", "wamid.LOC1", "location"),
        ("contacts", "wamid.CONTACTS1", "contacts"),
    ] {
        let records = meta(name);
        assert_eq!(records.len(), 1, "{name}");
        assert_eq!(records[0].kind, EventKind::Message, "{name}");
        assert_eq!(records[0].message_id.as_deref(), Some(wamid), "{name}");
        assert_eq!(only_event(&records[0], "messages")["type"], kind, "{name}");
    }
    // Media stays a URL and an id: never bytes.
    let image = only_event(&meta("image")[0], "messages");
    assert_eq!(image["image"]["id"], "1003383421387256");
    assert!(image["image"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
}

#[test]
fn a_leading_plus_in_from_is_dropped_from_the_key() {
    assert_eq!(meta("location")[0].key, "5215512345678");
}

#[test]
fn unknown_message_type_is_kept_as_it_is() {
    let records = meta("unknown_type");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, EventKind::Message);
    let message = only_event(&records[0], "messages");
    assert_eq!(message["type"], "hologram");
    assert_eq!(message["hologram"]["frames"], 3);
}

#[test]
fn statuses_are_keyed_by_recipient_and_carry_their_status() {
    for status in ["sent", "delivered", "read"] {
        let r = &one(
            meta(&format!("status_{status}")),
            EventKind::Status,
            "5215512345678",
        );
        assert_eq!(r.status.as_deref(), Some(status));
        assert_eq!(r.message_id.as_deref(), Some("wamid.OUT3"));
        assert_eq!(only_event(r, "statuses")["status"], status);
    }
}

#[test]
fn failed_status_without_contacts_still_splits_with_its_errors() {
    let r = &one(meta("status_failed"), EventKind::Status, "5215512345678");
    assert_eq!(r.status.as_deref(), Some("failed"));
    assert!(meta_value(r).get("contacts").is_none());
    assert_eq!(only_event(r, "statuses")["errors"][0]["code"], 131049);
}

#[test]
fn group_messages_are_keyed_by_each_participant() {
    let records = meta("group_messages");
    let keys: Vec<_> = records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["5215512345678", "2348031234567"]);
    // Each record carries only its own sender's contact.
    assert_eq!(
        meta_value(&records[0])["contacts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        meta_value(&records[1])["contacts"][0]["wa_id"],
        "2348031234567"
    );
    assert_eq!(
        only_event(&records[1], "messages")["group_id"],
        "120363040000000000"
    );
}

#[test]
fn group_statuses_are_keyed_by_participant_not_group_id() {
    let records = meta("group_statuses");
    let keys: Vec<_> = records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["5215512345678", "2348031234567"]);
    assert!(records.iter().all(|r| r.kind == EventKind::Status));
}

#[test]
fn username_users_fall_back_to_their_business_scoped_id() {
    let records = meta("username_fallback");
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0].kind, records[0].key.as_str()),
        (EventKind::Message, "MX.88123409912")
    );
    assert_eq!(
        (records[1].kind, records[1].key.as_str()),
        (EventKind::Status, "MX.88123409912")
    );
    assert_eq!(
        meta_value(&records[0])["contacts"][0]["user_id"],
        "MX.88123409912"
    );
}

#[test]
fn errors_only_post_is_keyed_by_the_business_number() {
    let r = &one(meta("errors_only"), EventKind::Error, "106540352242922");
    assert_eq!(r.message_id, None);
    assert_eq!(only_event(r, "errors")["code"], 131000);
}

#[test]
fn template_status_update_is_one_field_record_keyed_by_the_account() {
    let r = &one(meta("template_status"), EventKind::Field, "102290129340398");
    assert_eq!(r.field.as_deref(), Some("message_template_status_update"));
    let envelope = json(r);
    assert_eq!(envelope["entry"][0]["time"], 1767001000);
    // Large integers survive because the value is copied, not re-encoded.
    assert!(String::from_utf8_lossy(&r.value).contains("1689556908129832"));
}

#[test]
fn signed_batch_with_two_senders_yields_two_keys() {
    let records = meta("two_senders");
    assert_eq!(
        keys_and_ids(&records),
        [("5215512345678", "wamid.A1"), ("2348031234567", "wamid.B1")]
    );
}

#[test]
fn batch_of_1000_updates_from_several_senders_keeps_every_event_in_order() {
    let senders = ["111", "222", "333", "444", "555"];
    let mut messages = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..500 {
        let from = senders[i % senders.len()];
        messages.push(format!(
            r#"{{"from":"{from}","id":"wamid.M{i}","timestamp":"1767000000","type":"text","text":{{"body":"n{i}"}}}}"#
        ));
        statuses.push(format!(
            r#"{{"id":"wamid.S{i}","status":"delivered","timestamp":"1767000000","recipient_id":"{from}"}}"#
        ));
    }
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"phone_number_id":"9"}},"messages":[{}],"statuses":[{}]}}}}]}}]}}"#,
        messages.join(","),
        statuses.join(",")
    );
    let records = split(Provider::Meta, body.as_bytes(), FALLBACK);
    assert_eq!(records.len(), 1000);
    for sender in senders {
        let ids: Vec<_> = records
            .iter()
            .filter(|r| r.key == sender && r.kind == EventKind::Message)
            .map(|r| r.message_id.clone().unwrap())
            .collect();
        assert_eq!(ids.len(), 100);
        // Within one sender, events keep the order of the POST.
        let numbers: Vec<u32> = ids
            .iter()
            .map(|id| id["wamid.M".len()..].parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    }
    assert_eq!(
        records
            .iter()
            .filter(|r| r.kind == EventKind::Status)
            .count(),
        500
    );
}

#[test]
fn wasender_private_message_is_keyed_by_sender_phone() {
    let r = &one(
        wasender("private_message"),
        EventKind::Message,
        "5215512345678",
    );
    assert_eq!(r.message_id.as_deref(), Some("3EB0X1"));
    assert_eq!(r.field.as_deref(), Some("messages.received"));
    let envelope = json(r);
    assert_eq!(envelope["sessionId"], "sess-42");
    assert_eq!(envelope["data"]["messages"]["key"]["id"], "3EB0X1");
}

#[test]
fn wasender_group_messages_split_by_participant() {
    let records = wasender("group_messages");
    assert_eq!(
        keys_and_ids(&records),
        [("2348031234567", "3EB0G1"), ("5215512345678", "3EB0G2")]
    );
    // Each record holds one message object, in the single-object shape.
    assert!(json(&records[0])["data"]["messages"].is_object());
}

#[test]
fn wasender_status_update_maps_its_code() {
    let records = wasender("status_update");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, EventKind::Status);
    assert_eq!(records[0].status.as_deref(), Some("read"));
    assert_eq!(records[0].key, "5215512345678");
}

#[test]
fn wasender_session_event_is_kept_whole_under_the_session() {
    let body = fixture("wasender/session_status.json");
    let records = split(Provider::Wasender, &body, FALLBACK);
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].kind, records[0].key.as_str()),
        (EventKind::Field, "sess-42")
    );
    assert_eq!(records[0].value, body);
}

#[test]
fn signed_garbage_is_kept_whole_under_the_fallback_key() {
    for body in [
        &b"not json at all"[..],
        b"",
        b"[1,2,3]",
        b"{\"entry\":5}",
        b"\xff\xfe",
        b"{\"entry\":[]}",
    ] {
        for provider in [Provider::Meta, Provider::Wasender] {
            let records = split(provider, body, FALLBACK);
            assert_eq!(records.len(), 1, "{provider} {body:?}");
            assert_eq!(records[0].kind, EventKind::Unparsed);
            assert_eq!(records[0].key, FALLBACK);
            assert_eq!(records[0].value, body);
        }
    }
}

#[test]
fn an_unknown_change_shape_is_kept_while_its_neighbours_split() {
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"7","changes":[{"weird":true},{"field":"messages","value":{"metadata":{"phone_number_id":"9"},"messages":[{"from":"1","id":"wamid.X","type":"text"}]}}]}]}"#;
    let records = split(Provider::Meta, body, FALLBACK);
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0].kind, records[0].key.as_str()),
        (EventKind::Unparsed, "7")
    );
    assert_eq!(records[0].value, br#"{"weird":true}"#);
    assert_eq!(
        (records[1].kind, records[1].key.as_str()),
        (EventKind::Message, "1")
    );
}
