-- One row per order: its reconciliation as it stands. `status` is what an operator filters
-- on: `matched`, `open` (a mismatch not resolved) or `resolved` (a late side matched).
CREATE TABLE reconciliations (
    order_id             uuid        PRIMARY KEY,
    outcome              text        NOT NULL,
    status               text        NOT NULL CHECK (status IN ('matched', 'open', 'resolved')),
    app_outcome          text,
    app_amount_cents     bigint,
    gateway_outcome      text,
    gateway_amount_cents bigint,
    callback_id          text,
    -- The first side handled (the consumer's clock): the window started here.
    first_seen_at        timestamptz NOT NULL,
    -- The first decision (a match or a mismatch), and the latest.
    decided_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    -- First side to agreement, for matches and late matches.
    time_to_match_ms     bigint
);
CREATE INDEX reconciliations_updated_at ON reconciliations (updated_at);
CREATE INDEX reconciliations_status ON reconciliations (status, updated_at);

-- Every transition of an order's reconciliation, oldest first: a resolved mismatch keeps its
-- history here.
CREATE TABLE reconciliation_history (
    id         bigserial   PRIMARY KEY,
    order_id   uuid        NOT NULL,
    outcome    text        NOT NULL,
    previous   text,
    at         timestamptz NOT NULL,
    -- The message that caused it (a side, or the window's timer firing).
    message_id text        NOT NULL
);
CREATE INDEX reconciliation_history_order ON reconciliation_history (order_id, id);
