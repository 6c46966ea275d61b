-- The bench projection's table: a sum per key, one upsert per event (the shape of a balance).
CREATE TABLE totals (
    key    text   PRIMARY KEY,
    sum    bigint NOT NULL,
    events bigint NOT NULL
);
