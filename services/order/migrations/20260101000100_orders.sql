CREATE TABLE orders (
    id          uuid PRIMARY KEY,
    customer_id text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected', 'cancelled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE order_items (
    order_id uuid    NOT NULL REFERENCES orders (id),
    line     integer NOT NULL,
    sku      text    NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, line)
);

-- Every state the order went through and the event that moved it there.
CREATE TABLE order_history (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id   uuid        NOT NULL REFERENCES orders (id),
    status     text        NOT NULL,
    event      text        NOT NULL,
    reason     text,
    message_id uuid,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_history_by_order ON order_history (order_id, id);

-- Idempotency-Key of POST /orders: the first response, replayed for a retried request.
CREATE TABLE idempotency_keys (
    key             text PRIMARY KEY,
    request         jsonb       NOT NULL,
    response_status smallint    NOT NULL,
    response_body   jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
