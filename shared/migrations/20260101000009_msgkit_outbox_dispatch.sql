-- Rows a service publishes itself right after their transaction commits ("direct dispatch",
-- see the relay's `direct` module) are written with `next_attempt_at` a lease ahead of their
-- creation: the relay leaves them alone unless their process dies before publishing them. They
-- must not wake the relays either (each wake-up is a claim that would find nothing due), so
-- the notification moves from once per statement to the rows due at once; PostgreSQL still
-- folds a transaction's identical notifications into one.
DROP TRIGGER IF EXISTS msgkit_outbox_notify ON msgkit_outbox;
CREATE TRIGGER msgkit_outbox_notify
    AFTER INSERT ON msgkit_outbox
    FOR EACH ROW WHEN (NEW.next_attempt_at <= NEW.created_at)
    EXECUTE FUNCTION msgkit_outbox_notify();
