-- SQLite flavour of migrations/0002_status_participant.sql: SQLite cannot change a primary key
-- in place, so the statuses table is rebuilt with every row, in rowid (write) order; rows of
-- group sends get their participant back from the raw event.
CREATE TABLE wapipe_statuses_v2 (
    wamid            TEXT NOT NULL,
    status           TEXT NOT NULL,
    participant      TEXT NOT NULL DEFAULT '',
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
    PRIMARY KEY (wamid, status, participant)
);
INSERT INTO wapipe_statuses_v2 (wamid, status, participant, rank, provider, user_key,
    recipient_id, phone_number_id, status_at, errors, received_at_ms, written_at, raw)
SELECT wamid, status,
       CASE WHEN instr(p, '@') > 0 THEN substr(p, 1, instr(p, '@') - 1) ELSE p END,
       rank, provider, user_key, recipient_id, phone_number_id, status_at, errors,
       received_at_ms, written_at, raw
  FROM (SELECT *, rowid AS row_order, COALESCE(ltrim(trim(json_extract(raw,
          '$.entry[0].changes[0].value.statuses[0].recipient_participant_id')), '+'), '') AS p
          FROM wapipe_statuses)
 ORDER BY row_order;
DROP TABLE wapipe_statuses;
ALTER TABLE wapipe_statuses_v2 RENAME TO wapipe_statuses;
