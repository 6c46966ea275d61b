//! The rebate projection: how `payment.succeeded` and `payment.refunded` from the event archive
//! change the rebate tables (see `projection_migrations/` and the crate docs for the rules).
//!
//! Apply functions write through [`Context::tx`], the transaction that also stores the
//! archive offset, with unqualified table names: during a rebuild the search path starts with
//! the rebuild's schema (its own `rebate_lines`, ...) and then the service's (where
//! `rebate_tiers` is read from).

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, NaiveDate, Utc};
use contracts::event_type::{PAYMENT_REFUNDED, PAYMENT_SUCCEEDED};
use contracts::{PaymentRefunded, PaymentSucceeded};
use msgkit::projection::{Context, Projection, ProjectionError};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::metrics::RebateMetrics;
use crate::rates::{self, Tier};

/// The projection's name: its checkpoint, its rebuild (`msgkit projection rebuild rebate`).
pub const NAME: &str = "rebate";

/// A line's kind: a payment's credit.
pub const PAYMENT: &str = "payment";
/// A line's kind: a refund's reversal of its payment's credit.
pub const REFUND: &str = "refund";

type ApplyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ProjectionError>> + Send + 'a>>;

/// Gives a closure the higher-ranked signature the kit expects of an apply function, so that
/// it can carry the metrics along.
fn apply_fn<P, F>(apply: F) -> F
where
    F: for<'a> Fn(Context<'a>, P) -> ApplyFuture<'a> + Send + Sync + 'static,
{
    apply
}

/// The rebate projection, counting the lines it writes into `metrics`.
pub fn projection(metrics: RebateMetrics) -> Projection {
    let on_refund = metrics.clone();
    Projection::new(NAME, sqlx::migrate!("./projection_migrations"))
        .apply(
            PAYMENT_SUCCEEDED,
            apply_fn(move |ctx, paid: PaymentSucceeded| {
                Box::pin(on_paid(ctx, paid, metrics.clone()))
            }),
        )
        .apply(
            PAYMENT_REFUNDED,
            apply_fn(move |ctx, refunded: PaymentRefunded| {
                Box::pin(on_refunded(ctx, refunded, on_refund.clone()))
            }),
        )
}

/// A line about to be written.
struct Line<'a> {
    order_id: Uuid,
    kind: &'static str,
    customer_id: &'a str,
    amount_cents: i64,
    rebate_cents: i64,
    rate_bp: i32,
    at: DateTime<Utc>,
    month: NaiveDate,
    message_id: &'a str,
    archive_offset: i64,
}

/// A payment credits its rebate at the rate in force at its time for the customer's spend
/// that month before it, and adds to that spend.
async fn on_paid(
    mut ctx: Context<'_>,
    paid: PaymentSucceeded,
    metrics: RebateMetrics,
) -> Result<(), ProjectionError> {
    if paid.customer_id.is_empty() {
        // A message from before payments named their customer: nobody to credit.
        tracing::debug!(order_id = %paid.order_id, "payment without a customer: no rebate");
        return Ok(());
    }
    let at = paid.occurred_at.unwrap_or_else(|| ctx.created_at());
    let month = rates::month_of(at);
    let message_id = ctx.message_id().to_owned();
    let archive_offset = i64::try_from(ctx.offset()).unwrap_or(i64::MAX);
    let tx = ctx.tx();
    // An order whose refund came first (it cannot, since the archive holds a payment before
    // anything that reacts to it, but the rule must be deterministic anyway) earns nothing
    // and adds no spend: its refund line already stands, with nothing to reverse.
    let refunded_first = line_exists(tx, paid.order_id, REFUND).await?;
    let (rate_bp, counts) = if refunded_first {
        (0, false)
    } else {
        let spend_before = monthly_spend(tx, &paid.customer_id, month).await?;
        let tiers = tiers_in_force(tx, at).await?;
        (rates::rate_for(&tiers, spend_before), true)
    };
    let line = Line {
        order_id: paid.order_id,
        kind: PAYMENT,
        customer_id: &paid.customer_id,
        amount_cents: paid.amount_cents,
        rebate_cents: if counts {
            rates::rebate_cents(paid.amount_cents, rate_bp)
        } else {
            0
        },
        rate_bp,
        at,
        month,
        message_id: &message_id,
        archive_offset,
    };
    if !insert_line(tx, &line).await? {
        // A duplicate of this event, or another payment of the same order: already counted.
        return Ok(());
    }
    if counts {
        add_spend(tx, line.customer_id, month, line.amount_cents).await?;
    }
    credit(tx, line.customer_id, line.rebate_cents, at).await?;
    metrics.line(PAYMENT);
    Ok(())
}

