-- The gateway simulator's pending and sent callbacks: its own durable queue, written in the
-- same statement as the charge it reports (gateway_charges), so a charge taken always has its
-- callback, and a SIGKILLed process still sends it after the restart. The faults decided for
-- a callback are stored with it: `lost` is the ground truth of callbacks never sent.
CREATE TABLE gateway_callbacks (
    callback_id          text PRIMARY KEY,
    -- Charge order, for the reorder fault and for reading.
    seq                  bigserial   NOT NULL,
    idempotency_key      text        NOT NULL REFERENCES gateway_charges (idempotency_key),
    order_id             uuid        NOT NULL,
    outcome              text        NOT NULL CHECK (outcome IN ('success', 'declined')),
    -- What the charge was for, and what the callback reports (they differ under the
    -- wrong-amount fault).
    charged_amount_cents bigint      NOT NULL,
    amount_cents         bigint      NOT NULL,
    -- The exact bytes sent and signed.
    body                 text        NOT NULL,
    -- How many times each attempt sends it (2 under the duplication fault).
    copies               integer     NOT NULL DEFAULT 1,
    lost                 boolean     NOT NULL DEFAULT false,
    -- When to try next; a claimed callback's lease moves it forward so no other sender takes
    -- it while the request is in flight.
    due_at               timestamptz NOT NULL,
    attempts             integer     NOT NULL DEFAULT 0,
    last_error           text,
    sent_at              timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX gateway_callbacks_pending ON gateway_callbacks (due_at)
    WHERE sent_at IS NULL AND NOT lost;

-- Callbacks as the payment service received and verified them: one row per callback id, so a
-- duplicate is stored (and published) once. `known_order` says whether payments had the order.
CREATE TABLE payment_callbacks (
    callback_id  text PRIMARY KEY,
    order_id     uuid        NOT NULL,
    charge_id    text,
    outcome      text        NOT NULL CHECK (outcome IN ('success', 'declined')),
    amount_cents bigint      NOT NULL,
    known_order  boolean     NOT NULL,
    received_at  timestamptz NOT NULL
);
