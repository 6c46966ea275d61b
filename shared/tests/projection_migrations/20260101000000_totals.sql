-- The test projection: a sum per key. Deliberately not idempotent (no natural key), so that an
-- event applied twice shows.
CREATE TABLE totals (
    key    text   PRIMARY KEY,
    sum    bigint NOT NULL,
    events bigint NOT NULL
);
