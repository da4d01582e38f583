//! A property over many generated POSTs: every event that names a user is keyed by that user,
//! whatever field it comes in (messages, statuses of 1:1 and group sends, echoes, calls in both
//! directions, call statuses, group events, history threads, user preferences), however the
//! POST batches them. A seeded generator, so a failure names the seed that reproduces it.

use wapipe_core::split::split;
use wapipe_core::{EventKind, Provider};

/// A small deterministic generator (64-bit LCG, the high bits).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn phone(&mut self) -> String {
        format!("52155{:08}", self.below(100_000_000))
    }
}

const BUSINESS: &str = "15550783881";
const METADATA: &str = r#""messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}"#;

/// One change of a random field with 1..=4 events, and the key each event must get.
fn change(rng: &mut Rng, n: &mut u64) -> (String, Vec<(EventKind, String)>) {
    let count = 1 + rng.below(4);
    let mut items = Vec::new();
    let mut keys = Vec::new();
    let shape = rng.below(9);
    for _ in 0..count {
        *n += 1;
        let user = rng.phone();
        let plus = if rng.below(2) == 0 { "+" } else { "" };
        let (item, kind, key) = match shape {
            0 => (
                format!(
                    r#"{{"from":"{plus}{user}","id":"wamid.{n}","timestamp":"1767000000","type":"text","text":{{"body":"x"}}}}"#
                ),
                EventKind::Message,
                user,
            ),
            1 => (
                format!(
                    r#"{{"id":"wamid.{n}","status":"read","timestamp":"1767000000","recipient_id":"{plus}{user}"}}"#
                ),
                EventKind::Status,
                user,
            ),
            2 => (
                format!(
                    r#"{{"id":"wamid.{n}","status":"delivered","timestamp":"1767000000","recipient_id":"1203630{n}@g.us","recipient_type":"group","recipient_participant_id":"{plus}{user}"}}"#
                ),
                EventKind::Status,
                user,
            ),
            3 => (
                format!(
                    r#"{{"from":"{BUSINESS}","to":"{plus}{user}","id":"wamid.{n}","timestamp":"1767000000","type":"text","text":{{"body":"x"}}}}"#
                ),
                EventKind::Echo,
                user,
            ),
            4 => {
                let (direction, from, to) = match rng.below(3) {
                    0 => ("USER_INITIATED", user.clone(), BUSINESS.to_string()),
                    1 => ("BUSINESS_INITIATED", BUSINESS.to_string(), user.clone()),
                    // No direction: the side that is not the business.
                    _ => ("", BUSINESS.to_string(), user.clone()),
                };
                (
                    format!(
                        r#"{{"id":"wacid.{n}","from":"{from}","to":"{to}","event":"connect","timestamp":"1767000000","direction":"{direction}"}}"#
                    ),
                    EventKind::Call,
                    user,
                )
            }
            5 => (
                format!(
                    r#"{{"id":"wacid.{n}","type":"call","status":"RINGING","timestamp":"1767000000","recipient_id":"{plus}{user}"}}"#
                ),
                EventKind::Call,
                user,
            ),
            6 => (
                format!(
                    r#"{{"timestamp":"1767000000","group_id":"1203630{n}@g.us","type":"group_create"}}"#
                ),
                EventKind::Group,
                format!("1203630{n}@g.us"),
            ),
            7 => (
                format!(
                    r#"{{"id":"{plus}{user}","messages":[{{"from":"{user}","id":"wamid.{n}","timestamp":"1766000000","type":"text","text":{{"body":"x"}}}}]}}"#
                ),
                EventKind::History,
                user,
            ),
            _ => (
                format!(
                    r#"{{"wa_id":"{plus}{user}","detail":"x","category":"marketing_messages","value":"stop","timestamp":1767000000}}"#
                ),
                EventKind::Field,
                user,
            ),
        };
        items.push(item);
        keys.push((kind, key));
    }
    let items = items.join(",");
    let (field, value) = match shape {
        0 => (
            "messages",
            format!(r#"{{{METADATA},"messages":[{items}]}}"#),
        ),
        1 | 2 => (
            "messages",
            format!(r#"{{{METADATA},"statuses":[{items}]}}"#),
        ),
        3 => (
            "smb_message_echoes",
            format!(r#"{{{METADATA},"message_echoes":[{items}]}}"#),
        ),
        4 => ("calls", format!(r#"{{{METADATA},"calls":[{items}]}}"#)),
        5 => ("calls", format!(r#"{{{METADATA},"statuses":[{items}]}}"#)),
        6 => (
            "group_lifecycle_update",
            format!(r#"{{{METADATA},"groups":[{items}]}}"#),
        ),
        7 => (
            "history",
            format!(
                r#"{{{METADATA},"history":[{{"metadata":{{"phase":0,"chunk_order":1,"progress":50}},"threads":[{items}]}}]}}"#
            ),
        ),
        _ => (
            "user_preferences",
            format!(r#"{{{METADATA},"user_preferences":[{items}]}}"#),
        ),
    };
    (format!(r#"{{"field":"{field}","value":{value}}}"#), keys)
}

#[test]
fn every_event_that_names_a_user_is_keyed_by_that_user() {
    let mut checked = 0;
    for seed in 0..500u64 {
        let mut rng = Rng(seed);
        let mut n = 0;
        let mut entries = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let mut changes = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let (change, keys) = change(&mut rng, &mut n);
                changes.push(change);
                expected.extend(keys);
            }
            entries.push(format!(
                r#"{{"id":"102290129340398","changes":[{}]}}"#,
                changes.join(",")
            ));
        }
        let body = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{}]}}"#,
            entries.join(",")
        );
        let got: Vec<(EventKind, String)> = split(Provider::Meta, body.as_bytes(), "fallback")
            .into_iter()
            .map(|r| (r.kind, r.key))
            .collect();
        assert_eq!(got, expected, "seed {seed}: {body}");
        checked += got.len();
    }
    println!("{checked} events in 500 generated POSTs, each keyed by its user");
}
