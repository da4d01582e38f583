//! The one statement that writes a batch: each table's rows arrive as one array per column and
//! are inserted with `INSERT ... SELECT ... FROM unnest(...) WITH ORDINALITY ... ORDER BY` (so a
//! batch's rows get their `seq` in the batch's order), all tables in one statement with
//! data-modifying CTEs, which PostgreSQL runs as one transaction: a batch is written whole or
//! not at all, with one commit. A batch of one event is how a single event is written.
//!
//! Each table's columns, the array type each is bound as, the expression that stores it, and
//! the conflict target are listed once, below ([`MESSAGES`], [`STATUSES`], [`EVENTS`],
//! [`CURRENT_STATUS`]); the `*Rows` types bind the arrays in the same order.

use std::collections::HashMap;
use std::fmt::Write as _;

use tokio_postgres::types::ToSql;

use crate::route::{Event, EventBody, StatusEvent};

/// A table a batch writes: its name, its columns (name, the array element type they are bound
/// as, the expression over the unnested column `b.<name>` that stores it), and what follows
/// `ON CONFLICT`.
pub(super) struct Table {
    pub(super) name: &'static str,
    pub(super) columns: &'static [(&'static str, &'static str, &'static str)],
    pub(super) on_conflict: &'static str,
}

/// When the ingress received the event (milliseconds since the epoch), as a timestamp: every
/// table but the current status has it.
const RECEIVED_AT: (&str, &str, &str) = (
    "received_at",
    "bigint",
    "to_timestamp(b.received_at / 1000.0)",
);

/// The event's own JSON, kept whole: every table but the current status has it.
const RAW: (&str, &str, &str) = ("raw", "text", "b.raw::jsonb");

pub(super) const MESSAGES: Table = Table {
    name: "wapipe_messages",
    columns: &[
        ("wamid", "text", "b.wamid"),
        ("provider", "text", "b.provider"),
        ("user_key", "text", "b.user_key"),
        ("from_phone", "text", "b.from_phone"),
        ("from_user_id", "text", "b.from_user_id"),
        ("phone_number_id", "text", "b.phone_number_id"),
        ("message_type", "text", "b.message_type"),
        ("group_id", "text", "b.group_id"),
        ("body", "text", "b.body"),
        ("contact_name", "text", "b.contact_name"),
        ("sent_at", "bigint", "to_timestamp(b.sent_at)"),
        RECEIVED_AT,
        RAW,
    ],
    on_conflict: "(wamid) DO NOTHING",
};

pub(super) const STATUSES: Table = Table {
    name: "wapipe_statuses",
    columns: &[
        ("wamid", "text", "b.wamid"),
        ("status", "text", "b.status"),
        ("rank", "smallint", "b.rank"),
        ("provider", "text", "b.provider"),
        ("user_key", "text", "b.user_key"),
        ("recipient_id", "text", "b.recipient_id"),
        ("phone_number_id", "text", "b.phone_number_id"),
        ("status_at", "bigint", "to_timestamp(b.status_at)"),
        ("errors", "text", "b.errors::jsonb"),
        RECEIVED_AT,
        RAW,
        ("participant", "text", "b.participant"),
    ],
    on_conflict: "(wamid, status, participant) DO NOTHING",
};

pub(super) const EVENTS: Table = Table {
    name: "wapipe_events",
    columns: &[
        ("event_id", "text", "b.event_id"),
        ("kind", "text", "b.kind"),
        ("provider", "text", "b.provider"),
        ("field", "text", "b.field"),
        ("user_key", "text", "b.user_key"),
        ("error_code", "bigint", "b.error_code"),
        ("error_title", "text", "b.error_title"),
        RECEIVED_AT,
        RAW,
    ],
    on_conflict: "(event_id) DO NOTHING",
};

/// The current status per wamid: only moves up in rank (`failed` ranks highest). `ON CONFLICT DO
/// UPDATE` may not touch a row twice in one statement, so a batch brings at most one row per
/// wamid ([`current_statuses`]).
pub(super) const CURRENT_STATUS: Table = Table {
    name: "wapipe_message_status",
    columns: &[
        ("wamid", "text", "b.wamid"),
        ("status", "text", "b.status"),
        ("rank", "smallint", "b.rank"),
        ("status_at", "bigint", "to_timestamp(b.status_at)"),
    ],
    on_conflict: "(wamid) DO UPDATE
    SET status = excluded.status, rank = excluded.rank, status_at = excluded.status_at,
        updated_at = now()
    WHERE excluded.rank > current.rank",
};

/// The batch statement: messages, statuses and other events inserted in CTEs, then the
/// current statuses upserted; parameters are the tables' column arrays in that order.
pub(super) fn statement() -> String {
    let mut sql = String::from("WITH ");
    let mut next = 1;
    for (alias, table) in [("m", &MESSAGES), ("s", &STATUSES), ("e", &EVENTS)] {
        let _ = write!(sql, "{alias} AS (");
        insert_from_arrays(&mut sql, table, "", &mut next);
        sql.push_str("),\n");
    }
    // The last CTE's comma: the final statement follows it without one.
    sql.truncate(sql.len() - 2);
    sql.push('\n');
    insert_from_arrays(&mut sql, &CURRENT_STATUS, " AS current", &mut next);
    sql
}

