-- The inbox of one service: which messages each of its consumers has applied. A row is written
-- in the same transaction as the handler's effects, so a redelivered duplicate finds it and is
-- acknowledged without applying its effects again.
CREATE TABLE IF NOT EXISTS msgkit_inbox (
    consumer     text        NOT NULL,
    message_id   text        NOT NULL,
    message_type text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS msgkit_inbox_processed_at ON msgkit_inbox (processed_at);
