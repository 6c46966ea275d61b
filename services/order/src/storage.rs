//! The order tables: writing a new order, reading one back with its history.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{CancelRefusal, NewOrder, OrderStatus};

/// An order as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    /// The order id.
    pub order_id: Uuid,
    /// Who ordered.
    pub customer_id: String,
    /// Where it was placed, if the client said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Current state.
    pub status: String,
    /// What was ordered.
    pub items: Vec<ItemView>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
    /// When the customer asked to cancel it, if they did (it stays `confirmed` until the
    /// refund, then becomes `cancelled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Every state it went through, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// One order line.
#[derive(Debug, Clone, Serialize)]
pub struct ItemView {
    /// SKU.
    pub sku: String,
    /// Quantity.
    pub quantity: i32,
}

/// One step of an order's history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// The state entered.
    pub status: String,
    /// The event that caused it (`order.placed`, `payment.succeeded`, ...).
    pub event: String,
    /// Why, when the event says (e.g. out of stock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Insert a pending order, its lines and its first history entry.
pub async fn insert_order(
    conn: &mut PgConnection,
    order_id: Uuid,
    order: &NewOrder,
    event: &str,
    message_id: Uuid,
) -> Result<DateTime<Utc>, sqlx::Error> {
    let lines: Vec<i32> = (1..).take(order.lines.len()).collect();
    let skus: Vec<&str> = order.lines.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i32> = order
        .lines
        .iter()
        .map(|l| i32::try_from(l.quantity.get()).unwrap_or(i32::MAX))
        .collect();
    // One statement, one round trip. The foreign keys of lines and history are checked at
    // the end of the statement, when the order row exists.
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "WITH placed AS ( \
             INSERT INTO orders (id, customer_id, status, location) VALUES ($1, $2, $3, $9) \
             RETURNING created_at), \
         lines AS ( \
             INSERT INTO order_items (order_id, line, sku, quantity) \
             SELECT $1, * FROM UNNEST($4::int[], $5::text[], $6::int[])), \
         history AS ( \
             INSERT INTO order_history (order_id, status, event, message_id) VALUES ($1, $3, $7, $8)) \
         SELECT created_at FROM placed",
    )
    .bind(order_id)
    .bind(order.customer_id.as_str())
    .bind(OrderStatus::Pending.as_str())
    .bind(lines)
    .bind(skus)
    .bind(quantities)
    .bind(event)
    .bind(message_id)
    .bind(order.location.as_ref().map(|location| location.as_str()))
    .fetch_one(&mut *conn)
    .await?;
    Ok(created_at)
}

/// The order with its lines and history, if it exists.
pub async fn load_order(pool: &PgPool, order_id: Uuid) -> Result<Option<OrderView>, sqlx::Error> {
    let Some(order) = sqlx::query(
        "SELECT customer_id, location, status, created_at, updated_at, cancel_requested_at \
         FROM orders WHERE id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let items =
        sqlx::query("SELECT sku, quantity FROM order_items WHERE order_id = $1 ORDER BY line")
            .bind(order_id)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| {
                Ok(ItemView {
                    sku: row.try_get("sku")?,
                    quantity: row.try_get("quantity")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let history = sqlx::query(
        "SELECT status, event, reason, at FROM order_history WHERE order_id = $1 ORDER BY id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| {
        Ok(HistoryEntry {
            status: row.try_get("status")?,
            event: row.try_get("event")?,
            reason: row.try_get("reason")?,
            at: row.try_get("at")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(OrderView {
        order_id,
        customer_id: order.try_get("customer_id")?,
        location: order.try_get("location")?,
        status: order.try_get("status")?,
        items,
        created_at: order.try_get("created_at")?,
        updated_at: order.try_get("updated_at")?,
        cancel_requested_at: order.try_get("cancel_requested_at")?,
        history,
    }))
}

/// What became of a request to cancel an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelAttempt {
    /// This request is the one: the order records it (the caller adds the history entry and
    /// the event in the same transaction).
    Recorded {
        /// Whose order.
        customer_id: String,
    },
    /// The order cannot be cancelled now.
    Refused(CancelRefusal),
    /// No such order.
    NotFound,
}

/// Record a customer's request to cancel a confirmed order at `requested_at`, if nothing
/// forbids it. The order's row is locked first, so of concurrent requests exactly one wins:
/// the others wait for its lock and then read the committed row, with the request made.
pub async fn request_cancellation(
    conn: &mut PgConnection,
    order_id: Uuid,
    reason: Option<&str>,
    requested_at: DateTime<Utc>,
) -> Result<CancelAttempt, sqlx::Error> {
    let current: Option<(String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT status, customer_id, cancel_requested_at FROM orders WHERE id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, customer_id, already_requested)) = current else {
        return Ok(CancelAttempt::NotFound);
    };
    if let Some(refusal) = CancelRefusal::of(&status, already_requested) {
        return Ok(CancelAttempt::Refused(refusal));
    }
    sqlx::query(
        "UPDATE orders SET cancel_requested_at = $2, cancel_reason = $3, updated_at = now() \
         WHERE id = $1",
    )
    .bind(order_id)
    .bind(requested_at)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(CancelAttempt::Recorded { customer_id })
}

/// The cancellation request recorded on the order: its time and reason, if any.
pub async fn cancellation_request(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<(DateTime<Utc>, Option<String>)>, sqlx::Error> {
    let row: Option<(Option<DateTime<Utc>>, Option<String>)> =
        sqlx::query_as("SELECT cancel_requested_at, cancel_reason FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.and_then(|(at, reason)| at.map(|at| (at, reason))))
}

/// The order's status and customer, locked for the rest of the transaction.
pub async fn lock_order(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT status, customer_id FROM orders WHERE id = $1 FOR UPDATE")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| Ok((row.try_get("status")?, row.try_get("customer_id")?)))
        .transpose()
}

/// Move the order to `status` and add the history entry saying why, in one round trip.
pub async fn move_to(
    conn: &mut PgConnection,
    order_id: Uuid,
    status: OrderStatus,
    event: &str,
    reason: Option<&str>,
    message_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH moved AS (UPDATE orders SET status = $2, updated_at = now() WHERE id = $1) \
         INSERT INTO order_history (order_id, status, event, reason, message_id) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(order_id)
    .bind(status.as_str())
    .bind(event)
    .bind(reason)
    .bind(message_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Add a history entry.
pub async fn record_history(
    conn: &mut PgConnection,
    order_id: Uuid,
    status: &str,
    event: &str,
    reason: Option<&str>,
    message_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO order_history (order_id, status, event, reason, message_id) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(order_id)
    .bind(status)
    .bind(event)
    .bind(reason)
    .bind(message_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The admission probe of `POST /orders`: the orders not yet final and the age of the oldest
/// (served by the partial index `orders_pending_by_created`). The age is measured by the
/// database's clock, the same one that stamped `created_at`.
pub async fn pending_backlog(pool: PgPool) -> Result<msgkit::admission::Backlog, sqlx::Error> {
    let (pending, oldest_age): (i64, f64) = sqlx::query_as(
        "SELECT count(*), \
                COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)), 0)::float8 \
         FROM orders WHERE status = 'pending'",
    )
    .fetch_one(&pool)
    .await?;
    Ok(msgkit::admission::Backlog::new(
        u64::try_from(pending).unwrap_or_default(),
        std::time::Duration::from_secs_f64(oldest_age.max(0.0)),
    ))
}
