-- Messages, unique by wamid; `seq` records the order in which the worker wrote them.
CREATE TABLE IF NOT EXISTS wapipe_messages (
    wamid            text PRIMARY KEY,
    seq              bigserial NOT NULL,
    provider         text NOT NULL,
    user_key         text NOT NULL,
    from_phone       text,
    from_user_id     text,
    phone_number_id  text,
    message_type     text NOT NULL,
    group_id         text,
    body             text,
    contact_name     text,
    sent_at          timestamptz,
    received_at      timestamptz,
    written_at       timestamptz NOT NULL DEFAULT now(),
    raw              jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS wapipe_messages_user_key_seq ON wapipe_messages (user_key, seq);

-- Every status ever received, unique by (wamid, status).
CREATE TABLE IF NOT EXISTS wapipe_statuses (
    wamid            text NOT NULL,
    status           text NOT NULL,
    rank             smallint NOT NULL,
    seq              bigserial NOT NULL,
    provider         text NOT NULL,
    user_key         text NOT NULL,
    recipient_id     text,
    phone_number_id  text,
    status_at        timestamptz,
    errors           jsonb,
    received_at      timestamptz,
    written_at       timestamptz NOT NULL DEFAULT now(),
    raw              jsonb NOT NULL,
    PRIMARY KEY (wamid, status)
);

-- The current status of each outbound message: the highest-ranked one seen
-- (sent < delivered < read < played; failed is terminal).
CREATE TABLE IF NOT EXISTS wapipe_message_status (
    wamid       text PRIMARY KEY,
    status      text NOT NULL,
    rank        smallint NOT NULL,
    status_at   timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Errors and changes of other fields, unique by event id.
CREATE TABLE IF NOT EXISTS wapipe_events (
    event_id     text PRIMARY KEY,
    seq          bigserial NOT NULL,
    kind         text NOT NULL,
    provider     text NOT NULL,
    field        text,
    user_key     text NOT NULL,
    error_code   bigint,
    error_title  text,
    received_at  timestamptz,
    written_at   timestamptz NOT NULL DEFAULT now(),
    raw          jsonb NOT NULL
);
