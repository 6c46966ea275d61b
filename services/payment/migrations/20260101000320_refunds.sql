-- Refunds of cancelled orders (order.cancel_requested -> payment.refunded).

-- The simulator finds a charge by its id to refund it; one charge id is one charge.
CREATE UNIQUE INDEX gateway_charges_by_charge_id ON gateway_charges (charge_id);

-- The gateway simulator's refunds, written outside the handler's transaction as an external
-- system would. A charge is refunded at most once, in full: the first refund under its
-- idempotency key decides, and a retried refund gets that one back.
CREATE TABLE gateway_refunds (
    idempotency_key text PRIMARY KEY,
    charge_id       text        NOT NULL UNIQUE REFERENCES gateway_charges (charge_id),
    refund_id       text        NOT NULL UNIQUE,
    amount_cents    bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The payment service's record of each refund, written in the same transaction as its
-- payment.refunded outbox row: one per order.
CREATE TABLE refunds (
    order_id     uuid PRIMARY KEY REFERENCES payments (order_id),
    charge_id    text        NOT NULL,
    refund_id    text        NOT NULL,
    amount_cents bigint      NOT NULL,
    refunded_at  timestamptz NOT NULL
);
