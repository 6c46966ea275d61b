//! The consumer of the `risk` queue: every recorded transaction and every saga payment through
//! every enabled rule, with the user's state from the kit's keyed state; fired absence timers
//! likewise.

use chrono::{DateTime, TimeDelta, Utc};
use contracts::event_type::{PAYMENT_SUCCEEDED, RISK_ALERT, TRANSACTION_RECORDED};
use contracts::{PaymentSucceeded, RiskAlert, TransactionRecorded};
use msgkit::TimerType;
use msgkit::consume::{Batch, Context, HandlerError, Routes};
use msgkit::timer::Fired;
use uuid::Uuid;

use crate::metrics::RiskMetrics;
use crate::rule_store::{self, CompiledRules};
use crate::{
    ActiveRule, Alert, Decisions, Engine, Event, KeyState, MAX_WINDOW, Outcome, TimerRequest,
};

/// The absence rules' timers: keyed by the engine's timer id, so each wait has its own.
pub const ABSENCE_TIMER: TimerType<TimerRequest> = TimerType::new("risk.absence");

/// What the handlers share: the engine, the compiled rules, the service's metrics.
#[derive(Debug)]
pub struct RiskState {
    engine: Engine,
    rules: CompiledRules,
    metrics: RiskMetrics,
    /// This service instance, stored with each alert it decides (see [`crate::feed`]).
    replica: Uuid,
}

/// The currency of the order saga's payments: neither the orders nor the gateway name one, so
/// the saga's amounts are taken to be euros.
pub const SAGA_CURRENCY: &str = "EUR";

/// The `risk` queue's routes: recorded transactions, the saga's payments, fired absence timers.
///
/// For a transaction the kit judges lateness first, with the engine's allowed lateness and the
/// same key (its correlation id is the user id): a late transaction goes to
/// [`on_late_transaction`] and is counted in `msgkit_late_events_total`, never dead-lettered.
/// A payment's correlation id is its order and its kit event time the outbox row's creation,
/// so the kit's check would judge neither the right key nor the right time: the engine's own
/// check (per user, on `occurred_at`) is the one that applies, and logs a late payment.
///
/// `replica` identifies this service instance: each alert it stores names it, so that only
/// this instance's feed listener records the alert's decision latency.
pub fn routes(metrics: RiskMetrics, replica: Uuid) -> Routes<RiskState> {
    let state = RiskState {
        engine: Engine::default(),
        rules: CompiledRules::default(),
        metrics,
        replica,
    };
    let lateness = state.engine.config().allowed_lateness;
    Routes::with_state(state)
        .route_with_lateness(
            TRANSACTION_RECORDED,
            lateness,
            on_transaction,
            on_late_transaction,
        )
        .route(PAYMENT_SUCCEEDED, on_payment)
        .on_timer(ABSENCE_TIMER, on_absence_timer)
        .before_batch(lock_batch_users)
}

/// Lock the state of every user a batch evaluates, in one global order, before any message: a
/// payment's user is not its correlation id, so the batch's correlation order alone would not
/// keep two batches from taking the same two users' locks in opposite orders.
async fn lock_batch_users(mut batch: Batch<'_, RiskState>) -> Result<(), HandlerError> {
    let users: Vec<String> = batch
        .payloads(TRANSACTION_RECORDED)
        .map(|recorded| recorded.user_id)
        .chain(
            batch
                .payloads(PAYMENT_SUCCEEDED)
                .map(|paid| paid.customer_id),
        )
        .filter(|user| !user.is_empty())
        .collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    batch.lock_state(&users).await
}

/// A transaction older than its user's newest one minus the allowed lateness: not evaluated
/// (the engine would not use it either), counted by the kit, and logged here.
async fn on_late_transaction(
    ctx: Context<'_, RiskState>,
    recorded: TransactionRecorded,
) -> Result<(), HandlerError> {
    tracing::warn!(
        transaction_id = %recorded.transaction_id,
        user_id = %recorded.user_id,
        occurred_at = %recorded.occurred_at,
        message_id = ctx.message_id(),
        "late transaction: older than the user's newest minus the allowed lateness; not evaluated"
    );
    Ok(())
}

