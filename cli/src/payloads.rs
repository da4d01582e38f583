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
        // statuses in their own change.
        let mut changes = Vec::new();
        for n in start..start + self.batch as u64 {
            let user = self.user(n);
            let wamid = format!("wamid.{}.{n}", self.run);
            let value = match n % 10 {
                0..=5 => message_value(&user, &wamid, n),
                6 | 7 => status_value(
                    &user,
                    &wamid,
                    ["sent", "delivered", "read"][(n % 3) as usize],
                ),
                8 => failed_status_value(&user, &wamid),
                _ => message_value(&user, &wamid, n + 3),
            };
            changes.push(format!(r#"{{"field":"messages","value":{value}}}"#));
        }
        Payload {
            body: format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{WABA}","changes":[{}]}}]}}"#,
                changes.join(",")
            ),
            events: self.batch,
        }
    }

    fn wasender(&self, start: u64) -> Payload {
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
            messages.push(format!(
                r#"{{"key":{key},"messageBody":"Hola n\u00famero {n}","message":{{"conversation":"Hola n\u00famero {n}"}}}}"#
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
}

fn metadata() -> String {
    format!(
        r#""messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"{PHONE_NUMBER_ID}"}}"#
    )
}

fn message_value(user: &str, wamid: &str, n: u64) -> String {
    let content = match n % 8 {
        0 => r#""type":"text","text":{"body":"\u00bfTienen env\u00edo hoy? https:\/\/example.com\/pedido @tienda \ud83d\ude00"}"#.to_string(),
        1 => format!(r#""type":"image","image":{{"caption":"recibo","mime_type":"image/jpeg","sha256":"SfInY0gGKTsJlUWbwxC1k+FAD0FZHvzwfpvO0zX0GUI=","id":"10033834{n}","url":"https:\/\/lookaside.fbsbx.com\/whatsapp_business\/attachments\/?mid=10033834{n}"}}"#),
        2 => r#""type":"reaction","reaction":{"message_id":"wamid.OUT","emoji":"\ud83d\udc4d"}"#.to_string(),
        3 => r#""type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"confirm","title":"Confirmar"}}"#.to_string(),
        4 => r#""type":"location","location":{"latitude":19.4326,"longitude":-99.1332,"name":"Z\u00f3calo"}"#.to_string(),
        5 => r#""type":"contacts","contacts":[{"name":{"formatted_name":"Luis"},"phones":[{"phone":"+52 55 1111 2222","wa_id":"5215511112222"}]}]"#.to_string(),
        6 => format!(r#""type":"audio","audio":{{"mime_type":"audio/ogg; codecs=opus","id":"2093{n}","voice":true}}"#),
        _ => r#""type":"sticker","sticker":{"mime_type":"image/webp","id":"4471","animated":false}"#.to_string(),
    };
    format!(
        r#"{{{},"contacts":[{{"profile":{{"name":"Cliente {user}"}},"wa_id":"{user}"}}],"messages":[{{"from":"{user}","id":"{wamid}","timestamp":"1767000000",{content}}}]}}"#,
        metadata()
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
            let generator = Generator::new(provider, "t", 7, 25);
            for _ in 0..8 {
                let payload = generator.next();
                let records = split(provider, payload.body.as_bytes(), "fallback");
                assert_eq!(records.len(), payload.events, "{provider}");
                assert!(records
                    .iter()
                    .all(|r| r.kind != wapipe_core::EventKind::Unparsed));
                assert!(
                    records.iter().all(|r| r.key.starts_with("52155")),
                    "{provider}"
                );
            }
        }
    }

    #[test]
    fn message_ids_never_repeat_within_a_run() {
        let generator = Generator::new(Provider::Meta, "u", 3, 10);
        let mut ids = std::collections::HashSet::new();
        for _ in 0..50 {
            for record in split(Provider::Meta, generator.next().body.as_bytes(), "f") {
                let id = record.message_id.unwrap();
                let status = record.status.unwrap_or_default();
                assert!(ids.insert(format!("{id}/{status}")));
            }
        }
    }
}
