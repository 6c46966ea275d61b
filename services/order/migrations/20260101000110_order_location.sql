-- Where an order was placed (POST /orders `location`), for the risk rules. Nullable: the
-- field is optional, and orders from before it have none.
ALTER TABLE orders ADD COLUMN location text;
