//! Realistic webhook bodies for load and end-to-end tests: every Meta message type, statuses,
//! batches with several senders, and WASender private and group messages. Each body gets
//! fresh message ids so a run never collides with an earlier one.

use std::sync::atomic::{AtomicU64, Ordering};

use wapipe_core::Provider;

/// One generated POST and what it should split into.
pub struct Payload {
    pub body: String,
    pub events: usize,
}

/// Generates bodies in a fixed rotation of shapes; ids are unique per generator `run`.
pub struct Generator {
    provider: Provider,
    run: String,
    counter: AtomicU64,
    users: u64,
    batch: usize,
}

const WABA: &str = "102290129340398";
const PHONE_NUMBER_ID: &str = "106540352242922";

impl Generator {
    /// `users` distinct senders are cycled; `batch` events go in each POST (1 = one event).
    pub fn new(provider: Provider, run: impl Into<String>, users: u64, batch: usize) -> Self {
        Generator {
            provider,
            run: run.into(),
            counter: AtomicU64::new(0),
            users: users.max(1),
            batch: batch.max(1),
        }
    }

    pub fn next(&self) -> Payload {
        let start = self.counter.fetch_add(self.batch as u64, Ordering::Relaxed);
        match self.provider {
            Provider::Meta => self.meta(start),
            Provider::Wasender => self.wasender(start),
        }
    }

    fn user(&self, n: u64) -> String {
        format!("52155{:08}", n % self.users)
    }

