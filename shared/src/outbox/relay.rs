//! The outbox relay: claims unpublished rows, publishes them with confirms, marks them
//! published only after the broker acked a routed message.
//!
//! It wakes on `LISTEN/NOTIFY` when a transaction commits new rows, polls as a fallback (a
//! lost notification only delays), backs off while the broker is away, and keeps
//! per-aggregate order with any number of replicas (see [`super::store::claim`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::store::{self, FailedRow, PendingRow};
use crate::broker::{BrokerError, BrokerSettings};
use crate::config::{ConfigError, env_millis, env_parse};
use crate::message::OutgoingMessage;
use crate::publish::{ConfirmedPublisher, PublishOutcome};
use crate::shutdown::Shutdown;
use crate::topology::Topology;
use crate::trace_context::{TRACEPARENT, TraceParent};

/// How the relay batches, polls, retries and cleans up.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The emitting service, sent as `app_id`.
    pub app_id: String,
    /// Rows claimed, published and marked together.
    pub batch_size: i64,
    /// Fallback poll period when no notification arrives.
    pub poll_interval: Duration,
    /// First delay before retrying a row the broker refused (returned or nacked).
    pub retry_initial: Duration,
    /// Longest delay before retrying a refused row.
    pub retry_max: Duration,
    /// How long published rows are kept (for audit and debugging) before deletion.
    pub retention: Duration,
    /// How often old published rows are deleted.
    pub cleanup_interval: Duration,
    /// Limit on waiting for one batch's confirms.
    pub confirm_timeout: Duration,
}

impl RelayConfig {
    /// Defaults: batches of 100, poll every second, refused rows retried after 1 s doubling
    /// to 60 s, published rows kept 24 h.
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 3600),
            cleanup_interval: Duration::from_secs(60),
            confirm_timeout: crate::publish::DEFAULT_CONFIRM_TIMEOUT,
        }
    }

    /// The defaults overridden by `OUTBOX_BATCH_SIZE`, `OUTBOX_POLL_INTERVAL_MS`,
    /// `OUTBOX_RETRY_INITIAL_MS`, `OUTBOX_RETRY_MAX_MS`, `OUTBOX_RETENTION_MS`,
    /// `OUTBOX_CLEANUP_INTERVAL_MS`, `OUTBOX_CONFIRM_TIMEOUT_MS`.
    pub fn from_env(app_id: impl Into<String>) -> Result<Self, ConfigError> {
        let defaults = Self::new(app_id);
        Ok(Self {
            batch_size: env_parse("OUTBOX_BATCH_SIZE", defaults.batch_size)?.max(1),
            poll_interval: env_millis("OUTBOX_POLL_INTERVAL_MS", defaults.poll_interval)?,
            retry_initial: env_millis("OUTBOX_RETRY_INITIAL_MS", defaults.retry_initial)?,
            retry_max: env_millis("OUTBOX_RETRY_MAX_MS", defaults.retry_max)?,
            retention: env_millis("OUTBOX_RETENTION_MS", defaults.retention)?,
            cleanup_interval: env_millis("OUTBOX_CLEANUP_INTERVAL_MS", defaults.cleanup_interval)?,
            confirm_timeout: env_millis("OUTBOX_CONFIRM_TIMEOUT_MS", defaults.confirm_timeout)?,
            ..defaults
        })
    }

    fn retry_delay(&self, attempts_so_far: i32) -> Duration {
        let exponent = u32::try_from(attempts_so_far.clamp(0, 30)).unwrap_or(30);
        self.retry_initial
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.retry_max)
    }
}

/// How long the relay keeps trying to mark a confirmed batch published after the claim's
/// transaction failed (a database restart takes a few seconds).
const MARK_PATIENCE: Duration = Duration::from_secs(15);

/// Counters a relay keeps while it runs; shared, cheap to read (for `/metrics`, `/readyz`).
#[derive(Debug, Default)]
pub struct RelayStats {
    published: AtomicU64,
    failed: AtomicU64,
    broker_errors: AtomicU64,
    connected: AtomicBool,
}

impl RelayStats {
    /// Messages published and confirmed.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
    /// Publish attempts the broker refused (returned as unroutable, or nacked).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// Batches abandoned because the connection failed (they are retried).
    pub fn broker_errors(&self) -> u64 {
        self.broker_errors.load(Ordering::Relaxed)
    }
    /// Whether the relay currently holds a usable broker connection.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// What one batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows confirmed and marked published.
    pub published: usize,
    /// Rows refused by the broker, left unpublished for a later attempt.
    pub failed: usize,
    /// Of the refused rows, those the broker nacked (rather than returned as unroutable).
    pub nacked: usize,
}

