//! The one statement that writes a batch: each table's rows arrive as one array per column and
//! are inserted with `INSERT ... SELECT ... FROM unnest(...) WITH ORDINALITY ... ORDER BY` (so a
//! batch's rows get their `seq` in the batch's order), all tables in one statement with
//! data-modifying CTEs, which PostgreSQL runs as one transaction: a batch is written whole or
//! not at all, with one commit. A batch of one event is how a single event is written.
//!
//! Each table's columns are listed once, below ([`MESSAGES`], [`STATUSES`], [`EVENTS`],
//! [`CURRENT_STATUS`]): each column's name, the Rust type of its values, the array type it is
//! bound as and the expression that stores it, then the conflict target. The statement's
//! columns and the `*Rows` struct whose arrays are bound to them come from that one list.

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

/// Declares a table a batch writes: the [`Table`] the statement is built from, and the struct
/// of its column arrays, bound in the same order. Each column: its name (the array's field
/// too), the Rust type of one row's value, the array element type it is bound as, and the
/// expression over the unnested column `b.<name>` that stores it. One list, so the statement's
/// columns and the parameters bound to them cannot drift apart.
macro_rules! table {
    (
        $(#[$doc:meta])*
        $table:ident = $name:literal, $rows:ident {
            $($column:ident: $value:ty as $kind:literal => $expr:expr,)*
        }
        on conflict $on_conflict:expr
    ) => {
        $(#[$doc])*
        pub(super) const $table: Table = Table {
            name: $name,
            columns: &[$((stringify!($column), $kind, $expr),)*],
            on_conflict: $on_conflict,
        };

        #[derive(Default)]
        struct $rows<'a> {
            $($column: Vec<$value>,)*
        }

        impl<'a> $rows<'a> {
            /// Binds the column arrays, in the order of the table's columns.
            fn bind<'s>(&'s self, params: &mut Vec<&'s (dyn ToSql + Sync)>) {
                $(params.push(&self.$column);)*
            }
        }
    };
}

/// When the ingress received the event (milliseconds since the epoch), as a timestamp: every
/// table but the current status has it.
const RECEIVED_AT: &str = "to_timestamp(b.received_at / 1000.0)";

/// The event's own JSON, kept whole: every table but the current status has it.
const RAW: &str = "b.raw::jsonb";

table! {
    MESSAGES = "wapipe_messages", MessageRows {
        wamid: &'a str as "text" => "b.wamid",
        provider: &'a str as "text" => "b.provider",
        user_key: &'a str as "text" => "b.user_key",
        from_phone: Option<&'a str> as "text" => "b.from_phone",
        from_user_id: Option<&'a str> as "text" => "b.from_user_id",
        phone_number_id: Option<&'a str> as "text" => "b.phone_number_id",
        message_type: &'a str as "text" => "b.message_type",
        group_id: Option<&'a str> as "text" => "b.group_id",
        body: Option<&'a str> as "text" => "b.body",
        contact_name: Option<&'a str> as "text" => "b.contact_name",
        sent_at: Option<i64> as "bigint" => "to_timestamp(b.sent_at)",
        received_at: Option<i64> as "bigint" => RECEIVED_AT,
        raw: &'a str as "text" => RAW,
    }
    on conflict "(wamid) DO NOTHING"
}

table! {
    STATUSES = "wapipe_statuses", StatusRows {
        wamid: &'a str as "text" => "b.wamid",
        status: &'a str as "text" => "b.status",
        rank: i16 as "smallint" => "b.rank",
        provider: &'a str as "text" => "b.provider",
        user_key: &'a str as "text" => "b.user_key",
        recipient_id: Option<&'a str> as "text" => "b.recipient_id",
        phone_number_id: Option<&'a str> as "text" => "b.phone_number_id",
        status_at: Option<i64> as "bigint" => "to_timestamp(b.status_at)",
        errors: Option<String> as "text" => "b.errors::jsonb",
        received_at: Option<i64> as "bigint" => RECEIVED_AT,
        raw: &'a str as "text" => RAW,
        participant: &'a str as "text" => "b.participant",
    }
    on conflict "(wamid, status, participant) DO NOTHING"
}

table! {
    EVENTS = "wapipe_events", EventRows {
        event_id: &'a str as "text" => "b.event_id",
        kind: &'a str as "text" => "b.kind",
        provider: &'a str as "text" => "b.provider",
        field: Option<&'a str> as "text" => "b.field",
        user_key: &'a str as "text" => "b.user_key",
        error_code: Option<i64> as "bigint" => "b.error_code",
        error_title: Option<&'a str> as "text" => "b.error_title",
        received_at: Option<i64> as "bigint" => RECEIVED_AT,
        raw: &'a str as "text" => RAW,
    }
    on conflict "(event_id) DO NOTHING"
}

table! {
    /// The current status per wamid: only moves up in rank (`failed` ranks highest). `ON
    /// CONFLICT DO UPDATE` may not touch a row twice in one statement, so a batch brings at most
    /// one row per wamid ([`current_statuses`]).
    CURRENT_STATUS = "wapipe_message_status", CurrentRows {
        wamid: &'a str as "text" => "b.wamid",
        status: &'a str as "text" => "b.status",
        rank: i16 as "smallint" => "b.rank",
        status_at: Option<i64> as "bigint" => "to_timestamp(b.status_at)",
    }
    on conflict "(wamid) DO UPDATE
    SET status = excluded.status, rank = excluded.rank, status_at = excluded.status_at,
        updated_at = now()
    WHERE excluded.rank > current.rank"
}

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
        let mut params = Vec::new();
        self.messages.bind(&mut params);
        self.statuses.bind(&mut params);
        self.events.bind(&mut params);
        self.current.bind(&mut params);
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
