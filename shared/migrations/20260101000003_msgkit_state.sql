-- Keyed state of a service's consumers: one serde value per (consumer, key), written in the
-- handler's transaction together with the message's inbox row. An entry with expires_at is
-- never read after that instant (by the consumer's clock) and is deleted by the consumer's
-- sweep some time later.
CREATE TABLE IF NOT EXISTS msgkit_state (
    consumer   text        NOT NULL,
    key        text        NOT NULL,
    value      jsonb       NOT NULL,
    expires_at timestamptz,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (consumer, key)
);
CREATE INDEX IF NOT EXISTS msgkit_state_expires_at ON msgkit_state (consumer, expires_at)
    WHERE expires_at IS NOT NULL;
