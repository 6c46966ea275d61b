//! The live stock feed behind `GET /stock/stream`: every change of a SKU's stock gets a place
//! in one feed (`change_seq`, numbered at commit in commit order by the triggers of the
//! `stock_feed` migration, which also `pg_notify` on [`CHANNEL`]). Each replica runs one
//! [`listen`] task: a `LISTEN` connection of its own that, on each notification, reads the
//! SKUs changed after the last number it has seen and broadcasts their current values to
//! this replica's streams.
//!
//! Stock is a value, not a log: a read returns each changed SKU once, at its current value,
//! so two changes committed between two reads arrive as the newer one. Notifications are
//! hints and the table is the truth: after the listener reconnects (a database restart) it
//! broadcasts [`FeedEvent::Reread`], and every stream reads the table after its last id; a
//! stream that falls behind the broadcast does the same. This is risk's alert feed
//! (`services/risk/src/feed.rs`) for values.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use msgkit::Shutdown;
use msgkit::backoff::Backoff;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};

/// The channel the stock triggers announce changes on.
pub const CHANNEL: &str = "inventory_stock";

/// Changes a stream may fall behind the broadcast before it reads the table instead.
pub const BROADCAST_CAPACITY: usize = 1024;

/// Most SKUs one read of the table returns; more are read in pages.
pub const PAGE: i64 = 500;

/// One SKU's stock as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StockValue {
    /// The SKU.
    pub sku: String,
    /// Units that can still be ordered.
    pub available: i32,
    /// Units held by reservations not released.
    pub reserved: i64,
    /// Bumped on every change of `available`: later values of a SKU have higher versions.
    pub version: i64,
    /// When `available` last changed.
    pub updated_at: DateTime<Utc>,
    /// The SKU's place in the feed (the stream's event id; not in the body).
    #[serde(skip)]
    pub change_seq: i64,
}

const SELECT: &str = "SELECT s.sku, s.available, s.version, s.updated_at, s.change_seq, \
        coalesce((SELECT sum(r.quantity) FROM reservations r \
                  WHERE r.sku = s.sku AND r.status = 'reserved'), 0)::bigint AS reserved \
     FROM stock s";

/// One SKU's current stock, `None` when it is not stocked.
pub async fn current(pool: &PgPool, sku: &str) -> Result<Option<StockValue>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE s.sku = $1")))
        .bind(sku)
        .fetch_optional(pool)
        .await
}

/// What one read of the feed returned.
#[derive(Debug)]
pub struct Page {
    /// The SKUs changed after the point read from (of those asked for), in feed order, each at
    /// its current value; at most [`PAGE`].
    pub values: Vec<StockValue>,
    /// Where the next read starts: everything up to here (of those SKUs) is in `values`.
    pub through: i64,
    /// Whether the read stopped at [`PAGE`] (read again from `through`).
    pub more: bool,
}

/// The SKUs (all, or those in `skus`) changed after `after`, in feed order.
pub async fn read_after(
    pool: &PgPool,
    after: i64,
    skus: Option<&[String]>,
) -> Result<Page, sqlx::Error> {
    // The feed's last number is read in the same snapshot as the rows: every change numbered
    // up to it is visible to this read (numbers are taken in commit order).
    let (values, last): (Vec<StockValue>, i64) = {
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let values = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SELECT} WHERE s.change_seq > $1 AND ($2::text[] IS NULL OR s.sku = ANY($2)) \
             ORDER BY s.change_seq LIMIT $3"
        )))
        .bind(after)
        .bind(skus)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await?;
        let last = last_seq(&mut tx).await?;
        tx.commit().await?;
        (values, last)
    };
    let more = values.len() as i64 == PAGE;
    let through = match values.last() {
        Some(value) if more => value.change_seq,
        _ => last.max(after),
    };
    Ok(Page {
        values,
        through,
        more,
    })
}

/// The last feed number committed: a stream id above it is not from this feed (the database
/// was reset).
pub async fn position(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    last_seq(&mut conn).await
}