impl BatchReport {
    fn add(&mut self, other: &BatchReport) {
        self.claimed += other.claimed;
        self.published += other.published;
        self.failed += other.failed;
        self.nacked += other.nacked;
    }
}

/// A claimed batch whose messages are published and whose confirms are outstanding.
struct SentBatch {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    rows: Vec<PendingRow>,
    spans: Vec<tracing::Span>,
    confirms: crate::publish::PendingConfirms,
    started: Instant,
}

/// Why a batch did not complete. The relay loop handles both by backing off.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The broker connection failed; the batch's rows stay unpublished.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The database failed; any rows published in the batch will be published again.
    #[error("outbox relay database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Publishes a service's outbox. Run one or several per service; see the module docs.
#[derive(Clone, Debug)]
pub struct OutboxRelay {
    pool: PgPool,
    broker: BrokerSettings,
    topology: Topology,
    config: RelayConfig,
    stats: Arc<RelayStats>,
}

impl OutboxRelay {
    /// A relay for the outbox in `pool`'s current schema, publishing to `broker` after
    /// declaring `topology`.
    pub fn new(
        pool: PgPool,
        broker: BrokerSettings,
        topology: Topology,
        config: RelayConfig,
    ) -> Self {
        Self {
            pool,
            broker,
            topology,
            config,
            stats: Arc::new(RelayStats::default()),
        }
    }

