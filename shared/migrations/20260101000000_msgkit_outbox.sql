-- The transactional outbox of one service, created in that service's schema (search_path).
CREATE TABLE IF NOT EXISTS msgkit_outbox (
    id              uuid PRIMARY KEY,
    -- Commit order within an aggregate: the relay never publishes a row while an earlier row of
    -- the same aggregate is unpublished.
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    aggregate_id    text        NOT NULL,
    exchange        text        NOT NULL,
    routing_key     text        NOT NULL,
    message_type    text        NOT NULL,
    payload         jsonb       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    published_at    timestamptz
);

CREATE INDEX IF NOT EXISTS msgkit_outbox_pending
    ON msgkit_outbox (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS msgkit_outbox_pending_by_aggregate
    ON msgkit_outbox (aggregate_id, seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS msgkit_outbox_published
    ON msgkit_outbox (published_at) WHERE published_at IS NOT NULL;

-- Wake the relays of this schema on commit. One notification per statement, and PostgreSQL
-- folds identical notifications of one transaction into one.
CREATE OR REPLACE FUNCTION msgkit_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('msgkit_outbox_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS msgkit_outbox_notify ON msgkit_outbox;
CREATE TRIGGER msgkit_outbox_notify
    AFTER INSERT ON msgkit_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION msgkit_outbox_notify();
