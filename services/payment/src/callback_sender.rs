//! The gateway's callback sender: a task owned by the service that sends each due callback in
//! `gateway_callbacks` until the merchant's endpoint answers 2xx, with backoff.
//!
//! **No lock is held over the network.** A callback is claimed by moving its `due_at` forward
//! by a lease in one short statement (`FOR UPDATE SKIP LOCKED`, so replicas claim different
//! rows), the statement commits, the request is made, and a second statement marks it sent or
//! schedules its retry. Holding the row lock across the request instead would keep a
//! transaction (and a pooled connection) open for as long as the merchant takes to answer.
//! The price is at-least-once delivery: a process killed between the request and the mark
//! sends the callback again once the lease runs out, which is what real gateways do too; the
//! receiver stores each `callback_id` once.
//!
//! **Why not the kit's timers.** A timer set by the payment handler would live in the
//! handler's transaction, fire into the payment queue, and make its request inside a consumer
//! transaction: the call would hold a pooled connection and a consumer slot that charges need,
//! and after the retry policy's last attempt the callback would be dead-lettered, where a
//! gateway keeps trying for days. And the owed callback belongs to the gateway, an external
//! system: it exists as soon as the gateway decided, even if the handler that asked then
//! crashes before its commit (the very case reconciliation is for). So the gateway keeps its
//! own table, written with its decision, and its own sender.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use msgkit::Shutdown;
use msgkit::backoff::Backoff;
use msgkit::clock::Clock;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::callbacks::MAX_RETRY_DELAY;
use crate::metrics::PaymentMetrics;
use crate::signature::{CallbackKey, SIGNATURE_HEADER};

/// Callbacks claimed per round.
const BATCH: i64 = 64;
/// How long one attempt may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A claimed callback is not claimed again for this long, so only a dead sender's callbacks
/// are taken over, at most this late.
const LEASE: Duration = Duration::from_secs(30);
/// A round starts no send after this long: with two copies at [`REQUEST_TIMEOUT`] each, the
/// last send ends within the lease. What is left is handed back for the next round.
const ROUND_BUDGET: Duration = Duration::from_secs(15);
/// The longest sleep between rounds: callbacks planned by another replica, or whose lease
/// ran out, are found by then.
const POLL: Duration = Duration::from_secs(1);

/// Sends the gateway's due callbacks (see the module docs).
#[derive(Clone, Debug)]
pub struct CallbackSender {
    pool: PgPool,
    url: String,
    key: CallbackKey,
    client: reqwest::Client,
    clock: Clock,
    wake: Arc<Notify>,
    retry: Backoff,
    newest_first: bool,
    metrics: PaymentMetrics,
}

/// A claimed callback.
#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    callback_id: String,
    seq: i64,
    body: String,
    copies: i32,
    attempts: i32,
}

impl CallbackSender {
    /// A sender posting to `url`, signing with `key`, by `clock`, woken by `wake`; `retry` is
    /// the first wait after a failure; `newest_first` (the reorder fault) sends each round's
    /// callbacks newest charge first.
    #[allow(clippy::too_many_arguments)] // each is a distinct setting, named at the one call
    pub fn new(
        pool: PgPool,
        url: String,
        key: CallbackKey,
        clock: Clock,
        wake: Arc<Notify>,
        retry: Duration,
        newest_first: bool,
        metrics: PaymentMetrics,
    ) -> Self {
        Self {
            pool,
            url,
            key,
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default(),
            clock,
            wake,
            retry: Backoff::new(retry, MAX_RETRY_DELAY).with_jitter(0.2),
            newest_first,
            metrics,
        }
    }