    fn meta(&self, start: u64) -> Payload {
        // Events of one POST are grouped as Meta does: one change per sender's messages, and
        // statuses, errors and other fields in their own changes. Over 20 events the rotation
        // holds 14 messages (16 shapes in turn), three statuses, a failed status, an error and
        // a template status update.
        let mut changes = Vec::new();
        for n in start..start + self.batch as u64 {
            let user = self.user(n);
            let wamid = format!("wamid.{}.{n}", self.run);
            let (field, value) = match n % 20 {
                0..=13 => ("messages", message_value(&user, &wamid, n, &self.run)),
                14..=16 => (
                    "messages",
                    status_value(
                        &user,
                        &wamid,
                        ["sent", "delivered", "read"][(n % 3) as usize],
                    ),
                ),
                17 => ("messages", failed_status_value(&user, &wamid)),
                18 => ("messages", errors_value(&self.run, n)),
                _ => (
                    "message_template_status_update",
                    template_status_value(&self.run, n),
                ),
            };
            changes.push(format!(r#"{{"field":"{field}","value":{value}}}"#));
        }
        Payload {
            body: format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{WABA}","time":1767000000,"changes":[{}]}}]}}"#,
                changes.join(",")
            ),
            events: self.batch,
        }
    }

    fn wasender(&self, start: u64) -> Payload {
        // One event type per POST, as WASender sends them: mostly messages (private and group,
        // several kinds), then receipts (`messages.update`) and a session status change.
        match start / self.batch as u64 % 8 {
            5 => self.wasender_receipts(start),
            6 => Payload {
                body: format!(
                    r#"{{"event":"session.status","timestamp":1747775600,"sessionId":"load-{}","data":{{"status":"connected","at":{start}}}}}"#,
                    self.run
                ),
                events: 1,
            },
            _ => self.wasender_messages(start),
        }
    }

    fn wasender_messages(&self, start: u64) -> Payload {
        let mut messages = Vec::new();
        for n in start..start + self.batch as u64 {
            let user = self.user(n);
            let id = format!("3EB0{}{n}", self.run.to_uppercase());
            let key = if n % 4 == 0 {
                format!(
                    r#"{{"id":"{id}","fromMe":false,"remoteJid":"120363040000000000@g.us","participant":"{n}@lid","participantPn":"{user}@s.whatsapp.net","cleanedParticipantPn":"{user}"}}"#
                )
            } else {
                format!(
                    r#"{{"id":"{id}","fromMe":false,"remoteJid":"{user}@s.whatsapp.net","addressingMode":"pn","senderPn":"{user}@s.whatsapp.net","cleanedSenderPn":"{user}"}}"#
                )
            };
            let (body, message) = match n % 5 {
                0 => (
                    format!("Hola n\\u00famero {n}"),
                    format!(r#"{{"conversation":"Hola n\u00famero {n}"}}"#),
                ),
                1 => (
                    format!("Ver https://example.com/{n}"),
                    format!(r#"{{"extendedTextMessage":{{"text":"Ver https://example.com/{n}","matchedText":"https://example.com/{n}"}}}}"#),
                ),
                2 => (
                    "recibo".to_string(),
                    r#"{"imageMessage":{"caption":"recibo","mimetype":"image/jpeg","fileLength":"48213"}}"#.to_string(),
                ),
                3 => (
                    String::new(),
                    r#"{"audioMessage":{"mimetype":"audio/ogg; codecs=opus","seconds":7,"ptt":true}}"#.to_string(),
                ),
                _ => (
                    String::new(),
                    r#"{"locationMessage":{"degreesLatitude":19.4326,"degreesLongitude":-99.1332}}"#.to_string(),
                ),
            };
            messages.push(format!(
                r#"{{"key":{key},"messageBody":"{body}","messageTimestamp":1747775431,"message":{message}}}"#
            ));
        }
        Payload {
            body: format!(
                r#"{{"event":"messages.upsert","timestamp":1747775431467,"sessionId":"load-{}","data":{{"messages":[{}]}}}}"#,
                self.run,
                messages.join(",")
            ),
            events: self.batch,
        }
    }

    fn wasender_receipts(&self, start: u64) -> Payload {
        let updates: Vec<String> = (start..start + self.batch as u64)
            .map(|n| {
                let user = self.user(n);
                format!(
                    r#"{{"key":{{"id":"3EB0OUT{}{n}","fromMe":true,"remoteJid":"{user}@s.whatsapp.net"}},"update":{{"status":{}}}}}"#,
                    self.run.to_uppercase(),
                    2 + n % 3
                )
            })
            .collect();
        Payload {
            body: format!(
                r#"{{"event":"messages.update","timestamp":1747775500,"sessionId":"load-{}","data":[{}]}}"#,
                self.run,
                updates.join(",")
            ),
            events: self.batch,
        }
    }
}

fn metadata() -> String {
    format!(
        r#""messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"{PHONE_NUMBER_ID}"}}"#
    )
}

fn message_value(user: &str, wamid: &str, n: u64, run: &str) -> String {
    let content = match n % 16 {
        0 => r#""type":"text","text":{"body":"\u00bfTienen env\u00edo hoy? https:\/\/example.com\/pedido @tienda \ud83d\ude00"}"#.to_string(),
        1 => format!(r#""type":"image","image":{{"caption":"recibo","mime_type":"image/jpeg","sha256":"SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=","id":"10033834{n}","url":"https:\/\/lookaside.fbsbx.com\/whatsapp_business\/attachments\/?mid=10033834{n}"}}"#),
        2 => format!(r#""type":"video","video":{{"caption":"unboxing","mime_type":"video/mp4","id":"5520{n}"}}"#),
        3 => format!(r#""type":"document","document":{{"caption":"factura","filename":"factura-{n}.pdf","mime_type":"application/pdf","id":"7781{n}"}}"#),
        4 => format!(r#""type":"audio","audio":{{"mime_type":"audio/ogg; codecs=opus","id":"2093{n}","voice":true}}"#),
        5 => r#""type":"sticker","sticker":{"mime_type":"image/webp","id":"4471","animated":false}"#.to_string(),
        6 => r#""type":"reaction","reaction":{"message_id":"wamid.OUT","emoji":"\ud83d\udc4d"}"#.to_string(),
        7 => r#""type":"location","location":{"latitude":19.4326,"longitude":-99.1332,"name":"Z\u00f3calo"}"#.to_string(),
        8 => r#""type":"contacts","contacts":[{"name":{"formatted_name":"Luis"},"phones":[{"phone":"+52 55 1111 2222","wa_id":"5215511112222"}]}]"#.to_string(),
        9 => r#""type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"confirm","title":"Confirmar"}}"#.to_string(),
        10 => r#""type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"slot-3","title":"Ma\u00f1ana 10:00","description":"Sucursal centro"}}"#.to_string(),
        11 => r#""context":{"from":"15550783881","id":"wamid.TEMPLATE"},"type":"button","button":{"payload":"STOP","text":"Dejar de recibir"}"#.to_string(),
        12 => r#""type":"order","order":{"catalog_id":"3015","text":"para hoy","product_items":[{"product_retailer_id":"sku-1","quantity":"2","item_price":"120.50","currency":"MXN"}]}"#.to_string(),
        13 => r#""type":"unsupported","errors":[{"code":131051,"title":"Message type unknown","message":"Message type unknown","error_data":{"details":"Message type is currently not supported."}}]"#.to_string(),
        // A group message and one from a user known only by username follow.
        14 => r#""group_id":"120363040000000000","type":"text","text":{"body":"hola grupo"}"#.to_string(),
        _ => {
            let username = format!("MX.{run}{n}");
            return format!(
                r#"{{{},"contacts":[{{"profile":{{"name":"Cliente {username}"}},"user_id":"{username}"}}],"messages":[{{"from_user_id":"{username}","id":"{wamid}","timestamp":"1767000000","type":"text","text":{{"body":"sin n\u00famero"}}}}]}}"#,
                metadata()
            );
        }
    };
    format!(
        r#"{{{},"contacts":[{{"profile":{{"name":"Cliente {user}"}},"wa_id":"{user}"}}],"messages":[{{"from":"{user}","id":"{wamid}","timestamp":"1767000000",{content}}}]}}"#,
        metadata()
    )
}

/// A messages change with only errors (no user: keyed by the business number).
fn errors_value(run: &str, n: u64) -> String {
    format!(
        r#"{{{},"errors":[{{"code":131000,"title":"Something went wrong","message":"Something went wrong","error_data":{{"details":"load {run} event {n}"}}}}]}}"#,
        metadata()
    )
}

/// A field other than `messages`: a template's review outcome.
fn template_status_value(run: &str, n: u64) -> String {
    format!(
        r#"{{"event":"APPROVED","message_template_id":1689556908{n},"message_template_name":"order_ready_{run}_{n}","message_template_language":"es_MX","reason":"NONE"}}"#
    )
}

fn status_value(user: &str, wamid: &str, status: &str) -> String {
    format!(
        r#"{{{},"statuses":[{{"id":"{wamid}","status":"{status}","timestamp":"1767000300","recipient_id":"{user}","pricing":{{"pricing_model":"PMP","category":"utility"}}}}]}}"#,
        metadata()
    )
}

fn failed_status_value(user: &str, wamid: &str) -> String {
    format!(
        r#"{{{},"statuses":[{{"id":"{wamid}","status":"failed","timestamp":"1767000400","recipient_id":"{user}","errors":[{{"code":131049,"title":"This message was not delivered to maintain healthy ecosystem engagement."}}]}}]}}"#,
        metadata()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wapipe_core::split::split;

    #[test]
    fn generated_bodies_split_into_the_promised_number_of_events() {
        for provider in [Provider::Meta, Provider::Wasender] {
            for batch in [1, 7, 25] {
                let generator = Generator::new(provider, "t", 7, batch);
                for _ in 0..40 {
                    let payload = generator.next();
                    let records = split(provider, payload.body.as_bytes(), "fallback");
                    assert_eq!(records.len(), payload.events, "{provider}");
                    assert!(records
                        .iter()
                        .all(|r| r.kind != wapipe_core::EventKind::Unparsed));
                    assert!(records.iter().all(|r| r.key != "fallback"), "{provider}");
                }
            }
        }
    }

    #[test]
    fn a_run_covers_every_message_type_statuses_errors_fields_and_several_senders() {
        use std::collections::BTreeSet;
        let generator = Generator::new(Provider::Meta, "c", 5, 20);
        let (mut kinds, mut types, mut statuses) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for _ in 0..16 {
            let payload = generator.next();
            let records = split(Provider::Meta, payload.body.as_bytes(), "f");
            let keys: BTreeSet<_> = records.iter().map(|r| r.key.clone()).collect();
            assert!(keys.len() >= 5, "one POST carries several senders");
            for record in records {
                kinds.insert(record.kind.as_str());
                statuses.extend(record.status);
                let value: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
                let message = &value["entry"][0]["changes"][0]["value"]["messages"][0];
                if let Some(t) = message["type"].as_str() {
                    types.insert(t.to_string());
                }
            }
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        for t in [
            "text",
            "image",
            "video",
            "document",
            "audio",
            "sticker",
            "reaction",
            "location",
            "contacts",
            "interactive",
            "button",
            "order",
            "unsupported",
        ] {
            assert!(types.contains(t), "{t} missing from {types:?}");
        }
        for s in ["sent", "delivered", "read", "failed"] {
            assert!(statuses.contains(s), "{s} missing");
        }
        let generator = Generator::new(Provider::Wasender, "c", 5, 3);
        let events: BTreeSet<String> = (0..16)
            .flat_map(|_| split(Provider::Wasender, generator.next().body.as_bytes(), "f"))
            .filter_map(|r| r.field)
            .collect();
        let expected = ["messages.update", "messages.upsert", "session.status"];
        assert_eq!(events, expected.iter().map(|e| e.to_string()).collect());
    }

    #[test]
    fn message_ids_never_repeat_within_a_run() {
        let generator = Generator::new(Provider::Meta, "u", 3, 10);
        let mut ids = std::collections::HashSet::new();
        for _ in 0..50 {
            for record in split(Provider::Meta, generator.next().body.as_bytes(), "f") {
                let Some(id) = record.message_id else {
                    continue;
                };
                let status = record.status.unwrap_or_default();
                assert!(ids.insert(format!("{id}/{status}")));
            }
        }
    }
}
