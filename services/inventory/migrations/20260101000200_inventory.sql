CREATE TABLE stock (
    sku         text PRIMARY KEY,
    available   integer NOT NULL CHECK (available >= 0),
    price_cents bigint  NOT NULL CHECK (price_cents > 0)
);

-- One row per order line reserved; released when the payment fails.
CREATE TABLE reservations (
    order_id    uuid        NOT NULL,
    sku         text        NOT NULL REFERENCES stock (sku),
    quantity    integer     NOT NULL CHECK (quantity > 0),
    status      text        NOT NULL CHECK (status IN ('reserved', 'released')),
    reserved_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    PRIMARY KEY (order_id, sku)
);

-- The demo catalogue (README "Try it"). A payment above 1,000.00 is declined by the gateway
-- simulator, so any SKU-LUX order is cancelled; SKU-GONE is always out of stock.
INSERT INTO stock (sku, available, price_cents) VALUES
    ('SKU-1',       100000,   1000),
    ('SKU-2',        50000,   2500),
    ('SKU-3',        10000,    499),
    ('SKU-LIMITED',      3,   9900),
    ('SKU-GONE',         0,   1500),
    ('SKU-LUX',       1000, 250000)
ON CONFLICT (sku) DO NOTHING;