fn insert_from_arrays(sql: &mut String, table: &Table, alias: &str, next: &mut usize) {
    let names: Vec<&str> = table.columns.iter().map(|(name, _, _)| *name).collect();
    let names = names.join(", ");
    let exprs: Vec<&str> = table.columns.iter().map(|(_, _, expr)| *expr).collect();
    let arrays: Vec<String> = table
        .columns
        .iter()
        .map(|(_, kind, _)| {
            let param = format!("${}::{kind}[]", *next);
            *next += 1;
            param
        })
        .collect();
    let _ = write!(
        sql,
        "INSERT INTO {}{alias} ({names}) SELECT {} FROM unnest({}) WITH ORDINALITY AS b({names}, ord) ORDER BY ord ON CONFLICT {}",
        table.name,
        exprs.join(", "),
        arrays.join(", "),
        table.on_conflict,
    );
}

/// The statuses that become a batch's current-status rows: per wamid the highest-ranked, the
/// first of equals, in the order of each wamid's first status. Upserting them with the rank
/// guard leaves what writing the batch's statuses one after another would.
pub(super) fn current_statuses<'a>(
    statuses: impl IntoIterator<Item = &'a StatusEvent>,
) -> Vec<&'a StatusEvent> {
    let mut chosen: Vec<&StatusEvent> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for status in statuses {
        match at.get(status.wamid.as_str()) {
            Some(&index) => {
                if status.rank > chosen[index].rank {
                    chosen[index] = status;
                }
            }
            None => {
                at.insert(&status.wamid, chosen.len());
                chosen.push(status);
            }
        }
    }
    chosen
}

/// A batch's rows, as the statement's column arrays.
#[derive(Default)]
pub(super) struct BatchRows<'a> {
    messages: MessageRows<'a>,
    statuses: StatusRows<'a>,
    events: EventRows<'a>,
    current: CurrentRows<'a>,
}

#[derive(Default)]
struct MessageRows<'a> {
    wamid: Vec<&'a str>,
    provider: Vec<&'a str>,
    user_key: Vec<&'a str>,
    from_phone: Vec<Option<&'a str>>,
    from_user_id: Vec<Option<&'a str>>,
    phone_number_id: Vec<Option<&'a str>>,
    message_type: Vec<&'a str>,
    group_id: Vec<Option<&'a str>>,
    body: Vec<Option<&'a str>>,
    contact_name: Vec<Option<&'a str>>,
    sent_at: Vec<Option<i64>>,
    received_at: Vec<Option<i64>>,
    raw: Vec<&'a str>,
}

#[derive(Default)]
struct StatusRows<'a> {
    wamid: Vec<&'a str>,
    status: Vec<&'a str>,
    rank: Vec<i16>,
    provider: Vec<&'a str>,
    user_key: Vec<&'a str>,
    recipient_id: Vec<Option<&'a str>>,
    phone_number_id: Vec<Option<&'a str>>,
    status_at: Vec<Option<i64>>,
    errors: Vec<Option<String>>,
    received_at: Vec<Option<i64>>,
    raw: Vec<&'a str>,
    participant: Vec<&'a str>,
}

#[derive(Default)]
struct EventRows<'a> {
    event_id: Vec<&'a str>,
    kind: Vec<&'a str>,
    provider: Vec<&'a str>,
    field: Vec<Option<&'a str>>,
    user_key: Vec<&'a str>,
    error_code: Vec<Option<i64>>,
    error_title: Vec<Option<&'a str>>,
    received_at: Vec<Option<i64>>,
    raw: Vec<&'a str>,
}

#[derive(Default)]
struct CurrentRows<'a> {
    wamid: Vec<&'a str>,
    status: Vec<&'a str>,
    rank: Vec<i16>,
    status_at: Vec<Option<i64>>,
}

