-- Each key's watermark for a consumer: the largest event time seen for the key by routes that
-- judge lateness. Kept in the handler's transaction.
CREATE TABLE IF NOT EXISTS msgkit_watermarks (
    consumer  text        NOT NULL,
    key       text        NOT NULL,
    watermark timestamptz NOT NULL,
    PRIMARY KEY (consumer, key)
);
