//! The `sqlite` sink for local mode: the same tables as the postgres sink in one file, written
//! with the same idempotent statements, a batch of events in one transaction (one commit).
//! SQLite calls block, so they run on the blocking pool behind one connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode};

use crate::error::{Error, Result};
use crate::route::{Event, EventBody};

use super::Sink;

const SINK: &str = "sqlite";

/// Most events written in one transaction.
const MAX_BATCH: usize = 500;

/// SQLite migrations: (version, name, SQL).
pub const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "status_participant",
        include_str!("../../migrations/sqlite/0002_status_participant.sql"),
    ),
];

pub struct SqliteSink {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
}

impl SqliteSink {
    /// Opens (or creates) the database file and applies the migrations.
    pub fn open(path: &Path) -> Result<SqliteSink> {
        let connection = Connection::open(path).map_err(|e| unavailable(&e))?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| unavailable(&e))?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS wapipe_schema_migrations (
                     version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                     applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
            )
            .map_err(|e| unavailable(&e))?;
        for (version, name, sql) in SQLITE_MIGRATIONS {
            let applied: bool = connection
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM wapipe_schema_migrations WHERE version = ?1)",
                    [version],
                    |row| row.get(0),
                )
                .map_err(|e| unavailable(&e))?;
            if !applied {
                connection
                    .execute_batch(&format!(
                        "BEGIN; {sql}; INSERT INTO wapipe_schema_migrations (version, name) \
                         VALUES ({version}, '{name}'); COMMIT;"
                    ))
                    .map_err(|e| unavailable(&e))?;
            }
        }
        Ok(SqliteSink {
            path: path.to_path_buf(),
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn unavailable(error: &rusqlite::Error) -> Error {
    Error::SinkUnavailable {
        sink: SINK,
        reason: error.to_string(),
    }
}

/// Constraint and type errors are the event's fault; busy, I/O and disk-full are the sink's.
fn classify(error: rusqlite::Error) -> Error {
    let event_fault = matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig)
    );
    if event_fault {
        Error::SinkRejected {
            sink: SINK,
            reason: error.to_string(),
        }
    } else {
        unavailable(&error)
    }
}

fn write_event(connection: &Connection, event: &Event) -> rusqlite::Result<()> {
    let raw = event.raw.get();
    let received_at = event.received_at_ms;
    match &event.body {
        EventBody::Message(m) => connection
            .prepare_cached(
                "INSERT INTO wapipe_messages (wamid, provider, user_key, from_phone, from_user_id,
                   phone_number_id, message_type, group_id, body, contact_name, sent_at,
                   received_at_ms, raw)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (wamid) DO NOTHING",
            )?
            .execute(params![
                m.wamid,
                event.provider,
                event.user_key,
                m.from,
                m.from_user_id,
                m.phone_number_id,
                m.message_type,
                m.group_id,
                m.text,
                m.contact_name,
                m.sent_at,
                received_at,
                raw
            ])
            .map(|_| ()),
        EventBody::Status(s) => {
            let errors = (!s.errors.is_empty())
                .then(|| serde_json::Value::from(s.errors.clone()).to_string());
            connection
                .prepare_cached(
                    "INSERT INTO wapipe_statuses (wamid, status, rank, provider, user_key,
                       recipient_id, phone_number_id, status_at, errors, received_at_ms, raw,
                       participant)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (wamid, status, participant) DO NOTHING",
                )?
                .execute(params![
                    s.wamid,
                    s.status.as_str(),
                    s.rank,
                    event.provider,
                    event.user_key,
                    s.recipient_id,
                    s.phone_number_id,
                    s.status_at,
                    errors,
                    received_at,
                    raw,
                    s.participant.as_deref().unwrap_or("")
                ])?;
            connection
                .prepare_cached(
                    "INSERT INTO wapipe_message_status (wamid, status, rank, status_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (wamid) DO UPDATE
                       SET status = excluded.status, rank = excluded.rank,
                           status_at = excluded.status_at,
                           updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                       WHERE excluded.rank > wapipe_message_status.rank",
                )?
                .execute(params![s.wamid, s.status.as_str(), s.rank, s.status_at])
                .map(|_| ())
        }
        other => {
            let (field, code, title) = match other {
                EventBody::Error(e) => (None, e.code, e.title.clone()),
                other => (Some(other.detail().to_string()), None, None),
            };
            connection
                .prepare_cached(
                    "INSERT INTO wapipe_events (event_id, kind, provider, field, user_key,
                       error_code, error_title, received_at_ms, raw)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (event_id) DO NOTHING",
                )?
                .execute(params![
                    event.id,
                    event.kind,
                    event.provider,
                    field,
                    event.user_key,
                    code,
                    title,
                    received_at,
                    raw
                ])
                .map(|_| ())
        }
    }
}

#[async_trait::async_trait]
impl Sink for SqliteSink {
    fn name(&self) -> &'static str {
        SINK
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn write_batch(&self, events: &[Event]) -> Result<()> {
        let connection = self.connection.clone();
        let events = events.to_vec();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            write_all(&mut connection, &events).map_err(classify)
        })
        .await
        .map_err(|e| Error::SinkUnavailable {
            sink: SINK,
            reason: format!("the write task failed: {e}"),
        })?
    }
}

/// Writes `events` in one transaction: all of them, or none.
fn write_all(connection: &mut Connection, events: &[Event]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    for event in events {
        write_event(&transaction, event)?;
    }
    transaction.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{meta_record, route};
    use serde_json::json;

    fn status(wamid: &str, status: &str) -> Event {
        let value = json!({"object": "whatsapp_business_account", "entry": [{"id": "w",
            "changes": [{"field": "messages", "value": {"statuses": [
                {"id": wamid, "status": status, "timestamp": "1700000000", "recipient_id": "1555"}]}}]}]});
        route(&meta_record("1555", &value)).unwrap()
    }

    #[tokio::test]
    async fn sqlite_keeps_one_row_per_status_and_the_highest_ranked_as_current() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wapipe.db");
        let sink = SqliteSink::open(&path).unwrap();
        for s in ["sent", "read", "delivered", "read"] {
            sink.write(&status("wamid.1", s)).await.unwrap();
        }
        // Reopening applies no migration twice.
        drop(sink);
        let sink = SqliteSink::open(&path).unwrap();
        sink.write(&status("wamid.1", "delivered")).await.unwrap();
        let connection = sink.connection.lock().unwrap();
        let rows: i64 = connection
            .query_row("SELECT count(*) FROM wapipe_statuses", [], |r| r.get(0))
            .unwrap();
        let current: String = connection
            .query_row("SELECT status FROM wapipe_message_status", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3);
        assert_eq!(current, "read");
    }
}
