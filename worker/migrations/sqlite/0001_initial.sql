-- SQLite flavour of migrations/0001_initial.sql for local mode; the rowid keeps write order.
CREATE TABLE IF NOT EXISTS wapipe_messages (
    wamid            TEXT PRIMARY KEY,
    provider         TEXT NOT NULL,
    user_key         TEXT NOT NULL,
    from_phone       TEXT,
    from_user_id     TEXT,
    phone_number_id  TEXT,
    message_type     TEXT NOT NULL,
    group_id         TEXT,
    body             TEXT,
    contact_name     TEXT,
    sent_at          INTEGER,
    received_at_ms   INTEGER,
    written_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    raw              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS wapipe_messages_user_key ON wapipe_messages (user_key);

CREATE TABLE IF NOT EXISTS wapipe_statuses (
    wamid            TEXT NOT NULL,
    status           TEXT NOT NULL,
    rank             INTEGER NOT NULL,
    provider         TEXT NOT NULL,
    user_key         TEXT NOT NULL,
    recipient_id     TEXT,
    phone_number_id  TEXT,
    status_at        INTEGER,
    errors           TEXT,
    received_at_ms   INTEGER,
    written_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    raw              TEXT NOT NULL,
    PRIMARY KEY (wamid, status)
);

CREATE TABLE IF NOT EXISTS wapipe_message_status (
    wamid       TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    rank        INTEGER NOT NULL,
    status_at   INTEGER,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS wapipe_events (
    event_id        TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    provider        TEXT NOT NULL,
    field           TEXT,
    user_key        TEXT NOT NULL,
    error_code      INTEGER,
    error_title     TEXT,
    received_at_ms  INTEGER,
    written_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    raw             TEXT NOT NULL
);
