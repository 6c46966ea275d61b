//! When the relay looks at the outbox again: a committed transaction's notification, the poll
//! interval, or shutdown, whichever comes first.

use std::time::Duration;

use futures_util::FutureExt;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::outbox::store;
use crate::shutdown::Shutdown;

/// The relay's `LISTEN` connection and its polling fallback. Without a listener (it could not
/// be set up, or it failed) the relay only polls: a lost notification delays, never loses.
pub(super) struct Wakeups {
    pool: PgPool,
    poll_interval: Duration,
    listener: Option<PgListener>,
}

impl Wakeups {
    pub(super) fn new(pool: PgPool, poll_interval: Duration) -> Self {
        Self {
            pool,
            poll_interval,
            listener: None,
        }
    }

    /// Set up the listener if there is none (at start, or after it failed).
    pub(super) async fn ensure_listening(&mut self) {
        if self.listener.is_some() {
            return;
        }
        match store::listen(&self.pool).await {
            Ok(listener) => self.listener = Some(listener),
            Err(error) => tracing::warn!(%error, "outbox relay cannot LISTEN; polling only"),
        }
    }

    /// Consume the notifications that have already arrived, without waiting. The claim about
    /// to run sees every row they announce (a notification is sent after its transaction
    /// commits), so they must not wake the relay again afterwards: under load that was one
    /// empty claim (three round trips) after nearly every batch.
    pub(super) fn discard_pending(&mut self) {
        let Some(active) = &mut self.listener else {
            return;
        };
        loop {
            // `recv` is cancel-safe (the relay already drops it on every poll timeout); polled
            // once, it reads what the socket holds and stops.
            match active.recv().now_or_never() {
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "outbox notification listener failed; reconnecting");
                    self.listener = None;
                    return;
                }
                None => return,
            }
        }
    }

    /// Sleep until a commit notifies us, the poll interval passes, or shutdown.
    pub(super) async fn wait(&mut self, shutdown: &Shutdown) {
        let poll = tokio::time::sleep(self.poll_interval);
        match &mut self.listener {
            Some(active) => {
                tokio::select! {
                    received = active.recv() => {
                        if let Err(error) = received {
                            tracing::warn!(%error, "outbox notification listener failed; reconnecting");
                            self.listener = None;
                        }
                    }
                    () = poll => {},
                    () = shutdown.triggered() => {},
                }
            }
            None => {
                tokio::select! {
                    () = poll => {},
                    () = shutdown.triggered() => {},
                }
            }
        }
    }
}
