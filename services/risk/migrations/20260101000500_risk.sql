-- Transactions recorded over HTTP: the transaction_id makes a repeated request the same row.
CREATE TABLE transactions (
    transaction_id text        PRIMARY KEY,
    user_id        text        NOT NULL,
    amount_cents   bigint      NOT NULL,
    currency       text        NOT NULL,
    location       text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- Rules as data: each edit is a new version, and the highest version of an id is current.
-- `kind` is the engine's `risk::Kind` as serde writes it.
CREATE TABLE rules (
    id         bigint      NOT NULL,
    version    integer     NOT NULL,
    key        text        NOT NULL,
    kind       jsonb       NOT NULL,
    severity   text        NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    enabled    boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version)
);

-- An alert is stored once per rule version and triggering transactions, however often the
-- events that raised it are redelivered or replayed.
CREATE TABLE alerts (
    alert_id        uuid        PRIMARY KEY,
    rule_id         bigint      NOT NULL,
    rule_version    integer     NOT NULL,
    user_id         text        NOT NULL,
    severity        text        NOT NULL,
    transaction_ids text[]      NOT NULL,
    at              timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (rule_id, rule_version, transaction_ids)
);
CREATE INDEX alerts_by_user ON alerts (user_id, created_at DESC);

-- The default rule, `risk::default_rule()` (a unit test keeps this literal equal to it):
-- over 10,000.00, then the user's very next transaction from elsewhere within 5 minutes.
INSERT INTO rules (id, version, key, kind, severity) VALUES
    (1, 1, 'user_id', '{"type": "sequence", "first": "amount_cents > 1000000", "then": "b.location != a.location", "within_ms": 300000, "strict": true}', 'high');
