-- The admission probe of POST /orders reads `count(*), min(created_at) ... WHERE status =
-- 'pending'` every 250 ms. Without this index that is a scan of every order ever placed;
-- with it, of the pending ones only, which the admission limit itself keeps bounded.
CREATE INDEX orders_pending_by_created ON orders (created_at) WHERE status = 'pending';