    /// Send due callbacks until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        tracing::info!(url = %self.url, "gateway callback sender started");
        while !shutdown.is_triggered() {
            let pause = match self.round(&shutdown).await {
                Ok(claimed) if claimed as i64 == BATCH => Duration::ZERO,
                Ok(_) => self.until_next_due().await,
                Err(error) => {
                    tracing::warn!(%error, "gateway callback sender: database error; retrying");
                    POLL
                }
            };
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.wake.notified() => {}
                () = shutdown.triggered() => {}
            }
        }
    }

    /// How long until the next pending callback is due, at most [`POLL`].
    async fn until_next_due(&self) -> Duration {
        let next: Result<Option<DateTime<Utc>>, _> = sqlx::query_scalar(
            "SELECT min(due_at) FROM gateway_callbacks WHERE sent_at IS NULL AND NOT lost",
        )
        .fetch_one(&self.pool)
        .await;
        match next {
            Ok(Some(next)) => (next - self.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(POLL),
            _ => POLL,
        }
    }

    /// Claim the due callbacks, send them, record the results; how many were claimed. Stops
    /// early on `shutdown` (abandoning a request in flight) or after [`ROUND_BUDGET`], handing
    /// the unsent back.
    async fn round(&self, shutdown: &Shutdown) -> Result<usize, sqlx::Error> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let lease = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let mut claimed: Vec<Claimed> = sqlx::query_as(
            "UPDATE gateway_callbacks c SET due_at = $2, attempts = c.attempts + 1 \
             FROM (SELECT callback_id FROM gateway_callbacks \
                   WHERE sent_at IS NULL AND NOT lost AND due_at <= $1 \
                   ORDER BY due_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED) due \
             WHERE c.callback_id = due.callback_id \
             RETURNING c.callback_id, c.seq, c.body, c.copies, c.attempts",
        )
        .bind(now)
        .bind(lease)
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await?;
        claimed.sort_by_key(|c| c.seq);
        if self.newest_first {
            claimed.reverse();
        }
        for (sent, callback) in claimed.iter().enumerate() {
            if shutdown.is_triggered() || started.elapsed() > ROUND_BUDGET {
                self.hand_back(&claimed[sent..]).await?;
                break;
            }
            let sent_now = tokio::select! {
                result = self.send(callback) => result,
                // A request in flight is abandoned: the endpoint may have taken it, and gets
                // it again after the restart (at least once).
                () = shutdown.triggered() => {
                    self.hand_back(&claimed[sent..]).await?;
                    break;
                }
            };
            match sent_now {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE gateway_callbacks SET sent_at = $2, last_error = NULL \
                         WHERE callback_id = $1",
                    )
                    .bind(&callback.callback_id)
                    .bind(self.clock.now())
                    .execute(&self.pool)
                    .await?;
                }
                Err(error) => {
                    let attempt = u32::try_from(callback.attempts).unwrap_or(u32::MAX);
                    let wait = self.retry.delay(attempt);
                    tracing::warn!(callback_id = %callback.callback_id, attempt, ?wait, %error,
                        "gateway callback not accepted; will retry");
                    let next =
                        self.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
                    sqlx::query(
                        "UPDATE gateway_callbacks SET due_at = $2, last_error = $3 \
                         WHERE callback_id = $1",
                    )
                    .bind(&callback.callback_id)
                    .bind(next)
                    .bind(&error)
                    .execute(&self.pool)
                    .await?;
                }
            }
        }
        Ok(claimed.len())
    }

    /// Make claimed callbacks due again at once, their attempt not counted.
    async fn hand_back(&self, unsent: &[Claimed]) -> Result<(), sqlx::Error> {
        let ids: Vec<&str> = unsent.iter().map(|c| c.callback_id.as_str()).collect();
        sqlx::query(
            "UPDATE gateway_callbacks SET due_at = $2, attempts = attempts - 1 \
             WHERE callback_id = ANY($1) AND sent_at IS NULL",
        )
        .bind(&ids)
        .bind(self.clock.now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One attempt: every copy must be answered 2xx.
    #[tracing::instrument(skip_all, fields(callback_id = %callback.callback_id))]
    async fn send(&self, callback: &Claimed) -> Result<(), String> {
        let signature = self.key.sign(callback.body.as_bytes());
        for _ in 0..callback.copies.max(1) {
            let response = self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .body(callback.body.clone())
                .send()
                .await
                .map_err(|error| {
                    self.metrics.attempt("failed");
                    format!("request failed: {error}")
                })?;
            let status = response.status();
            if !status.is_success() {
                self.metrics.attempt("refused");
                return Err(format!("answered {status}"));
            }
            self.metrics.attempt("accepted");
        }
        tracing::debug!(copies = callback.copies, "gateway callback sent");
        Ok(())
    }
}
