//! The consumer of the `reconcile` queue: each side of a payment joined with the other in the
//! order's keyed state, and the window's timer.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use contracts::event_type::{
    PAYMENT_CALLBACK, PAYMENT_FAILED, PAYMENT_SUCCEEDED, RECONCILE_MATCHED, RECONCILE_MISMATCH,
    RECONCILE_RESOLVED,
};
use contracts::{PaymentCallback, PaymentFailed, PaymentSucceeded, Reconciliation};
use msgkit::TimerType;
use msgkit::consume::{Context, HandlerError, Routes};
use msgkit::outbox::OutboxMessage;
use msgkit::timer::Fired;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::join::{AppOutcome, AppSide, GatewaySide, Outcome, Pair, Side, Step};
use crate::metrics::ReconcileMetrics;
use crate::results::{self, Decision};

/// The window's timer, one per order (keyed by the order id), set when the first side is
/// handled and never moved by the second.
pub const WINDOW_TIMER: TimerType<WindowEnd> = TimerType::new("reconcile.window");

/// The window timer's payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WindowEnd {
    /// The order whose window ends.
    pub order_id: Uuid,
}

/// What the handlers share.
#[derive(Debug)]
pub struct ReconcileState {
    /// How long after the first side the other may come before it counts as missing.
    pub window: Duration,
    /// How long a decided order's sides are kept after its last change, for late sides and
    /// duplicates.
    pub retention: Duration,
    /// The service's metrics.
    pub metrics: ReconcileMetrics,
}

/// The `reconcile` queue's routes: our payments' outcomes, the gateway's callbacks, the
/// window's timer.
pub fn routes(state: ReconcileState) -> Routes<ReconcileState> {
    Routes::with_state(state)
        .route(PAYMENT_SUCCEEDED, on_succeeded)
        .route(PAYMENT_FAILED, on_failed)
        .route(PAYMENT_CALLBACK, on_callback)
        .on_timer(WINDOW_TIMER, on_window_end)
}

#[tracing::instrument(skip_all, fields(order_id = %paid.order_id))]
async fn on_succeeded(
    ctx: Context<'_, ReconcileState>,
    paid: PaymentSucceeded,
) -> Result<(), HandlerError> {
    let side = Side::App(AppSide {
        outcome: AppOutcome::Succeeded,
        amount_cents: Some(paid.amount_cents),
    });
    arrive(ctx, paid.order_id, side).await
}

#[tracing::instrument(skip_all, fields(order_id = %failed.order_id))]
async fn on_failed(
    ctx: Context<'_, ReconcileState>,
    failed: PaymentFailed,
) -> Result<(), HandlerError> {
    let side = Side::App(AppSide {
        outcome: AppOutcome::Failed,
        amount_cents: failed.amount_cents,
    });
    arrive(ctx, failed.order_id, side).await
}

#[tracing::instrument(skip_all, fields(order_id = %callback.order_id, callback_id = %callback.callback_id))]
async fn on_callback(
    ctx: Context<'_, ReconcileState>,
    callback: PaymentCallback,
) -> Result<(), HandlerError> {
    if !callback.known_order {
        tracing::info!("callback for an order the payment service did not know");
    }
    let side = Side::Gateway(GatewaySide {
        callback_id: callback.callback_id,
        outcome: callback.outcome,
        amount_cents: callback.amount_cents,
    });
    arrive(ctx, callback.order_id, side).await
}

/// One side of `order_id`, joined in the order's keyed state (locked until commit, so two
/// sides of one order never interleave, on any replica).
async fn arrive(
    mut ctx: Context<'_, ReconcileState>,
    order_id: Uuid,
    side: Side,
) -> Result<(), HandlerError> {
    let state = ctx.state();
    let key = order_id.to_string();
    let now = ctx.now();
    let stored: Option<Pair> = ctx.keyed_state().get(&key).await?;
    let (pair, step) = match stored {
        Some(mut pair) => {
            let step = pair.arrive(side);
            (pair, step)
        }
        None => {
            if let Some(outcome) = results::outcome_of(ctx.tx(), order_id).await? {
                // Decided longer ago than the retention: its sides are gone, and a new window
                // would raise a second, false alarm.
                tracing::warn!(
                    %outcome,
                    "a side arrived after the order's retention; recorded in its history only"
                );
                let message_id = ctx.message_id().to_owned();
                return results::note_after_retention(ctx.tx(), order_id, now, &message_id).await;
            }
            let due = now + TimeDelta::from_std(state.window).unwrap_or(TimeDelta::MAX);
            ctx.timers()
                .set(WINDOW_TIMER, &key, due, &WindowEnd { order_id })
                .await?;
            Pair::open(side, now)
        }
    };
    match step {
        Step::Opened | Step::Stale => {}
        Step::Duplicate => {
            tracing::info!("this side of the order was handled already; nothing changes");
            return Ok(());
        }
        Step::Decided {
            outcome,
            previous,
            cancel_window,
        } => {
            if cancel_window {
                ctx.timers().cancel(WINDOW_TIMER, &key).await?;
            }
            decide(&mut ctx, order_id, &pair, outcome, previous, now).await?;
        }
    }
    store(&mut ctx, &key, &pair).await
}

