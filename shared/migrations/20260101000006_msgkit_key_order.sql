-- Per-key order (see msgkit::key_order).
--
-- Producer side: the last number given to each key of each sequence. The outbox INSERT of a
-- sequenced event takes the next number from here in the same statement; the row lock it
-- takes until commit numbers one key's events in commit order.
CREATE TABLE IF NOT EXISTS msgkit_key_sequences (
    sequence text   NOT NULL,
    key      text   NOT NULL,
    last     bigint NOT NULL,
    PRIMARY KEY (sequence, key)
);

-- Consumer side: the number each key of each sequence expects next. Its row is locked for the
-- whole handling of a sequenced message, so one key's messages are applied one at a time by
-- any number of replicas. `retrying_since` is set while the expected message waits for a
-- retry: its key's later messages wait too, and no gap timeout skips it.
CREATE TABLE IF NOT EXISTS msgkit_key_order (
    consumer       text        NOT NULL,
    sequence       text        NOT NULL,
    key            text        NOT NULL,
    next_seq       bigint      NOT NULL,
    retrying_since timestamptz,
    PRIMARY KEY (consumer, sequence, key)
);

-- Messages that arrived before their turn, acknowledged and kept here until the message
-- before them is applied or dead-lettered; then released to the consumer's queue through the
-- outbox, under their own message id.
CREATE TABLE IF NOT EXISTS msgkit_key_parked (
    consumer     text        NOT NULL,
    sequence     text        NOT NULL,
    key          text        NOT NULL,
    seq          bigint      NOT NULL,
    message_id   text        NOT NULL,
    message_type text        NOT NULL,
    headers      jsonb       NOT NULL,
    payload      jsonb       NOT NULL,
    parked_at    timestamptz NOT NULL,
    PRIMARY KEY (consumer, sequence, key, seq)
);
CREATE INDEX IF NOT EXISTS msgkit_key_parked_age ON msgkit_key_parked (consumer, parked_at);
