//! The live alert feed behind `GET /alerts/stream`: every stored alert has a feed number
//! (`seq`) in commit order (see `handlers::number_in_feed`), and each replica runs one
//! [`listen`] task: a PostgreSQL `LISTEN risk_alerts` connection that, on each notification,
//! reads the alerts after the last number it has seen and broadcasts them to this replica's
//! streams. Replicas share nothing but the database: an alert decided on replica A reaches a
//! stream on replica B through A's `pg_notify` and B's listener.
//!
//! Notifications are hints: the table is the truth. A listener that reconnects (the
//! database restarted, the connection broke) listens again first and then reads every alert
//! after its last number, so nothing committed while it was away is skipped; a stream that
//! falls behind the broadcast reads the table too ([`crate::http`]'s stream).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use msgkit::Shutdown;
use msgkit::backoff::Backoff;
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::metrics::RiskMetrics;

/// The channel `pg_notify` announces new alerts on.
pub const CHANNEL: &str = "risk_alerts";

/// Alerts a stream may fall behind the broadcast before it reads the table instead.
pub const BROADCAST_CAPACITY: usize = 1024;

/// Most alerts one read of the table returns; a longer backlog is read in pages.
pub const PAGE: i64 = 500;

/// One alert as the stream sends it (the `data:` of an `event: alert` frame).
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct FeedAlert {
    /// Its feed number: the frame's `id:`, what a client resumes after.
    pub seq: i64,
    /// The alert's id.
    pub alert_id: Uuid,
    /// The rule that raised it.
    pub rule_id: i64,
    /// The rule's version that raised it.
    pub rule_version: i32,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// Whose transactions raised it.
    pub user_id: String,
    /// The triggering transactions, in event-time order.
    pub transaction_ids: Vec<String>,
    /// When it happened, in event time (the last triggering event, or an absence's window
    /// end).
    pub at: DateTime<Utc>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When its transaction committed (to within milliseconds): push latency starts here.
    #[serde(skip)]
    pub committed_at: Option<DateTime<Utc>>,
    /// When the message that raised it was created: decision latency starts here.
    #[serde(skip)]
    pub event_created_at: Option<DateTime<Utc>>,
    /// The deciding handler's trace, continued by the push.
    #[serde(skip)]
    pub traceparent: Option<String>,
    /// The replica that decided it.
    #[serde(skip)]
    pub decided_by: Option<Uuid>,
}

/// The alerts numbered after `after`, of `user` when given, oldest first, at most [`PAGE`].
pub async fn read_after(
    pool: &PgPool,
    after: i64,
    user: Option<&str>,
) -> Result<Vec<FeedAlert>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, alert_id, rule_id, rule_version, severity, user_id, transaction_ids, at, \
                created_at, committed_at, event_created_at, traceparent, decided_by \
         FROM alerts WHERE seq > $1 AND ($2::text IS NULL OR user_id = $2) \
         ORDER BY seq LIMIT $3",
    )
    .bind(after)
    .bind(user)
    .bind(PAGE)
    .fetch_all(pool)
    .await
}

/// The last feed number committed.
pub async fn last_seq(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT seq FROM risk_feed")
        .fetch_one(pool)
        .await
}

/// This replica's side of the feed: what streams subscribe to.
#[derive(Clone, Debug)]
pub struct Feed {
    sender: broadcast::Sender<Arc<FeedAlert>>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    /// A feed with no subscribers yet.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self { sender }
    }

    /// Every alert the listener broadcasts from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedAlert>> {
        self.sender.subscribe()
    }
}

/// The listener task (one per replica, owned by the service through `Service::with_task`):
/// until `shutdown`, listen on [`CHANNEL`] and broadcast each newly committed alert once, in
/// feed order. It holds one connection of its own, outside the service's pool, so that it
/// never takes a handler's connection.
///
/// Decision latency (`risk_decision_seconds`: the triggering message's creation to the
/// moment this listener sees the alert committed) is recorded once per alert, by the replica
/// that decided it; an alert whose replica stopped before seeing it is not recorded.
pub async fn listen(
    pool: PgPool,
    feed: Feed,
    metrics: RiskMetrics,
    replica: Uuid,
    shutdown: Shutdown,
) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0;
    let mut last: Option<i64> = None;
    while !shutdown.is_triggered() {
        let listened = tokio::select! {
            () = shutdown.triggered() => break,
            listened = follow(&pool, &feed, &metrics, replica, &mut last, &shutdown, &mut failures) => listened,
        };
        if let Err(error) = listened {
            failures = failures.saturating_add(1);
            tracing::warn!(%error, "alert feed listener lost its connection; reconnecting");
            tokio::select! {
                () = shutdown.triggered() => break,
                () = tokio::time::sleep(backoff.delay(failures)) => {}
            }
        }
    }
    tracing::debug!("alert feed listener stopped");
}

/// One connection's life: listen, catch up from `last`, then broadcast on each notification
/// until the connection fails (returned as the error) or shutdown (never returns: the caller
/// selects on it).
async fn follow(
    pool: &PgPool,
    feed: &Feed,
    metrics: &RiskMetrics,
    replica: Uuid,
    last: &mut Option<i64>,
    shutdown: &Shutdown,
    failures: &mut u32,
) -> Result<(), sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .connect_with((*pool.connect_options()).clone())
        .await?;
    let result = async {
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CHANNEL).await?;
        // Listening before reading: whatever commits from here on is announced, and whatever
        // committed before is in the read.
        let mut seen = match *last {
            Some(seen) => seen,
            None => last_seq(pool).await?,
        };
        *last = Some(seen);
        seen = broadcast_after(pool, feed, metrics, replica, seen).await?;
        *last = Some(seen);
        *failures = 0;
        loop {
            match listener.try_recv().await? {
                Some(_) => {
                    seen = broadcast_after(pool, feed, metrics, replica, seen).await?;
                    *last = Some(seen);
                }
                // The connection was lost: reconnect (and catch up) from the top.
                None => return Err(sqlx::Error::PoolClosed),
            }
            if shutdown.is_triggered() {
                return Ok(());
            }
        }
    }
    .await;
    own.close().await;
    result
}

/// Broadcast every alert after `seen`, page by page; the last number broadcast.
async fn broadcast_after(
    pool: &PgPool,
    feed: &Feed,
    metrics: &RiskMetrics,
    replica: Uuid,
    mut seen: i64,
) -> Result<i64, sqlx::Error> {
    loop {
        let page = read_after(pool, seen, None).await?;
        let full = page.len() as i64 == PAGE;
        for alert in page {
            seen = alert.seq;
            if alert.decided_by == Some(replica)
                && let Some(created) = alert.event_created_at
            {
                let latency = (Utc::now() - created).to_std().unwrap_or_default();
                metrics.decision_seconds.observe(latency.as_secs_f64());
            }
            // No subscriber is not an error: there is simply no stream open.
            let _ = feed.sender.send(Arc::new(alert));
        }
        if !full {
            return Ok(seen);
        }
    }
}