#[tracing::instrument(skip_all, fields(transaction_id = %recorded.transaction_id, user_id = %recorded.user_id))]
async fn on_transaction(
    ctx: Context<'_, RiskState>,
    recorded: TransactionRecorded,
) -> Result<(), HandlerError> {
    let event = Event {
        transaction_id: recorded.transaction_id,
        user_id: recorded.user_id,
        amount_cents: recorded.amount_cents,
        currency: recorded.currency,
        location: recorded.location,
        occurred_at: recorded.occurred_at,
    };
    evaluate(ctx, event).await
}

/// A saga payment, evaluated as a transaction of its customer. A payment without a location
/// is still evaluated, with location `""`: dropping it would hide its amount from the rules and
/// break strict sequences around it, and a rule comparing locations then sees "unknown" as
/// different from any known place, which errs towards an alert.
#[tracing::instrument(skip_all, fields(order_id = %paid.order_id, user_id = %paid.customer_id))]
async fn on_payment(
    ctx: Context<'_, RiskState>,
    paid: PaymentSucceeded,
) -> Result<(), HandlerError> {
    if paid.customer_id.is_empty() {
        // Published before payments named their customer: there is no stream to put it in.
        tracing::warn!("payment without a customer id; not evaluated");
        return Ok(());
    }
    let event = Event {
        transaction_id: format!("payment-{}", paid.order_id),
        user_id: paid.customer_id,
        amount_cents: paid.amount_cents,
        currency: SAGA_CURRENCY.to_owned(),
        location: paid.location.unwrap_or_default(),
        occurred_at: paid.occurred_at.unwrap_or_else(|| ctx.event_time()),
    };
    evaluate(ctx, event).await
}

/// One event of a user through every enabled rule, the user's state read and written in the
/// message's transaction.
async fn evaluate(mut ctx: Context<'_, RiskState>, event: Event) -> Result<(), HandlerError> {
    let risk = ctx.state();
    let rules = active_rules(&mut ctx).await?;
    let mut state: KeyState = ctx
        .keyed_state()
        .get(&event.user_id)
        .await?
        .unwrap_or_default();
    let decisions = risk.engine.on_event(&rules, &mut state, &event);
    match decisions.outcome {
        Outcome::Evaluated => {}
        // The kit's lateness check comes first and agrees with the engine's, so this is a
        // safety net: a late event is a fact about the stream, never a failure to retry.
        Outcome::Late => tracing::warn!(
            occurred_at = %event.occurred_at,
            "late transaction: older than the user's newest event minus the allowed lateness; not evaluated"
        ),
        Outcome::Duplicate => tracing::info!("transaction already evaluated for this user"),
    }
    ctx.keyed_state().put(&event.user_id, &state).await?;
    apply(&mut ctx, &event.user_id, decisions).await
}

#[tracing::instrument(skip_all, fields(timer = %fired.payload().timer_id))]
async fn on_absence_timer(
    mut ctx: Context<'_, RiskState>,
    fired: Fired<TimerRequest>,
) -> Result<(), HandlerError> {
    let risk = ctx.state();
    let rules = active_rules(&mut ctx).await?;
    let timer = fired.into_payload();
    let mut state: KeyState = ctx.keyed_state().get(&timer.key).await?.unwrap_or_default();
    let decisions = risk.engine.on_timer(&rules, &mut state, &timer);
    ctx.keyed_state().put(&timer.key, &state).await?;
    apply(&mut ctx, &timer.key, decisions).await
}

/// The rules to run; a stored rule that cannot run is reported and left out, so the other
/// rules still decide.
async fn active_rules(ctx: &mut Context<'_, RiskState>) -> Result<Vec<ActiveRule>, HandlerError> {
    let risk = ctx.state();
    // A partial match waits at most the longest window plus the lateness.
    let longest_wait = TimeDelta::from_std(MAX_WINDOW + risk.engine.config().allowed_lateness)
        .unwrap_or(TimeDelta::MAX);
    let superseded_after = ctx
        .now()
        .checked_sub_signed(longest_wait)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let (rules, broken) = risk.rules.active(ctx.tx(), superseded_after).await?;
    for error in broken {
        risk.metrics.rule_error(error.rule_id());
        tracing::error!(%error, "risk rule cannot run");
    }
    Ok(rules)
}

