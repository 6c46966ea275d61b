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
    /// Whether the line's amount changes its month's spend.
    counts_as_spend: bool,
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
    let before = before_payment(tx, paid.order_id, &paid.customer_id, month, at).await?;
    // An order whose refund came first (it cannot, since the archive holds a payment before
    // anything that reacts to it, but the rule must be deterministic anyway) earns nothing
    // and adds no spend: its refund line already stands, with nothing to reverse.
    let counts = !before.refunded;
    let rate_bp = if counts {
        rates::rate_for(&before.tiers, before.spend_cents)
    } else {
        0
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
        counts_as_spend: counts,
    };
    // `false`: a duplicate of this event, or another payment of the same order, already
    // counted.
    if write_line(tx, &line).await? {
        metrics.line(PAYMENT);
    }
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
                counts_as_spend: true,
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
            counts_as_spend: false,
        },
    };
    if write_line(tx, &line).await? {
        metrics.line(REFUND);
    }
    Ok(())
}

/// What a payment's rate depends on, read in one round trip.
struct BeforePayment {
    /// The order already has a refund line.
    refunded: bool,
    /// The customer's spend in the payment's month so far.
    spend_cents: i64,
    /// The tiers in force at the payment's time (the latest version started at or before it).
    tiers: Vec<Tier>,
}

async fn before_payment(
    tx: &mut PgConnection,
    order_id: Uuid,
    customer_id: &str,
    month: NaiveDate,
    at: DateTime<Utc>,
) -> Result<BeforePayment, sqlx::Error> {
    let (refunded, spend_cents, mins, rates): (bool, i64, Vec<i64>, Vec<i32>) = sqlx::query_as(
        "WITH version AS (SELECT max(effective_from) AS starts FROM rebate_tiers
                           WHERE effective_from <= $4),
              tiers AS (SELECT min_monthly_spend_cents, rate_bp FROM rebate_tiers, version
                         WHERE effective_from = version.starts)
         SELECT EXISTS (SELECT 1 FROM rebate_lines WHERE order_id = $1 AND kind = 'refund'),
                COALESCE((SELECT spend_cents FROM rebate_monthly_spend
                           WHERE customer_id = $2 AND month = $3), 0),
                ARRAY(SELECT min_monthly_spend_cents FROM tiers ORDER BY 1),
                ARRAY(SELECT rate_bp FROM tiers ORDER BY min_monthly_spend_cents)",
    )
    .bind(order_id)
    .bind(customer_id)
    .bind(month)
    .bind(at)
    .fetch_one(tx)
    .await?;
    let tiers = mins
        .into_iter()
        .zip(rates)
        .map(|(min_monthly_spend_cents, rate_bp)| Tier {
            min_monthly_spend_cents,
            rate_bp,
        })
        .collect();
    Ok(BeforePayment {
        refunded,
        spend_cents,
        tiers,
    })
}

/// Insert `line` and, only if it was inserted (its order had no line of its kind), add it to
/// the month's spend (when it counts) and to the balance, whose version moves on even for 0
/// cents. One statement: whether the line went in decides the rest within it.
async fn write_line(tx: &mut PgConnection, line: &Line<'_>) -> Result<bool, sqlx::Error> {
    let inserted: i64 = sqlx::query_scalar(
        "WITH line AS (
             INSERT INTO rebate_lines (order_id, kind, customer_id, amount_cents, rebate_cents,
                                       rate_bp, at, month, message_id, archive_offset)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (order_id, kind) DO NOTHING
             RETURNING customer_id, month, amount_cents, rebate_cents, at),
         spend AS (
             INSERT INTO rebate_monthly_spend (customer_id, month, spend_cents)
             SELECT customer_id, month, amount_cents FROM line WHERE $11
             ON CONFLICT (customer_id, month)
             DO UPDATE SET spend_cents = rebate_monthly_spend.spend_cents + EXCLUDED.spend_cents),
         balance AS (
             INSERT INTO rebate_balances (customer_id, balance_cents, version, updated_at)
             SELECT customer_id, rebate_cents, 1, at FROM line
             ON CONFLICT (customer_id) DO UPDATE
                SET balance_cents = rebate_balances.balance_cents + EXCLUDED.balance_cents,
                    version = rebate_balances.version + 1,
                    updated_at = EXCLUDED.updated_at)
         SELECT count(*) FROM line",
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
    .bind(line.counts_as_spend)
    .fetch_one(tx)
    .await?;
    Ok(inserted == 1)
}
