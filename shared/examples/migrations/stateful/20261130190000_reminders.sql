-- One reminder per ticket left open too long, in the stateful example's schema
-- (example_stateful) beside the kit's keyed state and timers.
CREATE TABLE reminders (
    ticket_id UUID PRIMARY KEY,
    title TEXT NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL,
    reminded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
