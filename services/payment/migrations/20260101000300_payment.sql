-- The payment service's record of each order's payment.
CREATE TABLE payments (
    order_id     uuid PRIMARY KEY,
    status       text        NOT NULL CHECK (status IN ('succeeded', 'failed')),
    amount_cents bigint      NOT NULL,
    charge_id    text,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The payment-gateway simulator's own ledger. It stands for an external system: it is written
-- outside the handler's transaction, and its idempotency key is what keeps a retried charge
-- from being taken twice.
CREATE TABLE gateway_charges (
    idempotency_key text PRIMARY KEY,
    charge_id       text        NOT NULL,
    amount_cents    bigint      NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('captured', 'declined')),
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