    /// The relay's live counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Run until `shutdown` is triggered. A batch in progress is finished (or abandoned
    /// unmarked, to be published again) before it returns.
    #[tracing::instrument(name = "outbox_relay", skip_all, fields(app_id = %self.config.app_id))]
    pub async fn run(self, shutdown: Shutdown) {
        let mut listener: Option<PgListener> = None;
        let mut publisher: Option<ConfirmedPublisher> = None;
        let mut db_delays = self.broker.reconnect_backoff();
        let mut last_cleanup: Option<Instant> = None;
        let mut opened_before = false;
        tracing::info!(broker = %self.broker.redacted_url(), "outbox relay started");

        while !shutdown.is_triggered() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let active = match publisher.take() {
                Some(p) if p.is_connected() => p,
                stale => {
                    if let Some(stale) = stale {
                        stale.close().await;
                    }
                    self.set_connected(false);
                    match self.open_publisher(&shutdown).await {
                        Some(p) => {
                            if opened_before {
                                crate::metrics::metrics().reconnected(&self.component());
                            }
                            opened_before = true;
                            p
                        }
                        None => break,
                    }
                }
            };
            self.set_connected(true);

            discard_pending_notifications(&mut listener);
            match self.pump(&active).await {
                Ok(report) => {
                    if report.nacked > 0 {
                        // A nack can come from the channel rather than the queue: on RabbitMQ
                        // 3.10 a channel whose first publish to a quorum queue found the
                        // queue's leader node down keeps nacking every later publish to that
                        // queue, even once a new leader is elected. A fresh channel does not.
                        tracing::warn!(
                            nacked = report.nacked,
                            "the broker nacked publishes; opening a new channel"
                        );
                        active.close().await;
                    } else {
                        publisher = Some(active);
                    }
                    db_delays = self.broker.reconnect_backoff();
                    // `pump` returns once a claim came back short (or after a nack, which
                    // is retried with backoff anyway): the outbox is drained for now.
                    if report.nacked == 0 {
                        self.cleanup_if_due(&mut last_cleanup).await;
                        self.wait_for_work(&mut listener, &shutdown).await;
                    }
                }
                Err(RelayError::Broker(error)) => {
                    self.stats.broker_errors.fetch_add(1, Ordering::Relaxed);
                    self.set_connected(false);
                    tracing::warn!(%error, "outbox batch abandoned; reconnecting");
                    active.close().await;
                }
                Err(RelayError::Database(error)) => {
                    publisher = Some(active);
                    let delay = db_delays.next().unwrap_or(self.broker.reconnect_max);
                    tracing::warn!(%error, retry_in = ?delay, "outbox batch failed on the database");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {},
                        () = shutdown.triggered() => {},
                    }
                }
            }
        }
        if let Some(publisher) = publisher {
            publisher.close().await;
        }
        self.set_connected(false);
        tracing::info!("outbox relay stopped");
    }

    /// Relay batches until the outbox has no full batch left, keeping two batches in flight:
    /// the next batch is claimed and sent while the broker stores the previous one, whose
    /// confirms are then awaited and marked. Per-aggregate order holds because a claim only
    /// takes heads of aggregates: the successor of a row in flight is not a head until that
    /// row is marked published, and rows in flight are locked (skipped) anyway.
    ///
    /// Returns the batches' reports added up; stops early after a nack (the caller opens a new
    /// channel, see [`OutboxRelay::run`]).
    async fn pump(&self, publisher: &ConfirmedPublisher) -> Result<BatchReport, RelayError> {
        let mut total = BatchReport::default();
        let mut in_flight: Option<SentBatch> = None;
        loop {
            // The previous batch is finished (confirms awaited, rows marked, committed) on its
            // own connection while this one is claimed and sent: the two database round trips
            // overlap instead of adding up. Claiming concurrently with that commit is safe: the
            // previous batch's rows are locked until it commits and published after, and
            // their successors only become heads once the commit is visible.
            let (sent, finished) = match in_flight.take() {
                Some(previous) => {
                    let (sent, finished) =
                        tokio::join!(self.claim_and_send(publisher), self.finish(previous));
                    (sent, Some(finished))
                }
                None => (self.claim_and_send(publisher).await, None),
            };
            // The previous batch's outcome first: its messages were published whether or not
            // this claim worked.
            if let Some(Err(error)) = finished {
                // This batch was published too: mark it before giving up, or it is published
                // again.
                if let Ok(Some(batch)) = sent {
                    let _ = self.finish(batch).await;
                }
                return Err(error);
            }
            if let Some(Ok(report)) = finished {
                total.add(&report);
            }
            let Some(batch) = sent? else {
                return Ok(total);
            };
            if batch.rows.len() < usize::try_from(self.config.batch_size).unwrap_or(usize::MAX)
                || total.nacked > 0
            {
                total.add(&self.finish(batch).await?);
                return Ok(total);
            }
            in_flight = Some(batch);
        }
    }

    /// Claim a batch and publish it without awaiting its confirms; `None` when there is
    /// nothing to publish. The returned batch holds the claim's transaction (its row locks).
    async fn claim_and_send(
        &self,
        publisher: &ConfirmedPublisher,
    ) -> Result<Option<SentBatch>, RelayError> {
        let mut tx = store::begin_claim(&self.pool).await?;
        let rows = store::claim(&mut tx, self.config.batch_size).await?;
        if rows.is_empty() {
            // Nothing to undo: dropping the transaction queues its ROLLBACK on the connection,
            // sent with the connection's next message instead of costing a round trip now.
            drop(tx);
            return Ok(None);
        }
        let mut messages: Vec<OutgoingMessage> =
            rows.iter().map(|row| self.outgoing(row)).collect();
        let spans: Vec<tracing::Span> = messages.iter_mut().map(publish_span).collect();
        let started = Instant::now();
        // On a broker error the transaction is dropped (rolled back): the rows stay unpublished
        // and unlocked, and are claimed again after reconnecting.
        let confirms = publisher.send_batch(&messages).await?;
        Ok(Some(SentBatch {
            tx,
            rows,
            spans,
            confirms,
            started,
        }))
    }

    /// Await a sent batch's confirms, mark the confirmed rows published and the refused ones
    /// for a later attempt, and commit.
    async fn finish(&self, batch: SentBatch) -> Result<BatchReport, RelayError> {
        let SentBatch {
            mut tx,
            rows,
            spans,
            confirms,
            started,
        } = batch;
        let outcomes = confirms.confirmed().await?;
        crate::metrics::metrics().confirm("relay", started.elapsed());
        for (span, outcome) in spans.iter().zip(&outcomes) {
            if let Some(reason) = outcome.failure_reason() {
                span.record("otel.status_code", "error");
                span.record("otel.status_description", reason.as_str());
            }
        }

        let mut published = Vec::with_capacity(rows.len());
        let mut failed = Vec::new();
        let nacked = outcomes
            .iter()
            .filter(|o| matches!(o, PublishOutcome::Nacked))
            .count();
        for (row, outcome) in rows.iter().zip(&outcomes) {
            match outcome.failure_reason() {
                None => published.push(row.id),
                Some(error) => {
                    tracing::error!(
                        message_id = %row.id,
                        routing_key = %row.routing_key,
                        exchange = %row.exchange,
                        attempts = row.attempts + 1,
                        %error,
                        "outbox message refused by the broker; kept for retry"
                    );
                    failed.push(FailedRow {
                        id: row.id,
                        error,
                        retry_in: self.config.retry_delay(row.attempts),
                    });
                }
            }
        }
        let marked = async {
            store::mark_published(&mut tx, &published).await?;
            store::mark_failed(&mut tx, &failed).await?;
            tx.commit().await
        }
        .await;
        if let Err(error) = marked {
            // The broker has these messages; an unmarked row would be published again. The
            // claim's connection is gone (a database restart, typically), so mark them on a
            // fresh one while the database comes back. Refused rows need nothing: they are
            // retried anyway.
            tracing::warn!(%error, rows = published.len(), "marking a confirmed batch failed; retrying on a new connection");
            self.mark_published_again(&published).await?;
        }

        crate::metrics::metrics().relayed(
            &self.config.app_id,
            published.len() as u64,
            failed.len() as u64,
        );
        self.stats
            .published
            .fetch_add(published.len() as u64, Ordering::Relaxed);
        self.stats
            .failed
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        let report = BatchReport {
            claimed: rows.len(),
            published: published.len(),
            failed: failed.len(),
            nacked,
        };
        tracing::debug!(?report, "outbox batch relayed");
        Ok(report)
    }

    /// Mark `ids` published outside the claim's transaction, retrying with backoff for up to
    /// [`MARK_PATIENCE`]. If the database stays away longer, the rows are published again
    /// later: a duplicate, never a loss (consumers deduplicate by message_id).
    async fn mark_published_again(&self, ids: &[uuid::Uuid]) -> Result<(), RelayError> {
        let deadline = Instant::now() + MARK_PATIENCE;
        let mut delays = self.broker.reconnect_backoff();
        loop {
            let attempt = async {
                let mut connection = self.pool.acquire().await?;
                store::mark_published(&mut connection, ids).await
            }
            .await;
            match attempt {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() < deadline => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    tracing::debug!(%error, retry_in = ?delay, "marking published rows failed");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn outgoing(&self, row: &PendingRow) -> OutgoingMessage {
        let headers: BTreeMap<String, String> = match &row.headers {
            serde_json::Value::Object(map) => map
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect(),
            _ => BTreeMap::new(),
        };
        OutgoingMessage {
            message_id: row.id.to_string(),
            message_type: row.message_type.clone(),
            exchange: row.exchange.clone(),
            routing_key: row.routing_key.clone(),
            correlation_id: row.aggregate_id.clone(),
            app_id: self.config.app_id.clone(),
            created_at: row.created_at,
            // Serialising a JSON value cannot fail.
            body: serde_json::to_vec(&row.payload).unwrap_or_default(),
            headers,
            attempt: 1,
        }
    }

    fn component(&self) -> String {
        format!("{}/relay", self.config.app_id)
    }

    fn set_connected(&self, connected: bool) {
        self.stats.connected.store(connected, Ordering::Relaxed);
        crate::metrics::metrics().set_connected(&self.component(), connected);
    }

    async fn open_publisher(&self, shutdown: &Shutdown) -> Option<ConfirmedPublisher> {
        let mut delays = self.broker.reconnect_backoff();
        loop {
            match ConfirmedPublisher::open(&self.broker, &self.topology, shutdown).await {
                Ok(publisher) => {
                    tracing::info!("outbox relay connected to the broker");
                    return Some(publisher.with_confirm_timeout(self.config.confirm_timeout));
                }
                Err(BrokerError::ShuttingDown) => return None,
                Err(error) => {
                    let delay = delays.next().unwrap_or(self.broker.reconnect_max);
                    tracing::warn!(%error, retry_in = ?delay, "outbox relay cannot set up its channel");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {},
                        () = shutdown.triggered() => return None,
                    }
                }
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let result = async {
            let channel = store::notify_channel(&self.pool).await?;
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match result {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "outbox relay cannot LISTEN; polling only");
                None
            }
        }
    }

    /// Sleep until a commit notifies us, the poll interval passes, or shutdown.
    async fn wait_for_work(&self, listener: &mut Option<PgListener>, shutdown: &Shutdown) {
        let poll = tokio::time::sleep(self.config.poll_interval);
        match listener {
            Some(active) => {
                tokio::select! {
                    received = active.recv() => {
                        if let Err(error) = received {
                            tracing::warn!(%error, "outbox notification listener failed; reconnecting");
                            *listener = None;
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

    async fn cleanup_if_due(&self, last_cleanup: &mut Option<Instant>) {
        if last_cleanup.is_some_and(|at| at.elapsed() < self.config.cleanup_interval) {
            return;
        }
        *last_cleanup = Some(Instant::now());
        match store::delete_published_before(&self.pool, self.config.retention, 10_000).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted old published outbox rows"),
            Err(error) => tracing::warn!(%error, "outbox cleanup failed"),
        }
    }
}

/// Consume the notifications that have already arrived, without waiting. The claim about to
/// run sees every row they announce (a notification is sent after its transaction commits),
/// so they must not wake the relay again afterwards: under load that was one empty claim
/// (three round trips) after nearly every batch.
fn discard_pending_notifications(listener: &mut Option<PgListener>) {
    let Some(active) = listener else {
        return;
    };
    loop {
        // `recv` is cancel-safe (the relay already drops it on every poll timeout); polled
        // once, it reads what the socket holds and stops.
        match active.recv().now_or_never() {
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::warn!(%error, "outbox notification listener failed; reconnecting");
                *listener = None;
                return;
            }
            None => return,
        }
    }
}

/// A `publish` span for `message`, continuing the trace of the work that wrote it; the message
/// then carries the span's context, so consumers become its children.
fn publish_span(message: &mut OutgoingMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = format!("{} publish", message.message_type),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.destination.name = %message.exchange,
        messaging.rabbitmq.destination.routing_key = %message.routing_key,
        messaging.message.id = %message.message_id,
        messaging.message.conversation_id = %message.correlation_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let parent = message
        .headers
        .get(TRACEPARENT)
        .and_then(|value| value.parse::<TraceParent>().ok());
    let trace = crate::telemetry::context::continue_trace(&span, parent);
    message
        .headers
        .insert(TRACEPARENT.to_owned(), trace.to_string());
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{OutboxMessage, enqueue};
    use crate::testing::{TestBroker, TestDatabase};

    /// The broker confirmed a batch, then the claim's connection died (a database restart):
    /// the rows must still end up marked, or they are published a second time.
    #[tokio::test]
    async fn a_confirmed_batch_is_marked_even_when_the_claims_connection_dies() {
        let db = TestDatabase::create().await;
        let broker = TestBroker::create().await;
        let pool = db.pool().await;
        crate::schema::migrate(&pool).await.unwrap();
        // Something must be bound for the messages to be routed (and so confirmed).
        let _probe = broker.probe("events", "#").await;
        let mut tx = pool.begin().await.unwrap();
        for n in 0..3 {
            let message = OutboxMessage::event("t.happened", format!("agg-{n}"), &n).unwrap();
            enqueue(&mut tx, &message).await.unwrap();
        }
        tx.commit().await.unwrap();
        let relay = OutboxRelay::new(
            pool.clone(),
            broker.settings("relay"),
            Topology::default(),
            RelayConfig::new("test"),
        );
        let publisher = ConfirmedPublisher::open(
            &broker.settings("relay"),
            &Topology::default(),
            &Shutdown::new(),
        )
        .await
        .unwrap();

        let mut batch = relay.claim_and_send(&publisher).await.unwrap().unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *batch.tx)
            .await
            .unwrap();
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(terminated);

        let report = relay.finish(batch).await.unwrap();
        assert_eq!(report.published, 3);
        let unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox WHERE published_at IS NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            unpublished, 0,
            "confirmed rows left unmarked would be published again"
        );
        publisher.close().await;
        pool.close().await;
    }

    #[test]
    fn refused_rows_back_off_exponentially_up_to_the_cap() {
        let config = RelayConfig {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            ..RelayConfig::new("test")
        };
        assert_eq!(config.retry_delay(0), Duration::from_millis(100));
        assert_eq!(config.retry_delay(1), Duration::from_millis(200));
        assert_eq!(config.retry_delay(3), Duration::from_millis(800));
        assert_eq!(config.retry_delay(4), Duration::from_secs(1));
        assert_eq!(config.retry_delay(1000), Duration::from_secs(1));
    }
}
