-- The live alert feed (`GET /alerts/stream`): every stored alert gets a feed number in commit
-- order. A serial column would not do: numbers are drawn when a row is inserted, so a
-- transaction drawing 8 can commit before one holding 7, and a client resuming after 8 would
-- never see 7. The one row below is updated as the last step of the consumer's transaction
-- instead: its row lock is held until commit, so the next transaction gets its number only
-- after this one committed (or rolled back, which undoes the number).
CREATE TABLE risk_feed (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint  NOT NULL
);

ALTER TABLE alerts
    -- The feed number: set in the transaction that inserts the alert, before it commits.
    ADD COLUMN seq bigint UNIQUE,
    -- When the numbering statement ran: the last statement before the commit, so the alert's
    -- commit time to within a few milliseconds (push latency starts here).
    ADD COLUMN committed_at timestamptz,
    -- When the message that raised it was created (its outbox row, `x-created-at-ms`):
    -- decision latency starts here.
    ADD COLUMN event_created_at timestamptz,
    -- The handler's trace context (W3C traceparent), continued by the push.
    ADD COLUMN traceparent text,
    -- The service instance whose consumer decided it (records decision latency once).
    ADD COLUMN decided_by uuid;

-- Alerts stored before the feed existed, numbered in the order they were created.
UPDATE alerts SET seq = numbered.n, committed_at = alerts.created_at
FROM (SELECT alert_id, row_number() OVER (ORDER BY created_at, alert_id) AS n FROM alerts) AS numbered
WHERE alerts.alert_id = numbered.alert_id;

INSERT INTO risk_feed (seq) SELECT coalesce(max(seq), 0) FROM alerts;
