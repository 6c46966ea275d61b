-- Operators are told of each reconciliation mismatch and of its resolution, once: reconcile
-- may publish a second mismatch for one order (a late side that disagrees turns
-- `third-party-missing` into `amount-mismatch`), which is new information and gets its own row,
-- while a redelivery or a replay of the same event collides on the key.
CREATE TABLE reconcile_notifications (
    order_id   uuid        NOT NULL,
    event      text        NOT NULL CHECK (event IN ('mismatch', 'resolved')),
    outcome    text        NOT NULL,
    message    text        NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, event, outcome)
);
CREATE INDEX reconcile_notifications_by_time ON reconcile_notifications (sent_at DESC);
