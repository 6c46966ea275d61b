-- One notification per high-severity risk alert, never two: risk stores each alert once and
-- publishes it with its id, so the alert id is the key a redelivery or a replay collides on.
-- Kept apart from `notifications`, whose key is one row per order and final state.
CREATE TABLE risk_notifications (
    alert_id        uuid        PRIMARY KEY,
    user_id         text        NOT NULL,
    rule_id         bigint      NOT NULL,
    rule_version    integer     NOT NULL,
    transaction_ids text[]      NOT NULL,
    message         text        NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX risk_notifications_by_user ON risk_notifications (user_id, sent_at DESC);