/// A refund reverses its order's payment line exactly (the same cents and rate, negated) and
/// takes the payment back out of the spend of the payment's month.
async fn on_refunded(
    mut ctx: Context<'_>,
    refunded: PaymentRefunded,
    metrics: RebateMetrics,
) -> Result<(), ProjectionError> {
    let message_id = ctx.message_id().to_owned();
    let archive_offset = i64::try_from(ctx.offset()).unwrap_or(i64::MAX);
    let tx = ctx.tx();
    let payment: Option<(String, i64, i64, i32, NaiveDate)> = sqlx::query_as(
        "SELECT customer_id, amount_cents, rebate_cents, rate_bp, month FROM rebate_lines
          WHERE order_id = $1 AND kind = 'payment'",
    )
    .bind(refunded.order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let line = match &payment {
        Some((customer_id, amount_cents, rebate_cents, rate_bp, month)) => {
            if *amount_cents != refunded.amount_cents {
                tracing::warn!(
                    order_id = %refunded.order_id,
                    paid = amount_cents,
                    refunded = refunded.amount_cents,
                    "a refund of another amount than the payment: the payment's rebate is reversed in full"
                );
            }
            Line {
                order_id: refunded.order_id,
                kind: REFUND,
                customer_id,
                amount_cents: -amount_cents,
                rebate_cents: -rebate_cents,
                rate_bp: *rate_bp,
                at: refunded.occurred_at,
                month: *month,
                message_id: &message_id,
                archive_offset,
            }
        }
        None if refunded.customer_id.is_empty() => return Ok(()),
        // No payment line (yet): nothing to reverse. The line records the refund, and the
        // payment, if it comes, earns nothing (see `on_paid`).
        None => Line {
            order_id: refunded.order_id,
            kind: REFUND,
            customer_id: &refunded.customer_id,
            amount_cents: -refunded.amount_cents,
            rebate_cents: 0,
            rate_bp: 0,
            at: refunded.occurred_at,
            month: rates::month_of(refunded.occurred_at),
            message_id: &message_id,
            archive_offset,
        },
    };
    if !insert_line(tx, &line).await? {
        return Ok(());
    }
    if payment.is_some() {
        add_spend(tx, line.customer_id, line.month, line.amount_cents).await?;
    }
    credit(tx, line.customer_id, line.rebate_cents, line.at).await?;
    metrics.line(REFUND);
    Ok(())
}

async fn line_exists(
    tx: &mut PgConnection,
    order_id: Uuid,
    kind: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM rebate_lines WHERE order_id = $1 AND kind = $2)",
    )
    .bind(order_id)
    .bind(kind)
    .fetch_one(tx)
    .await
}

/// Whether the line was inserted (`false`: its order already has a line of its kind).
async fn insert_line(tx: &mut PgConnection, line: &Line<'_>) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO rebate_lines (order_id, kind, customer_id, amount_cents, rebate_cents,
                                   rate_bp, at, month, message_id, archive_offset)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (order_id, kind) DO NOTHING",
    )
    .bind(line.order_id)
    .bind(line.kind)
    .bind(line.customer_id)
    .bind(line.amount_cents)
    .bind(line.rebate_cents)
    .bind(line.rate_bp)
    .bind(line.at)
    .bind(line.month)
    .bind(line.message_id)
    .bind(line.archive_offset)
    .execute(tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

async fn monthly_spend(
    tx: &mut PgConnection,
    customer_id: &str,
    month: NaiveDate,
) -> Result<i64, sqlx::Error> {
    let spend: Option<i64> = sqlx::query_scalar(
        "SELECT spend_cents FROM rebate_monthly_spend WHERE customer_id = $1 AND month = $2",
    )
    .bind(customer_id)
    .bind(month)
    .fetch_optional(tx)
    .await?;
    Ok(spend.unwrap_or(0))
}

async fn add_spend(
    tx: &mut PgConnection,
    customer_id: &str,
    month: NaiveDate,
    cents: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rebate_monthly_spend (customer_id, month, spend_cents) VALUES ($1, $2, $3)
         ON CONFLICT (customer_id, month)
         DO UPDATE SET spend_cents = rebate_monthly_spend.spend_cents + EXCLUDED.spend_cents",
    )
    .bind(customer_id)
    .bind(month)
    .bind(cents)
    .execute(tx)
    .await?;
    Ok(())
}

/// The tiers of the version in force at `at` (the latest one that started at or before it).
async fn tiers_in_force(
    tx: &mut PgConnection,
    at: DateTime<Utc>,
) -> Result<Vec<Tier>, sqlx::Error> {
    let rows: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT min_monthly_spend_cents, rate_bp FROM rebate_tiers
          WHERE effective_from = (SELECT max(effective_from) FROM rebate_tiers
                                   WHERE effective_from <= $1)",
    )
    .bind(at)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(min_monthly_spend_cents, rate_bp)| Tier {
            min_monthly_spend_cents,
            rate_bp,
        })
        .collect())
}

/// Add `cents` to the customer's balance (a new line: the version moves on even for 0).
async fn credit(
    tx: &mut PgConnection,
    customer_id: &str,
    cents: i64,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rebate_balances (customer_id, balance_cents, version, updated_at)
         VALUES ($1, $2, 1, $3)
         ON CONFLICT (customer_id) DO UPDATE
            SET balance_cents = rebate_balances.balance_cents + EXCLUDED.balance_cents,
                version = rebate_balances.version + 1,
                updated_at = EXCLUDED.updated_at",
    )
    .bind(customer_id)
    .bind(cents)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}
