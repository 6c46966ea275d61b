-- The rebate projection's tables, built from the event archive (and rebuilt by
-- `msgkit projection rebuild rebate`). Every value is a function of the events applied, in
-- archive order (times are event times, never now()), so that a rebuild equals the live
-- tables row for row.

-- One line per order and kind: the payment's credit and, if refunded, its reversal. The
-- natural key makes a duplicated event (the archive is at-least-once) insert nothing.
CREATE TABLE rebate_lines (
    order_id       uuid        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('payment', 'refund')),
    customer_id    text        NOT NULL,
    -- The payment's amount, or minus it for a refund.
    amount_cents   bigint      NOT NULL,
    -- Credit (payment) or its exact reversal (refund).
    rebate_cents   bigint      NOT NULL,
    -- The rate applied (a refund repeats its payment's).
    rate_bp        integer     NOT NULL,
    -- The event's time: the payment's or refund's `occurred_at`, else the event's creation.
    at             timestamptz NOT NULL,
    -- The calendar month (UTC) whose spend the payment counted in.
    month          date        NOT NULL,
    -- The event that made the line, and where it is in the archive.
    message_id     text        NOT NULL,
    archive_offset bigint      NOT NULL,
    PRIMARY KEY (order_id, kind)
);

CREATE INDEX rebate_lines_by_customer ON rebate_lines (customer_id, at DESC);

-- Each customer's balance: the sum of their lines. `version` counts the lines, so it grows by
-- one with each change: the stream's event id.
CREATE TABLE rebate_balances (
    customer_id   text        PRIMARY KEY,
    balance_cents bigint      NOT NULL,
    version       bigint      NOT NULL,
    -- Event time of the last line.
    updated_at    timestamptz NOT NULL
);

-- Spend per customer and calendar month (UTC): payments add, refunds take back. What picks a
-- payment's tier.
CREATE TABLE rebate_monthly_spend (
    customer_id text   NOT NULL,
    month       date   NOT NULL,
    spend_cents bigint NOT NULL,
    PRIMARY KEY (customer_id, month)
);

-- See rebate_balance_changed() in the service's migrations: it resolves there, through the
-- search path, also for a rebuild's tables.
CREATE TRIGGER rebate_balance_changed
    AFTER INSERT OR UPDATE ON rebate_balances
    FOR EACH ROW EXECUTE FUNCTION rebate_balance_changed();
