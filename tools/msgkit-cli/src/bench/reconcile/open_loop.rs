//! The open loop: orders begun on a fixed schedule (a slow service cannot slow the sender
//! down), each order's second side [`GAP`] after its first, and when each order's
//! reconciliation is seen committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use msgkit::ConfirmedPublisher;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::closed_loop::publish_confirmed;
use super::decided;
use super::traffic::Order;
use crate::CliError;
use crate::bench::stats::Latency;

/// From an order's first side to its second: the gateway's callback (or our outbox) a little
/// behind, well inside the 5 s window.
pub const GAP: Duration = Duration::from_millis(50);
/// How often the reconciliations table is polled: the resolution of the time to match.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// The open-loop half of the stage.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    /// Orders begun per second (two sides each).
    pub offered_per_sec: f64,
    pub orders: usize,
    pub gap_ms: u64,
    /// Second side's publish confirmed -> the order's reconciliation seen committed (polled
    /// every 5 ms): the stage's time to match.
    pub time_to_match: Latency,
    /// Second side's publish confirmed -> the row's `decided_at` (reconcile's clock when it
    /// began handling the deciding side, before its commit); negative where reconcile had the
    /// side before the publisher had its confirm.
    pub to_decided_at: Latency,
    /// reconcile's own `time_to_match_ms`: first side handled -> second handled, so the gap
    /// plus the difference of the two sides' queueing.
    pub reconcile_own: Latency,
}

/// When each order's second side was confirmed, and when its decision was first seen.
#[derive(Default)]
struct Sightings {
    confirmed: Mutex<HashMap<Uuid, (Instant, DateTime<Utc>)>>,
    seen: Mutex<HashMap<Uuid, Instant>>,
}

impl Sightings {
    fn undecided(&self) -> Vec<Uuid> {
        let (Ok(confirmed), Ok(seen)) = (self.confirmed.lock(), self.seen.lock()) else {
            return Vec::new();
        };
        confirmed
            .keys()
            .filter(|order| !seen.contains_key(*order))
            .copied()
            .collect()
    }
}

/// Poll for the undecided orders until `stop`; an order is noted at the start of the poll
/// that found it (it was committed before that query's snapshot).
async fn poll(pool: PgPool, sightings: Arc<Sightings>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let pending = sightings.undecided();
        if !pending.is_empty() {
            let started = Instant::now();
            let found = decided::decided_among(&pool, &pending)
                .await
                .unwrap_or_default();
            if let Ok(mut seen) = sightings.seen.lock() {
                for order in found {
                    seen.entry(order).or_insert(started);
                }
            }
        }
        let _ = tokio::time::timeout(POLL_EVERY, stop.changed()).await;
    }
}

/// Begin `rate` orders per second for `duration`, then wait for every one to be decided.
pub async fn open_loop(
    publisher: Arc<ConfirmedPublisher>,
    pool: &PgPool,
    rate: f64,
    duration: Duration,
) -> Result<OpenLoop, CliError> {
    let sightings = Arc::new(Sightings::default());
    let (stop, stopped) = watch::channel(false);
    let poller = tokio::spawn(poll(pool.clone(), Arc::clone(&sightings), stopped));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let slots = ((duration.as_secs_f64() * rate) as usize).max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = JoinSet::new();
    for k in 0..slots {
        let at = start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(at.into()).await;
        let (publisher, sightings) = (Arc::clone(&publisher), Arc::clone(&sightings));
        tasks.spawn(async move {
            let order = Order::new(k);
            publish_confirmed(&publisher, &[order.message(order.first)?]).await?;
            tokio::time::sleep_until((at + GAP).into()).await;
            publish_confirmed(&publisher, &[order.message(order.second())?]).await?;
            let confirmed = (Instant::now(), Utc::now());
            if let Ok(mut map) = sightings.confirmed.lock() {
                map.insert(order.id, confirmed);
            }
            Ok::<(), CliError>(())
        });
    }
    let mut failed = None;
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done.map_err(|e| CliError::Other(e.into())).and_then(|r| r) {
            failed.get_or_insert(error);
        }
    }
    let offered = slots as f64 / start.elapsed().as_secs_f64().max(f64::EPSILON);
    let waited = msgkit::testing::try_wait_until(
        "every open-loop order decided",
        Duration::from_secs(120),
        POLL_EVERY,
        || sightings.undecided().is_empty(),
    )
    .await;
    let _ = stop.send(true);
    let _ = poller.await;
    if let Some(error) = failed {
        return Err(error);
    }
    waited.map_err(|e| CliError::Other(anyhow::anyhow!("reconcile stage: {e}")))?;

    let confirmed = sightings
        .confirmed
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let seen = sightings.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let ids: Vec<Uuid> = confirmed.keys().copied().collect();
    let rows = decided::rows(pool, &ids).await?;
    let unmatched: Vec<&str> = rows
        .iter()
        .filter(|row| row.outcome != "matched")
        .map(|row| row.outcome.as_str())
        .collect();
    if !unmatched.is_empty() {
        return Err(CliError::Other(anyhow::anyhow!(
            "reconcile stage: {} open-loop orders were not matched ({:?}...)",
            unmatched.len(),
            &unmatched[..unmatched.len().min(5)]
        )));
    }
    let mut time_to_match: Vec<f64> = seen
        .iter()
        .filter_map(|(order, seen)| {
            let (confirmed, _) = confirmed.get(order)?;
            Some(seen.saturating_duration_since(*confirmed).as_secs_f64() * 1000.0)
        })
        .collect();
    time_to_match.sort_by(f64::total_cmp);
    let to_decided_at = decided::sorted_ms(rows.iter().filter_map(|row| {
        let (_, confirmed_at) = confirmed.get(&row.order_id)?;
        Some((*confirmed_at, row.decided_at))
    }));
    let mut own: Vec<f64> = rows
        .iter()
        .filter_map(|row| row.time_to_match_ms.map(|ms| ms as f64))
        .collect();
    own.sort_by(f64::total_cmp);
    Ok(OpenLoop {
        offered_per_sec: offered,
        orders: confirmed.len(),
        gap_ms: GAP.as_millis() as u64,
        time_to_match: Latency::of(&time_to_match),
        to_decided_at: Latency::of(&to_decided_at),
        reconcile_own: Latency::of(&own),
    })
}
