//! The closed loop: orders as fast as reconcile decides them. Each round publishes (with
//! confirms, pipelined) the second sides of the previous round's orders and the first sides
//! of a fresh round, so an order's sides are one round apart; no more than
//! [`MAX_UNDECIDED`] orders wait undecided, so the sender follows the service instead of
//! filling the queue.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use msgkit::ConfirmedPublisher;
use msgkit::message::OutgoingMessage;
use sqlx::PgPool;

use super::decided;
use super::traffic::Order;
use crate::CliError;

/// Orders begun per round.
const ROUND: usize = 100;
/// Orders published and not yet decided, at most (a few seconds of work: well inside the
/// window, which starts only when an order's first side is handled anyway).
const MAX_UNDECIDED: usize = 1_000;

/// Publish `messages` and wait for every confirm; any refusal fails the stage.
pub async fn publish_confirmed(
    publisher: &ConfirmedPublisher,
    messages: &[OutgoingMessage],
) -> Result<(), CliError> {
    let outcomes = publisher
        .publish_batch(messages)
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!("reconcile stage: publishing: {e}")))?;
    let refused = outcomes.iter().filter(|o| !o.is_confirmed()).count();
    if refused > 0 {
        return Err(CliError::Other(anyhow::anyhow!(
            "reconcile stage: the broker refused {refused} of {} sides",
            messages.len()
        )));
    }
    Ok(())
}

/// Run for `duration`; returns the orders sent and the time of the first publish and of the
/// last decision (every order is decided before this returns).
pub async fn closed_loop(
    publisher: &ConfirmedPublisher,
    pool: &PgPool,
    duration: Duration,
) -> Result<(usize, DateTime<Utc>, DateTime<Utc>), CliError> {
    let first_publish = Utc::now();
    let clock = Instant::now();
    let mut begun: usize = 0;
    let mut awaiting_second: Vec<Order> = Vec::new();
    while clock.elapsed() < duration {
        let (decided, _) = decided::progress(pool).await?;
        if begun.saturating_sub(decided) >= MAX_UNDECIDED {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let fresh: Vec<Order> = (begun..begun + ROUND).map(Order::new).collect();
        begun += ROUND;
        let mut messages = Vec::with_capacity(2 * ROUND);
        for order in &awaiting_second {
            messages.push(order.message(order.second())?);
        }
        for order in &fresh {
            messages.push(order.message(order.first)?);
        }
        publish_confirmed(publisher, &messages).await?;
        awaiting_second = fresh;
    }
    let last: Vec<OutgoingMessage> = awaiting_second
        .iter()
        .map(|order| order.message(order.second()))
        .collect::<Result<_, _>>()?;
    publish_confirmed(publisher, &last).await?;
    let last_decided = wait_decided(pool, begun, Duration::from_secs(600)).await?;
    Ok((begun, first_publish, last_decided))
}

/// Wait until `count` orders are decided; returns the last decision's time.
pub async fn wait_decided(
    pool: &PgPool,
    count: usize,
    limit: Duration,
) -> Result<DateTime<Utc>, CliError> {
    let deadline = Instant::now() + limit;
    loop {
        let (decided, last) = decided::progress(pool).await?;
        if decided >= count {
            return Ok(last.unwrap_or_else(Utc::now));
        }
        if Instant::now() > deadline {
            return Err(CliError::Other(anyhow::anyhow!(
                "reconcile stage: only {decided} of {count} orders were decided within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
