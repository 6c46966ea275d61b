//! The notify service: tells the customer once when an order reaches its final state (a row
//! in `notifications`, whose key makes a second one impossible, and a log line for the e-mail),
//! tells a user once of each high-severity risk alert (a row in `risk_notifications`, keyed
//! by the alert's id, and a log line), and tells operators once of each reconciliation mismatch
//! and of its resolution (`reconcile_notifications`, one row per order, event and outcome).
//! Alerts of lower severity are for operators (risk's page and stream): notify acks them
//! without a row. The tables are apart so that each keeps its own once-only key.

use contracts::event_type::{
    ORDER_CANCELLED, ORDER_CONFIRMED, ORDER_REJECTED, RECONCILE_MATCHED, RECONCILE_MISMATCH,
    RECONCILE_RESOLVED, RISK_ALERT,
};
use contracts::{OrderConcluded, Reconciliation, RiskAlert};
use msgkit::consume::{ConsumerConfig, Context, HandlerError, Routes};
use msgkit::service::{Service, ServiceError, ServiceSettings};

/// The service's name: its queue, its inbox consumer, its settings' prefix.
pub const NAME: &str = "notify";

/// The notify service, ready to run. It only inserts rows, so it handles 16 deliveries per
/// transaction unless `NOTIFY_CONSUMER_BATCH` (or `CONSUMER_BATCH`) says otherwise.
pub async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let migrations = sqlx::migrate!("./migrations");
    Service::start(settings, contracts::topology(), migrations)
        .await?
        .consume_with(ConsumerConfig::new(NAME, NAME).batch(16), routes())
}

/// The `notify` queue's routes: every final state of an order, risk's alerts, and
/// reconciliation's mismatches and resolutions.
pub fn routes() -> Routes {
    let routes = Routes::new().route(ORDER_CONFIRMED, notify);
    routes
        .route(ORDER_REJECTED, notify)
        .route(ORDER_CANCELLED, notify)
        .route(RISK_ALERT, notify_risk_alert)
        .route(RECONCILE_MATCHED, matched)
        .route(RECONCILE_MISMATCH, notify_mismatch)
        .route(RECONCILE_RESOLVED, notify_resolved)
}

/// The severity of the risk alerts a user is told about (risk's `Severity::High`).
pub const NOTIFIED_SEVERITY: &str = "high";

async fn notify(mut ctx: Context<'_>, order: OrderConcluded) -> Result<(), HandlerError> {
    let text = match order.reason.as_deref() {
        None => format!("Your order {} is {}.", order.order_id, order.status),
        Some(reason) => format!(
            "Your order {} was {}: {reason}.",
            order.order_id, order.status
        ),
    };
    let sent = sqlx::query(
        "INSERT INTO notifications (order_id, status, customer_id, message) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (order_id, status) DO NOTHING",
    )
    .bind(order.order_id)
    .bind(&order.status)
    .bind(&order.customer_id)
    .bind(&text)
    .execute(ctx.tx())
    .await?;
    tracing::info!(order_id = %order.order_id, status = %order.status, message = %text, first = sent.rows_affected() == 1, "customer notified");
    Ok(())
}

/// A high-severity alert: one row per alert id (a redelivery or a replay finds it there) and
/// a log line for the message. Any other severity is acked without a row.
async fn notify_risk_alert(mut ctx: Context<'_>, alert: RiskAlert) -> Result<(), HandlerError> {
    if alert.severity != NOTIFIED_SEVERITY {
        tracing::debug!(alert_id = %alert.alert_id, severity = %alert.severity, "risk alert below the notified severity");
        return Ok(());
    }
    let text = format!(
        "Unusual activity on your account: transactions {} matched risk rule {}. \
         If this was not you, contact us.",
        alert.transaction_ids.join(", "),
        alert.rule_id
    );
    let sent = sqlx::query(
        "INSERT INTO risk_notifications (alert_id, user_id, rule_id, rule_version, transaction_ids, message) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (alert_id) DO NOTHING",
    )
    .bind(alert.alert_id)
    .bind(&alert.user_id)
    .bind(alert.rule_id)
    .bind(alert.rule_version)
    .bind(&alert.transaction_ids)
    .bind(&text)
    .execute(ctx.tx())
    .await?;
    tracing::info!(alert_id = %alert.alert_id, user_id = %alert.user_id, rule_id = alert.rule_id, message = %text, first = sent.rows_affected() == 1, "user told of a risk alert");
    Ok(())
}

/// A payment that reconciles needs no one's attention: acked without a row. (Bound here so
/// that reconcile can publish it at all: its relay refuses an event that no queue takes.)
async fn matched(_ctx: Context<'_>, result: Reconciliation) -> Result<(), HandlerError> {
    tracing::debug!(order_id = %result.order_id, "payment reconciled; nobody to tell");
    Ok(())
}

async fn notify_mismatch(ctx: Context<'_>, result: Reconciliation) -> Result<(), HandlerError> {
    let text = format!(
        "Payment of order {} does not reconcile: {} (ours: {}, the gateway's: {}).",
        result.order_id,
        result.outcome,
        cents(result.app_amount_cents),
        cents(result.gateway_amount_cents)
    );
    tell_operators(ctx, "mismatch", &result, text).await
}

async fn notify_resolved(ctx: Context<'_>, result: Reconciliation) -> Result<(), HandlerError> {
    let text = format!(
        "Payment of order {} reconciles after all: {}.",
        result.order_id, result.outcome
    );
    tell_operators(ctx, "resolved", &result, text).await
}

fn cents(amount: Option<i64>) -> String {
    amount.map_or_else(
        || "none".to_owned(),
        |cents| format!("{}.{:02}", cents / 100, (cents % 100).abs()),
    )
}

/// One row per order, event and outcome (a redelivery or a replay finds it there) and a log
/// line standing in for the operators' channel.
async fn tell_operators(
    mut ctx: Context<'_>,
    event: &str,
    result: &Reconciliation,
    text: String,
) -> Result<(), HandlerError> {
    let sent = sqlx::query(
        "INSERT INTO reconcile_notifications (order_id, event, outcome, message) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(result.order_id)
    .bind(event)
    .bind(&result.outcome)
    .bind(&text)
    .execute(ctx.tx())
    .await?;
    tracing::info!(order_id = %result.order_id, event, outcome = %result.outcome, message = %text, first = sent.rows_affected() == 1, "operators told of a reconciliation");
    Ok(())
}
