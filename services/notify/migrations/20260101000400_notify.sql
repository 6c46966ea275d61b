-- One notification per order and final state, never two.
CREATE TABLE notifications (
    order_id    uuid        NOT NULL,
    status      text        NOT NULL,
    customer_id text        NOT NULL,
    message     text        NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, status)
);
