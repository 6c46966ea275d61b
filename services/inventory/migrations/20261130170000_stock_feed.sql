-- Live stock (`GET /stock/{sku}`, `GET /stock/stream`): every change of a SKU's `available`
-- gets a per-SKU `version` and a place in one feed of changes (`change_seq`), and is announced
-- with `pg_notify` at commit. Triggers do it, so every path that changes stock (reservation,
-- release, refund, a manual fix) publishes without code of its own.
--
-- Why `change_seq` is not drawn from a sequence: numbers drawn when a row is updated are not
-- in commit order (a transaction drawing 8 can commit after one drawing 9), and a stream that
-- sent 9 and resumes "after 9" would never see 8. So the number is taken at commit instead,
-- by a deferred constraint trigger that updates the one row of `stock_feed`: its row lock is
-- held until the commit ends, so the next transaction gets its number only after this one
-- committed (or rolled back, which undoes the number, so the feed has no gaps either). The
-- lock is held only from the pre-commit triggers to the end of the commit; transactions that
-- `pg_notify` are serialised there by PostgreSQL anyway (its notification queue lock).

ALTER TABLE stock
    -- Bumped on every change of `available`, in the changing transaction.
    ADD COLUMN version    bigint      NOT NULL DEFAULT 1,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    -- The SKU's last place in the feed: the stream's event id.
    ADD COLUMN change_seq bigint      NOT NULL DEFAULT 0;

CREATE TABLE stock_feed (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint  NOT NULL
);

-- The SKUs stocked before the feed existed, numbered in SKU order.
UPDATE stock SET change_seq = numbered.n
FROM (SELECT sku, row_number() OVER (ORDER BY sku) AS n FROM stock) AS numbered
WHERE stock.sku = numbered.sku;

INSERT INTO stock_feed (seq) SELECT coalesce(max(change_seq), 0) FROM stock;

-- Streams read the changes after their last id.
CREATE INDEX stock_by_change_seq ON stock (change_seq);
-- `reserved` is the sum of a SKU's reservations still held.
CREATE INDEX reservations_held_by_sku ON reservations (sku) WHERE status = 'reserved';

CREATE FUNCTION stock_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.available IS DISTINCT FROM OLD.available THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER stock_version BEFORE UPDATE OF available ON stock
    FOR EACH ROW EXECUTE FUNCTION stock_version();

-- At commit: number the SKU's last change in the feed and announce it.
CREATE FUNCTION stock_announce() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next bigint;
BEGIN
    -- A transaction changing a SKU several times (a batch of orders) queues this once per
    -- change: number only the last one, which the row still shows.
    IF NOT EXISTS (SELECT 1 FROM stock WHERE sku = NEW.sku AND version = NEW.version) THEN
        RETURN NULL;
    END IF;
    UPDATE stock_feed SET seq = seq + 1 RETURNING seq INTO next;
    -- Not an update of `available`: neither trigger fires again.
    UPDATE stock SET change_seq = next WHERE sku = NEW.sku;
    -- One empty payload per transaction (PostgreSQL folds identical ones): listeners read
    -- the table after what they have seen.
    PERFORM pg_notify('inventory_stock', '');
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER stock_announce_update AFTER UPDATE OF available ON stock
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.available IS DISTINCT FROM OLD.available)
    EXECUTE FUNCTION stock_announce();

CREATE CONSTRAINT TRIGGER stock_announce_insert AFTER INSERT ON stock
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION stock_announce();
