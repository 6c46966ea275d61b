-- The consumer's own view of tickets, in its schema (example_consumer) beside the kit's inbox
-- and outbox.
CREATE TABLE ticket_log (
    ticket_id UUID PRIMARY KEY,
    title TEXT NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL,
    closed_at TIMESTAMPTZ
);