async fn last_seq(conn: &mut sqlx::PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT seq FROM stock_feed")
        .fetch_one(conn)
        .await
}

/// What the listener broadcasts.
#[derive(Clone, Debug)]
pub enum FeedEvent {
    /// A SKU's new value.
    Changed(Arc<StockValue>),
    /// The listener reconnected: changes committed while it was away were not broadcast;
    /// read the table after your last id.
    Reread,
}

/// This replica's side of the feed: what streams subscribe to.
#[derive(Clone, Debug)]
pub struct Feed {
    sender: broadcast::Sender<FeedEvent>,
    /// Whether the listener has listened once: streams opened before would miss the changes
    /// committed before it listened.
    listening: watch::Sender<bool>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::with_capacity(BROADCAST_CAPACITY)
    }
}

impl Feed {
    /// A feed whose streams may fall `capacity` changes behind (at least 1) before they read
    /// the table instead.
    pub fn with_capacity(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            listening: watch::Sender::new(false),
        }
    }

    /// Resolves once the listener has listened for the first time.
    pub async fn listening(&self) {
        let mut listening = self.listening.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = listening.wait_for(|listening| *listening).await;
    }

    /// Everything the listener broadcasts from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.sender.subscribe()
    }
}

/// The listener task (one per replica, owned by the service through `Service::with_task`):
/// until `shutdown`, listen on [`CHANNEL`] and broadcast each SKU's new value once per
/// notification, in feed order. Its connection is its own (`listen_apart`), never a pool's.
pub async fn listen(pool: PgPool, feed: Feed, shutdown: Shutdown) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0;
    while !shutdown.is_triggered() {
        let session = tokio::select! {
            () = shutdown.triggered() => break,
            session = follow(&pool, &feed, &mut failures) => session,
        };
        if let Err(error) = session {
            failures = failures.saturating_add(1);
            tracing::warn!(%error, "stock feed listener lost its connection; reconnecting");
            if !msgkit::backoff::wait(backoff.delay(failures), &shutdown).await {
                break;
            }
        }
    }
    tracing::debug!("stock feed listener stopped");
}

/// One connection's life: listen, tell the streams to reread, then broadcast on each
/// notification until the connection fails.
async fn follow(pool: &PgPool, feed: &Feed, failures: &mut u32) -> Result<(), sqlx::Error> {
    let mut listener = msgkit::database::listen_apart(pool, CHANNEL).await?;
    // Listening before reading: whatever commits from here on is announced, and whatever
    // committed before is behind `seen`, which every stream rereads up to.
    let mut seen = position(pool).await?;
    *failures = 0;
    // Streams opened before the first listen wait for it; after a reconnect they reread.
    if feed.listening.send_replace(true) {
        let _ = feed.sender.send(FeedEvent::Reread);
    }
    loop {
        match listener.try_recv().await? {
            // No stream open on this replica: nothing to read (a transaction of four
            // statements per notification, about one per order under load). `seen` stays,
            // so the first read once a stream is open starts there: a stream subscribes
            // before it reads the table and skips what it has read, so the older changes
            // that read brings are harmless.
            Some(_) if feed.sender.receiver_count() == 0 => {}
            Some(_) => seen = broadcast_after(pool, feed, seen).await?,
            // The connection was lost: reconnect from the top.
            None => return Err(sqlx::Error::PoolClosed),
        }
    }
}

/// Broadcast every SKU changed after `seen`, page by page; the feed number read through.
async fn broadcast_after(pool: &PgPool, feed: &Feed, mut seen: i64) -> Result<i64, sqlx::Error> {
    loop {
        let page = read_after(pool, seen, None).await?;
        seen = page.through;
        for value in page.values {
            // No subscriber is not an error: no stream is open.
            let _ = feed.sender.send(FeedEvent::Changed(Arc::new(value)));
        }
        if !page.more {
            return Ok(seen);
        }
    }
}