/// Store and publish what the engine decided: alerts (each once), timers, rule errors.
async fn apply(
    ctx: &mut Context<'_, RiskState>,
    user_id: &str,
    decisions: Decisions,
) -> Result<(), HandlerError> {
    let metrics = &ctx.state().metrics;
    for error in &decisions.errors {
        metrics.rule_error(error.rule_id);
        tracing::warn!(
            rule_id = error.rule_id,
            rule_version = error.rule_version,
            message = %error.message,
            "risk rule failed on this input; the other rules decided"
        );
    }
    for id in &decisions.cancel_timers {
        ctx.timers().cancel(ABSENCE_TIMER, id).await?;
    }
    for timer in &decisions.timers {
        ctx.timers()
            .set(ABSENCE_TIMER, &timer.timer_id, timer.due, timer)
            .await?;
    }
    let mut stored = Vec::new();
    for alert in decisions.alerts {
        stored.extend(store_and_publish(ctx, user_id, alert).await?);
    }
    number_in_feed(ctx, &stored).await
}

/// Give the alerts this transaction stored their feed numbers and announce them, as the
/// handler's last statement: the feed row stays locked until the kit commits (right after
/// the handler returns, with its inbox row), so numbers follow commit order and a rollback
/// gives its numbers back. `pg_notify` is delivered at commit, in commit order, to every
/// replica's listener ([`crate::feed`]); its payload (the last number) is only a hint.
async fn number_in_feed(
    ctx: &mut Context<'_, RiskState>,
    alerts: &[Uuid],
) -> Result<(), HandlerError> {
    if alerts.is_empty() {
        return Ok(());
    }
    let count = i64::try_from(alerts.len()).unwrap_or(i64::MAX);
    // The CTEs share one snapshot, so the alerts are numbered from the locked row's new
    // value; the notification is queued in the same statement and sent at commit.
    sqlx::query(
        "WITH feed AS (UPDATE risk_feed SET seq = seq + $2 RETURNING seq), \
         numbered AS ( \
             UPDATE alerts SET seq = feed.seq - $2 + stored.n, committed_at = clock_timestamp() \
             FROM feed, unnest($1::uuid[]) WITH ORDINALITY AS stored(alert_id, n) \
             WHERE alerts.alert_id = stored.alert_id RETURNING alerts.seq) \
         SELECT pg_notify('risk_alerts', max(seq)::text) FROM numbered",
    )
    .bind(alerts)
    .bind(count)
    .execute(ctx.tx())
    .await?;
    Ok(())
}

/// Insert the alert unless this rule version already alerted on these transactions (a
/// redelivery, a replay), and publish `risk.alert` only for the row inserted; the id of the
/// row inserted, if one was. The row keeps what the feed needs: the triggering message's
/// creation time (decision latency), the handler's trace (the push continues it), this
/// replica's id.
async fn store_and_publish(
    ctx: &mut Context<'_, RiskState>,
    user_id: &str,
    alert: Alert,
) -> Result<Option<Uuid>, HandlerError> {
    let severity = rule_store::severity_name(alert.severity);
    let event_created_at = ctx.message().created_at();
    let traceparent = msgkit::telemetry::context::current()
        .or_else(|| ctx.trace())
        .map(|trace| trace.to_string());
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO alerts (alert_id, rule_id, rule_version, user_id, severity, transaction_ids, at, \
                             event_created_at, traceparent, decided_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (rule_id, rule_version, transaction_ids) DO NOTHING RETURNING alert_id",
    )
    .bind(Uuid::now_v7())
    .bind(alert.rule_id)
    .bind(alert.rule_version)
    .bind(user_id)
    .bind(severity)
    .bind(&alert.events)
    .bind(alert.at)
    .bind(event_created_at)
    .bind(traceparent)
    .bind(ctx.state().replica)
    .fetch_optional(ctx.tx())
    .await?;
    let Some(alert_id) = inserted else {
        tracing::info!(rule_id = alert.rule_id, "alert already stored");
        return Ok(None);
    };
    tracing::info!(%alert_id, rule_id = alert.rule_id, rule_version = alert.rule_version, %severity, "risk alert");
    // Counted before the commit: a rolled-back transaction's alert counts again on its
    // redelivery, which errs high where a missed alert would hide.
    ctx.state().metrics.alert(alert.rule_id, severity);
    let payload = RiskAlert {
        alert_id,
        user_id: user_id.to_owned(),
        rule_id: alert.rule_id,
        rule_version: alert.rule_version,
        severity: severity.to_owned(),
        transaction_ids: alert.events,
        at: alert.at,
    };
    ctx.publish(RISK_ALERT, &payload).await?;
    Ok(Some(alert_id))
}
