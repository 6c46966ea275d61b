-- Rebate rates by monthly spend, versioned: a version is every row sharing one
-- `effective_from`, in force from then until the next version starts. A payment gets the rate
-- of the version in force at the payment's time, at the highest threshold its customer's
-- spend that calendar month (UTC), before this payment, has reached. Rates are read by the
-- projection, not rebuilt with it: a rebuild replays every payment against the version that
-- was in force at its time, so it gives the same rebates as the live run did.
CREATE TABLE rebate_tiers (
    effective_from          timestamptz NOT NULL,
    -- The customer's spend this month, before the payment, from which this rate applies.
    min_monthly_spend_cents bigint      NOT NULL CHECK (min_monthly_spend_cents >= 0),
    -- Basis points: 100 bp = 1 %.
    rate_bp                 integer     NOT NULL CHECK (rate_bp BETWEEN 0 AND 10000),
    PRIMARY KEY (effective_from, min_monthly_spend_cents)
);

-- The first version, in force since always: 1 % by default, 1.5 % once the month's spend has
-- reached 1,000.00, 2 % from 5,000.00.
INSERT INTO rebate_tiers (effective_from, min_monthly_spend_cents, rate_bp) VALUES
    ('1970-01-01T00:00:00Z', 0, 100),
    ('1970-01-01T00:00:00Z', 100000, 150),
    ('1970-01-01T00:00:00Z', 500000, 200);

-- The past is fixed: a version already in force (or one made to start in the past) would
-- change what a rebuild computes for payments the live projection has already credited. A
-- new version is added with an `effective_from` in the future; nothing in force is edited.
CREATE FUNCTION rebate_tiers_keep_the_past() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.effective_from <= now() THEN
        RAISE EXCEPTION 'rebate tier version % is already in force: add a new version instead', OLD.effective_from;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.effective_from <= now() THEN
        RAISE EXCEPTION 'a rebate tier version must start in the future (got %)', NEW.effective_from;
    END IF;
    RETURN COALESCE(NEW, OLD);
END $$;

CREATE TRIGGER rebate_tiers_keep_the_past
    BEFORE INSERT OR UPDATE OR DELETE ON rebate_tiers
    FOR EACH ROW EXECUTE FUNCTION rebate_tiers_keep_the_past();

-- Announces each change of a balance (`LISTEN rebate_balances`) at commit, with the row, to
-- every replica's streams. The trigger itself is created with the projection's tables (in
-- projection_migrations), so that a rebuild's tables get it too and carry it into place when
-- they are switched in; this function stays here, in the service's schema, because the
-- rebuild's schema (and any function created there) is dropped after the switch. The schema
-- of the table is in the payload: a rebuild's tables announce too, and listeners pass those
-- over. Customer ids are at most 64 characters (order's rule), far below the 8000-byte limit
-- of a notification; a longer one is not announced rather than failing the projection.
CREATE FUNCTION rebate_balance_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_object(
        'schema', TG_TABLE_SCHEMA,
        'customer', NEW.customer_id,
        'balance_cents', NEW.balance_cents,
        'version', NEW.version,
        'updated_at', NEW.updated_at)::text;
BEGIN
    IF octet_length(payload) < 7900 THEN
        PERFORM pg_notify('rebate_balances', payload);
    END IF;
    RETURN NULL;
END $$;
