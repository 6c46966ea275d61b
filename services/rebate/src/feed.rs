//! The live balance feed behind `GET /rebates/{customer}/stream`: each replica runs one
//! [`listen`] task, a `LISTEN rebate_balances` on a connection of its own
//! ([`msgkit::database::listen_apart`]), which broadcasts every balance change announced by
//! the trigger on `rebate_balances` to this replica's streams. The projection runs on one
//! replica at a time; the notification reaches the streams of all of them.
//!
//! Notifications are hints, the table is the truth: a listener that listens again (its
//! connection broke) broadcasts [`Change::Resync`], and every stream reads its customer's
//! balance again, so a change committed while nobody listened is not lost. A stream that
//! falls behind the broadcast does the same.

use std::sync::Arc;
use std::time::Duration;

use msgkit::Shutdown;
use msgkit::backoff::Backoff;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};

use crate::balances::Balance;

/// The channel the trigger on `rebate_balances` notifies.
pub const CHANNEL: &str = "rebate_balances";

/// Changes a stream may fall behind the broadcast before it reads the table instead.
pub const BROADCAST_CAPACITY: usize = 1024;

/// What the listener broadcasts.
#[derive(Clone, Debug)]
pub enum Change {
    /// A customer's balance changed (committed).
    Balance(Arc<Balance>),
    /// Changes may have been missed: read the table again.
    Resync,
}

/// A notification's payload: the row, and the schema of the table that changed.
#[derive(Deserialize)]
struct Notice {
    schema: String,
    #[serde(flatten)]
    balance: Balance,
}

/// This replica's side of the feed: what streams subscribe to.
#[derive(Clone, Debug)]
pub struct Feed {
    sender: broadcast::Sender<Change>,
    listening: watch::Sender<bool>,
}

impl Default for Feed {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            sender,
            listening: watch::Sender::new(false),
        }
    }
}

impl Feed {
    /// Resolves once the listener has listened (for the first time): from then on every
    /// change committed is broadcast.
    pub async fn listening(&self) {
        let mut listening = self.listening.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = listening.wait_for(|listening| *listening).await;
    }

    /// Every change the listener broadcasts from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}

/// The listener task (one per replica, owned by the service through `Service::with_task`):
/// until `shutdown`, broadcast the balance changes of the tables in `schema` (the service's;
/// a rebuild's tables notify too, from their own schema, and are passed over).
pub async fn listen(pool: PgPool, schema: String, feed: Feed, shutdown: Shutdown) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures: u32 = 0;
    while !shutdown.is_triggered() {
        let followed = tokio::select! {
            () = shutdown.triggered() => break,
            followed = follow(&pool, &schema, &feed, &mut failures) => followed,
        };
        if let Err(error) = followed {
            failures = failures.saturating_add(1);
            tracing::warn!(%error, "balance feed listener lost its connection; listening again");
            tokio::select! {
                () = shutdown.triggered() => break,
                () = tokio::time::sleep(backoff.delay(failures)) => {}
            }
        }
    }
    tracing::debug!("balance feed listener stopped");
}

/// One connection's life: listen, tell the streams to read again (what committed before is
/// in the read, what commits after is announced), then broadcast until the connection fails.
async fn follow(
    pool: &PgPool,
    schema: &str,
    feed: &Feed,
    failures: &mut u32,
) -> Result<(), sqlx::Error> {
    let mut listener = msgkit::database::listen_apart(pool, CHANNEL).await?;
    // No subscriber is not an error: there is simply no stream open.
    let _ = feed.sender.send(Change::Resync);
    feed.listening.send_replace(true);
    *failures = 0;
    loop {
        let Some(notification) = listener.try_recv().await? else {
            // The connection was lost: notifications in between are gone.
            return Err(sqlx::Error::PoolClosed);
        };
        match serde_json::from_str::<Notice>(notification.payload()) {
            Ok(notice) if notice.schema == schema => {
                let _ = feed.sender.send(Change::Balance(Arc::new(notice.balance)));
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "unreadable balance notification; streams read again");
                let _ = feed.sender.send(Change::Resync);
            }
        }
    }
}
