-- Durable timers of a service's consumers: at most one per (consumer, name, key), set, reset
-- and cancelled in the handler's transaction. The consumer's firing task claims due rows,
-- writes one outbox message per timer to the consumer's own queue and deletes the rows in one
-- transaction, so a timer fires once whatever the number of replicas.
CREATE TABLE IF NOT EXISTS msgkit_timers (
    consumer    text        NOT NULL,
    name        text        NOT NULL,
    key         text        NOT NULL,
    due_at      timestamptz NOT NULL,
    payload     jsonb       NOT NULL,
    -- The trace of the message whose handler set it: the firing continues it.
    traceparent text,
    set_at      timestamptz NOT NULL,
    PRIMARY KEY (consumer, name, key)
);
CREATE INDEX IF NOT EXISTS msgkit_timers_due ON msgkit_timers (consumer, due_at);
