-- A customer's request to cancel a confirmed order (POST /orders/{id}/cancel). Set once, by the
-- request whose conditional update wins; the order stays `confirmed` until payment has refunded
-- the charge (`payment.refunded`), then becomes `cancelled`.
ALTER TABLE orders
    ADD COLUMN cancel_requested_at timestamptz,
    ADD COLUMN cancel_reason       text;
