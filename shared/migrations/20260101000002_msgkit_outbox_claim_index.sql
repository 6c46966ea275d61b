-- The relay's claim walks unpublished rows in `seq` order and, for each, looks up the head of
-- its aggregate. With statistics taken while the outbox was empty (its normal state), the
-- planner estimated one unpublished row and answered that lookup by scanning every pending
-- row through `msgkit_outbox_pending`: a claim of 500 from a 20,000-row backlog took 2 s
-- instead of 2 ms, so a backlog after a broker outage drained quadratically.
--
-- This index replaces it for the walk only. Its extra predicate is implied by the claim's
-- `next_attempt_at <= now()` (a strict comparison), not by the head lookup, so the lookup can
-- only use `msgkit_outbox_pending_by_aggregate`, whatever the statistics say.
CREATE INDEX IF NOT EXISTS msgkit_outbox_due
    ON msgkit_outbox (seq) WHERE published_at IS NULL AND next_attempt_at IS NOT NULL;
DROP INDEX IF EXISTS msgkit_outbox_pending;
