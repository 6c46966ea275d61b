//! The stock and reservation tables.

use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// One SKU's stock, locked for the transaction.
#[derive(Debug, Clone)]
pub struct StockLevel {
    /// SKU.
    pub sku: String,
    /// Units available.
    pub available: i32,
    /// Unit price in cents.
    pub price_cents: i64,
}

/// Lock the stock rows of `skus`, in SKU order so that concurrent orders never deadlock.
pub async fn lock(
    conn: &mut PgConnection,
    skus: &[String],
) -> Result<Vec<StockLevel>, sqlx::Error> {
    sqlx::query(
        "SELECT sku, available, price_cents FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
    )
    .bind(skus)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| {
        Ok(StockLevel {
            sku: row.try_get("sku")?,
            available: row.try_get("available")?,
            price_cents: row.try_get("price_cents")?,
        })
    })
    .collect()
}

/// Lock, in SKU order, the stock of `skus` and of whatever the orders in `releasing` have
/// reserved: every stock lock a batch will need, taken before its first message.
pub async fn lock_for_batch(
    conn: &mut PgConnection,
    skus: &[String],
    releasing: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT sku FROM stock \
         WHERE sku = ANY($1) \
            OR sku IN (SELECT sku FROM reservations WHERE order_id = ANY($2) AND status = 'reserved') \
         ORDER BY sku FOR UPDATE",
    )
    .bind(skus)
    .bind(releasing)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Take `quantities` out of stock and record them as the order's reservation.
pub async fn reserve(
    conn: &mut PgConnection,
    order_id: Uuid,
    skus: &[String],
    quantities: &[i32],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE stock s SET available = s.available - r.quantity \
         FROM UNNEST($1::text[], $2::int[]) AS r(sku, quantity) WHERE s.sku = r.sku",
    )
    .bind(skus)
    .bind(quantities)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO reservations (order_id, sku, quantity, status) \
         SELECT $1, sku, quantity, 'reserved' FROM UNNEST($2::text[], $3::int[]) AS r(sku, quantity)",
    )
    .bind(order_id)
    .bind(skus)
    .bind(quantities)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether the order already has a reservation (reserved or released).
pub async fn has_reservation(conn: &mut PgConnection, order_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)")
        .bind(order_id)
        .fetch_one(&mut *conn)
        .await
}

/// Put the order's reserved units back in stock; returns how many lines were released (0 when
/// there was nothing reserved, e.g. already released).
pub async fn release(conn: &mut PgConnection, order_id: Uuid) -> Result<u64, sqlx::Error> {
    // Lock the stock rows in SKU order first, as `lock` does for a reservation: the update
    // below would take them in the order of the reservation's lines, and a release and a
    // reservation of the same SKUs in opposite orders would deadlock.
    sqlx::query(
        "SELECT sku FROM stock \
         WHERE sku IN (SELECT sku FROM reservations WHERE order_id = $1 AND status = 'reserved') \
         ORDER BY sku FOR UPDATE",
    )
    .bind(order_id)
    .execute(&mut *conn)
    .await?;
    let released = sqlx::query(
        "WITH released AS ( \
             UPDATE reservations SET status = 'released', released_at = now() \
             WHERE order_id = $1 AND status = 'reserved' \
             RETURNING sku, quantity) \
         UPDATE stock s SET available = s.available + r.quantity \
         FROM released r WHERE s.sku = r.sku",
    )
    .bind(order_id)
    .execute(&mut *conn)
    .await?;
    Ok(released.rows_affected())
}