impl<'a> BatchRows<'a> {
    pub(super) fn new(events: &'a [Event]) -> BatchRows<'a> {
        let mut rows = BatchRows::default();
        let mut statuses = Vec::new();
        for event in events {
            let raw = event.raw.get();
            match &event.body {
                EventBody::Message(m) => {
                    let r = &mut rows.messages;
                    r.wamid.push(&m.wamid);
                    r.provider.push(event.provider);
                    r.user_key.push(&event.user_key);
                    r.from_phone.push(m.from.as_deref());
                    r.from_user_id.push(m.from_user_id.as_deref());
                    r.phone_number_id.push(m.phone_number_id.as_deref());
                    r.message_type.push(&m.message_type);
                    r.group_id.push(m.group_id.as_deref());
                    r.body.push(m.text.as_deref());
                    r.contact_name.push(m.contact_name.as_deref());
                    r.sent_at.push(m.sent_at);
                    r.received_at.push(event.received_at_ms);
                    r.raw.push(raw);
                }
                EventBody::Status(s) => {
                    let r = &mut rows.statuses;
                    r.wamid.push(&s.wamid);
                    r.status.push(s.status.as_str());
                    r.rank.push(s.rank);
                    r.provider.push(event.provider);
                    r.user_key.push(&event.user_key);
                    r.recipient_id.push(s.recipient_id.as_deref());
                    r.phone_number_id.push(s.phone_number_id.as_deref());
                    r.status_at.push(s.status_at);
                    r.errors.push(
                        (!s.errors.is_empty())
                            .then(|| serde_json::Value::from(s.errors.clone()).to_string()),
                    );
                    r.received_at.push(event.received_at_ms);
                    r.raw.push(raw);
                    r.participant.push(s.participant.as_deref().unwrap_or(""));
                    statuses.push(s);
                }
                EventBody::Error(e) => {
                    rows.events
                        .push(event, None, e.code, e.title.as_deref(), raw);
                }
                // Field changes, echoes, calls, group events and history threads: their field.
                other => {
                    rows.events
                        .push(event, Some(other.detail()), None, None, raw);
                }
            }
        }
        for s in current_statuses(statuses) {
            let r = &mut rows.current;
            r.wamid.push(&s.wamid);
            r.status.push(s.status.as_str());
            r.rank.push(s.rank);
            r.status_at.push(s.status_at);
        }
        rows
    }

    /// The statement's parameters, in the order of the tables' columns.
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let m = &self.messages;
        let s = &self.statuses;
        let e = &self.events;
        let c = &self.current;
        let params: Vec<&(dyn ToSql + Sync)> = vec![
            // MESSAGES
            &m.wamid,
            &m.provider,
            &m.user_key,
            &m.from_phone,
            &m.from_user_id,
            &m.phone_number_id,
            &m.message_type,
            &m.group_id,
            &m.body,
            &m.contact_name,
            &m.sent_at,
            &m.received_at,
            &m.raw,
            // STATUSES
            &s.wamid,
            &s.status,
            &s.rank,
            &s.provider,
            &s.user_key,
            &s.recipient_id,
            &s.phone_number_id,
            &s.status_at,
            &s.errors,
            &s.received_at,
            &s.raw,
            &s.participant,
            // EVENTS
            &e.event_id,
            &e.kind,
            &e.provider,
            &e.field,
            &e.user_key,
            &e.error_code,
            &e.error_title,
            &e.received_at,
            &e.raw,
            // CURRENT_STATUS
            &c.wamid,
            &c.status,
            &c.rank,
            &c.status_at,
        ];
        debug_assert_eq!(
            params.len(),
            [MESSAGES, STATUSES, EVENTS, CURRENT_STATUS]
                .iter()
                .map(|t| t.columns.len())
                .sum::<usize>()
        );
        params
    }
}

impl<'a> EventRows<'a> {
    fn push(
        &mut self,
        event: &'a Event,
        field: Option<&'a str>,
        code: Option<i64>,
        title: Option<&'a str>,
        raw: &'a str,
    ) {
        self.event_id.push(&event.id);
        self.kind.push(event.kind);
        self.provider.push(event.provider);
        self.field.push(field);
        self.user_key.push(&event.user_key);
        self.error_code.push(code);
        self.error_title.push(title);
        self.received_at.push(event.received_at_ms);
        self.raw.push(raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeliveryStatus;

    fn status(wamid: &str, status: DeliveryStatus, at: i64) -> StatusEvent {
        StatusEvent {
            wamid: wamid.into(),
            rank: status.rank(),
            status,
            recipient_id: None,
            participant: None,
            phone_number_id: None,
            status_at: Some(at),
            errors: Vec::new(),
        }
    }

    #[test]
    fn a_batch_upserts_one_current_status_per_wamid_the_highest_ranked_and_first_of_equals() {
        let batch = [
            status("a", DeliveryStatus::Sent, 1),
            status("b", DeliveryStatus::Read, 2),
            status("a", DeliveryStatus::Read, 3),
            status("a", DeliveryStatus::Delivered, 4),
            status("b", DeliveryStatus::Read, 5),
            status("c", DeliveryStatus::Failed, 6),
            status("c", DeliveryStatus::Played, 7),
        ];
        let chosen: Vec<(&str, &str, Option<i64>)> = current_statuses(&batch)
            .into_iter()
            .map(|s| (s.wamid.as_str(), s.status.as_str(), s.status_at))
            .collect();
        assert_eq!(
            chosen,
            [
                ("a", "read", Some(3)),
                ("b", "read", Some(2)),
                ("c", "failed", Some(6))
            ]
        );
    }

    #[test]
    fn the_batch_statement_binds_one_array_per_column_of_every_table() {
        let sql = statement();
        let columns: usize = [MESSAGES, STATUSES, EVENTS, CURRENT_STATUS]
            .iter()
            .map(|t| t.columns.len())
            .sum();
        assert!(sql.contains(&format!("${columns}::")), "{sql}");
        assert!(!sql.contains(&format!("${}::", columns + 1)), "{sql}");
        assert_eq!(BatchRows::default().params().len(), columns);
        assert!(sql.contains("ON CONFLICT (wamid, status, participant) DO NOTHING"));
        assert!(sql.contains("INSERT INTO wapipe_message_status AS current"));
    }
}