/// Keep `pair`: without expiry while its window is open (its timer is durable, and fires
/// however long the service was down: the sides must still be there then), for the retention
/// once decided.
async fn store(
    ctx: &mut Context<'_, ReconcileState>,
    key: &str,
    pair: &Pair,
) -> Result<(), HandlerError> {
    let retention = ctx.state().retention;
    match pair.outcome {
        None => ctx.keyed_state().put(key, pair).await,
        Some(_) => ctx.keyed_state().put_for(key, pair, retention).await,
    }
}

/// The window ended. The pair is kept (for the retention) after a mismatch: a side arriving
/// later must find it, or it would open a new window and raise a second, false alarm.
#[tracing::instrument(skip_all, fields(order_id = %fired.payload().order_id))]
async fn on_window_end(
    mut ctx: Context<'_, ReconcileState>,
    fired: Fired<WindowEnd>,
) -> Result<(), HandlerError> {
    let order_id = fired.payload().order_id;
    let key = order_id.to_string();
    let now = ctx.now();
    let Some(mut pair) = ctx.keyed_state().get::<Pair>(&key).await? else {
        tracing::info!("window ended for an order no longer kept; nothing to decide");
        return Ok(());
    };
    match pair.window_ended() {
        Step::Decided {
            outcome, previous, ..
        } => {
            if fired.overdue() {
                tracing::warn!(lateness = ?fired.lateness(), "reconciliation window ended late");
            }
            decide(&mut ctx, order_id, &pair, outcome, previous, now).await?;
            store(&mut ctx, &key, &pair).await
        }
        _ => {
            tracing::debug!("window ended after the order was decided; ignored");
            Ok(())
        }
    }
}

/// Record the decision (the order's row and a history row), publish it through the outbox,
/// and count it. Counted before the commit: a rolled-back decision counts again on its
/// redelivery, which errs high where a missed mismatch would hide.
async fn decide(
    ctx: &mut Context<'_, ReconcileState>,
    order_id: Uuid,
    pair: &Pair,
    outcome: Outcome,
    previous: Option<Outcome>,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let since_first = (now - pair.first_at).to_std().unwrap_or(Duration::ZERO);
    let decision = Decision {
        order_id,
        pair,
        outcome,
        previous,
        at: now,
        time_to_match: (!outcome.is_mismatch()).then_some(since_first),
    };
    let message_id = ctx.message_id().to_owned();
    results::record(ctx.tx(), &decision, &message_id).await?;
    let payload = Reconciliation {
        order_id,
        outcome: outcome.as_str().to_owned(),
        app_amount_cents: pair.app.as_ref().and_then(|app| app.amount_cents),
        gateway_amount_cents: pair.gateway.as_ref().map(|gateway| gateway.amount_cents),
        decided_at: now,
    };
    let event = match outcome {
        Outcome::Matched => RECONCILE_MATCHED,
        Outcome::LateMatch => RECONCILE_RESOLVED,
        _ => RECONCILE_MISMATCH,
    };
    let message =
        OutboxMessage::of(event, order_id.to_string(), &payload).map_err(HandlerError::poison)?;
    ctx.enqueue(&message).await?;
    tracing::info!(
        outcome = outcome.as_str(),
        previous = previous.map(Outcome::as_str),
        "reconciled"
    );
    let metrics = &ctx.state().metrics;
    metrics.outcome(outcome);
    if outcome == Outcome::Matched {
        metrics
            .time_to_match_seconds
            .observe(since_first.as_secs_f64());
    }
    Ok(())
}
