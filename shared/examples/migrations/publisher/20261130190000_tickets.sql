-- The publisher's own table, in its schema (example_publisher) beside the kit's outbox.
CREATE TABLE tickets (
    ticket_id UUID PRIMARY KEY,
    title TEXT NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at TIMESTAMPTZ
);
