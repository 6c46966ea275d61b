//! The consume loop.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::acks::Acks;
use super::config::ConsumerConfig;
use super::dead_letter::FailureReason;
use super::failure::{FailurePolicy, Verdict};
use super::handler::{FailureKind, Handler, HandlerError};
use super::message::IncomingMessage;
use super::republish::Republisher;
use crate::broker::{BrokerError, BrokerSettings};
use crate::inbox;
use crate::metrics::{Outcome, QueueMetrics, metrics};
use crate::publish::ConfirmedPublisher;
use crate::shutdown::Shutdown;
use crate::telemetry::context;
use crate::topology::{Topology, delay_tier_for};
use crate::trace_context::TraceParent;

/// How long a consumer keeps retrying to open a database transaction for a message before it
/// gives the message back to the broker. A database outage is not the message's fault, so it
/// should not burn the message's attempts.
const DATABASE_PATIENCE: Duration = Duration::from_secs(30);

/// A consumer's counters, by outcome.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    handled: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    poison: AtomicU64,
    deferred: AtomicU64,
    reconnects: AtomicU64,
    connected: AtomicBool,
}

impl ConsumerStats {
    /// Messages handled (committed; acked, or about to be: acks go out in batches).
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
    /// Duplicates acked without running the handler.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
    /// Failed attempts sent to a delayed retry.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }
    /// Messages dead-lettered after their last attempt.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }
    /// Messages dead-lettered as poison.
    pub fn poison(&self) -> u64 {
        self.poison.load(Ordering::Relaxed)
    }
    /// Delayed retries passed on to the next delay tier.
    pub fn deferred(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }
    /// Sessions (connection + channel + subscription) opened after the first.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
    /// Whether the consumer is subscribed right now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Why a delivery was left unacknowledged (the broker redelivers it).
#[derive(Debug, thiserror::Error)]
enum Unsettled {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the database stayed unavailable for {0:?}")]
    DatabaseUnavailable(Duration),
}

/// What became of one delivery (it is acked in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Handled,
    Duplicate,
    Deferred,
    Retried,
    DeadLettered(FailureReason),
}

/// A delivery taken apart for processing.
struct Received {
    tag: u64,
    acker: lapin::Acker,
    message: IncomingMessage,
    /// The `process` span, carrying the message's trace.
    span: tracing::Span,
    trace: TraceParent,
    started: Instant,
}

/// Consumes one work queue with a [`Handler`].
pub struct Consumer<H> {
    pool: PgPool,
    broker: BrokerSettings,
    topology: Topology,
    config: ConsumerConfig,
    handler: H,
    stats: Arc<ConsumerStats>,
    metrics: QueueMetrics,
    failures: FailurePolicy,
    /// `<queue> process`, the name of every delivery's span.
    span_name: String,
}

/// One connection's worth of consuming: its own connection for consuming and another for
/// publishing retries and dead letters (a blocked publishing connection must not stop acks).
struct Session {
    connection: Connection,
    channel: Channel,
    publisher: ConfirmedPublisher,
    consumer: lapin::Consumer,
}

impl<H: Handler> Consumer<H> {
    /// A consumer of `config.queue` in the database behind `pool` (inbox and outbox in its
    /// current schema), declaring `topology` on every connection.
    pub fn new(
        pool: PgPool,
        broker: BrokerSettings,
        topology: Topology,
        config: ConsumerConfig,
        handler: H,
    ) -> Self {
        Self {
            metrics: metrics().for_queue(&config.queue),
            span_name: format!("{} process", config.queue),
            failures: FailurePolicy::new(
                config.retry.clone(),
                Republisher::new(&config.queue, &config.service),
            ),
            pool,
            broker,
            topology,
            config,
            handler,
            stats: Arc::new(ConsumerStats::default()),
        }
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.stats)
    }

    /// Consume until `shutdown`: then stop taking deliveries, finish (and ack) the ones in
    /// flight, and close. Connection or channel loss, a broker restart or a stream that goes
    /// quiet on a dead connection all lead to a new session after a backoff; unacked
    /// deliveries are redelivered by the broker meanwhile.
    #[tracing::instrument(name = "consumer", skip_all, fields(queue = %self.config.queue))]
    pub async fn run(self, shutdown: Shutdown) {
        let this = Arc::new(self);
        let mut delays = this.broker.reconnect_backoff();
        let mut sessions = 0u64;
        while !shutdown.is_triggered() {
            let Some(session) = this.open_session(&shutdown).await else {
                break;
            };
            if sessions > 0 {
                this.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                metrics().reconnected(&this.component());
            }
            sessions += 1;
            this.set_connected(true);
            tracing::info!(
                prefetch = this.config.prefetch,
                concurrency = this.config.concurrency,
                "consuming"
            );
            let started = Instant::now();
            Arc::clone(&this).consume(session, &shutdown).await;
            this.set_connected(false);
            if shutdown.is_triggered() {
                break;
            }
            // A session that lasted a while resets the backoff: this is a new incident.
            if started.elapsed() > Duration::from_secs(30) {
                delays = this.broker.reconnect_backoff();
            }
            let delay = delays.next().unwrap_or(this.broker.reconnect_max);
            tracing::warn!(retry_in = ?delay, "consumer session ended; reconnecting");
            tokio::select! {
                () = tokio::time::sleep(delay) => {},
                () = shutdown.triggered() => break,
            }
        }
        tracing::info!("consumer stopped");
    }

    fn component(&self) -> String {
        format!("{}/consumer", self.config.name)
    }

    fn set_connected(&self, connected: bool) {
        self.stats.connected.store(connected, Ordering::Relaxed);
        metrics().set_connected(&self.component(), connected);
    }

    async fn open_session(&self, shutdown: &Shutdown) -> Option<Session> {
        let mut delays = self.broker.reconnect_backoff();
        loop {
            match self.try_open_session(shutdown).await {
                Ok(session) => return Some(session),
                Err(BrokerError::ShuttingDown) => return None,
                Err(error) => {
                    let delay = delays.next().unwrap_or(self.broker.reconnect_max);
                    tracing::warn!(%error, retry_in = ?delay, "cannot start consuming");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {},
                        () = shutdown.triggered() => return None,
                    }
                }
            }
        }
    }

    async fn try_open_session(&self, shutdown: &Shutdown) -> Result<Session, BrokerError> {
        let publisher = ConfirmedPublisher::open(
            &self
                .broker
                .for_role(format!("{}/publish", self.config.name)),
            &self.topology,
            shutdown,
        )
        .await?;
        let connection = self
            .broker
            .for_role(format!("{}/consume", self.config.name))
            .connect_with_backoff(shutdown)
            .await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::operation("channel.open"))?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(BrokerError::operation("basic.qos"))?;
        let consumer = channel
            .basic_consume(
                self.config.queue.as_str().into(),
                format!("{}-{}", self.config.name, uuid::Uuid::new_v4().simple()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::operation(format!(
                "basic.consume {}",
                self.config.queue
            )))?;
        Ok(Session {
            connection,
            channel,
            publisher,
            consumer,
        })
    }

    async fn consume(self: Arc<Self>, session: Session, shutdown: &Shutdown) {
        let Session {
            connection,
            channel,
            publisher,
            consumer,
        } = session;
        // Ends the session: shutdown, or a delivery that could not be settled on this
        // connection (the broker redelivers it to the next session).
        let broken = CancellationToken::new();
        let stop = {
            let (shutdown, broken) = (shutdown.clone(), broken.clone());
            async move {
                tokio::select! {
                    () = shutdown.triggered() => {},
                    () = broken.cancelled() => {},
                }
            }
        };
        let publisher = &publisher;
        // The deliberately broken consumer acks each delivery itself, before its transaction.
        let acks = (!self.config.faults.ack_before_commit).then(|| Acks::new(self.config.prefetch));
        let processing = consumer
            .take_until(stop)
            // Whatever has arrived, up to a batch, is handled together; under light load that
            // is one delivery and nothing waits for a batch to fill.
            .ready_chunks(self.config.batch.max(1))
            .for_each_concurrent(self.config.concurrency, |deliveries| {
                let (this, broken, acks) = (Arc::clone(&self), broken.clone(), acks.clone());
                let mut received = Vec::with_capacity(deliveries.len());
                let mut failed = None;
                for delivery in deliveries {
                    match delivery {
                        Ok(delivery) => {
                            // Registered here, in delivery order, before any can be settled.
                            if let Some(acks) = &acks {
                                acks.delivered(delivery.delivery_tag);
                            }
                            received.push(delivery);
                        }
                        Err(error) => failed = Some(error),
                    }
                }
                async move {
                    if let Some(error) = failed {
                        tracing::warn!(%error, "consumer stream failed");
                        broken.cancel();
                    }
                    if !received.is_empty()
                        && let Err(error) = this.settle(received, publisher, acks.as_ref()).await
                    {
                        tracing::warn!(%error, "could not settle a delivery; restarting the session");
                        broken.cancel();
                    }
                }
            });
        let acking = async {
            match &acks {
                Some(acks) => acks.run(&channel).await,
                None => std::future::pending().await,
            }
        };
        // A consumer stream can stay silent after the broker died without telling it: watch
        // the connections too.
        let watch = async {
            let mut last_cleanup: Option<Instant> = None;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                // The consumer that writes inbox rows also retires them (between deliveries'
                // own work; a failure is only logged and tried again next interval).
                if self.config.inbox
                    && last_cleanup
                        .is_none_or(|at| at.elapsed() >= self.config.inbox_cleanup_interval)
                {
                    last_cleanup = Some(Instant::now());
                    match inbox::delete_older_than(
                        &self.pool,
                        &self.config.name,
                        self.config.inbox_retention,
                    )
                    .await
                    {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(deleted, "deleted old inbox rows"),
                        Err(error) => tracing::warn!(%error, "inbox clean-up failed"),
                    }
                }
                if !connection.status().connected()
                    || !channel.status().connected()
                    || !publisher.is_connected()
                {
                    return;
                }
            }
        };
        tokio::select! {
            () = processing => {},
            () = watch => tracing::warn!("broker connection lost"),
            error = acking => tracing::warn!(%error, "could not acknowledge deliveries; restarting the session"),
        }
        // In-flight deliveries have been settled (or abandoned with the connection): ack what
        // is settled, then closing returns anything still unacked to the queue.
        if let Some(acks) = &acks
            && let Err(error) = acks.flush(&channel).await
        {
            tracing::debug!(%error, "could not acknowledge the last settled deliveries");
        }
        let _ = channel.close(200, "consumer stopping".into()).await;
        let _ = connection.close(200, "consumer stopping".into()).await;
    }

    /// Take a delivery apart: the message, the span that carries its trace, and its tag.
    fn receive(&self, delivery: Delivery) -> Received {
        // The delivery's parts move into the message; the tag settles it (the acker is only
        // for the deliberately broken consumer).
        let Delivery {
            delivery_tag,
            exchange,
            routing_key,
            redelivered,
            properties,
            data,
            acker,
            ..
        } = delivery;
        let message = IncomingMessage {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            redelivered,
            properties,
            body: data,
        };
        let queue = self.config.queue.as_str();
        // ERROR level, so that a quiet RUST_LOG never disables the span that carries the trace
        // ids of the handler's log lines and the parent of its outgoing messages.
        let span = tracing::error_span!(
            "process",
            otel.name = self.span_name.as_str(),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.destination.name = %queue,
            messaging.rabbitmq.destination.routing_key = %message.routing_key(),
            messaging.message.id = message.message_id().unwrap_or_default(),
            messaging.message.conversation_id = message.correlation_id().unwrap_or_default(),
            messaging.message.type = message.message_type(),
            msgkit.attempt = message.attempt(),
            msgkit.outcome = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let trace = context::continue_trace(&span, message.trace());
        Received {
            tag: delivery_tag,
            acker,
            message,
            span,
            trace,
            started: Instant::now(),
        }
    }

    /// Process deliveries that arrived together and mark them settled for [`Acks`] to
    /// acknowledge: in one transaction when the consumer batches and they are all plain work,
    /// else one by one. An `Err` means one could not be settled on this connection: it and
    /// those not settled yet will be redelivered.
    async fn settle(
        &self,
        deliveries: Vec<Delivery>,
        publisher: &ConfirmedPublisher,
        acks: Option<&Acks>,
    ) -> Result<(), Unsettled> {
        if deliveries.len() == 1 || self.config.faults.ack_before_commit {
            // The common case without batching: no second vector per message.
            for delivery in deliveries {
                self.settle_one(self.receive(delivery), publisher, acks)
                    .await?;
                if self.config.batch > 1 {
                    // A batch of one: how full batches get is what the histogram is for.
                    self.metrics.batch_committed(1);
                }
            }
            return Ok(());
        }
        // Deferred retries and messages without an id take their own path.
        let received = deliveries.into_iter().map(|d| self.receive(d));
        let (mut together, alone): (Vec<_>, Vec<_>) = received.partition(|one| {
            self.onward_tier(&one.message).is_none()
                && one.message.message_id().is_some_and(|id| !id.is_empty())
        });
        for one in alone {
            self.settle_one(one, publisher, acks).await?;
        }
        if together.len() < 2 {
            for one in together {
                self.settle_one(one, publisher, acks).await?;
            }
            return Ok(());
        }
        // In correlation order (stable: one correlation's messages keep their delivery order).
        // Handlers lock their entity's rows; were batches handled in delivery order, two of
        // them holding messages of the same entities in opposite orders would deadlock. In one
        // global order they cannot, as long as a message locks only its own correlation's rows.
        together.sort_by(|a, b| a.message.correlation_id().cmp(&b.message.correlation_id()));
        match self.handle_together(&together).await {
            None => Err(Unsettled::DatabaseUnavailable(DATABASE_PATIENCE)),
            Some(Ok(outcomes)) => {
                self.metrics.batch_committed(together.len());
                for (one, settled) in together.iter().zip(outcomes) {
                    self.finish(one, settled, acks);
                }
                Ok(())
            }
            Some(Err(error)) => {
                // Nothing of the batch was applied: each message gets its own transaction,
                // so that only the failing one is retried or dead-lettered.
                self.metrics.batch_rolled_back();
                tracing::info!(messages = together.len(), %error, "a batch failed; handling its messages one by one");
                for one in together {
                    self.settle_one(one, publisher, acks).await?;
                }
                Ok(())
            }
        }
    }

    /// Handle `batch` in one transaction: the outcome of each, an error if any failed or the
    /// commit did (everything rolled back), `None` if the database could not be reached.
    async fn handle_together(
        &self,
        batch: &[Received],
    ) -> Option<Result<Vec<Settled>, HandlerError>> {
        let mut tx = self.begin().await?;
        let messages: Vec<&IncomingMessage> = batch.iter().map(|one| &one.message).collect();
        let prepared = AssertUnwindSafe(self.handler.before_batch(&messages, &mut tx))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref())));
        if let Err(error) = prepared {
            let _ = tx.rollback().await;
            return Some(Err(error));
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for one in batch {
            let message_id = one.message.message_id().unwrap_or_default();
            let handled = context::scope(
                one.trace,
                self.run_handler(&one.message, message_id, &mut tx)
                    .instrument(one.span.clone()),
            )
            .await;
            match handled {
                Ok(true) => outcomes.push(Settled::Handled),
                Ok(false) => outcomes.push(Settled::Duplicate),
                Err(error) => {
                    let _ = tx.rollback().await;
                    return Some(Err(error));
                }
            }
        }
        Some(
            tx.commit()
                .await
                .map(|()| outcomes)
                .map_err(HandlerError::from),
        )
    }

    /// Process one delivery in its own transaction and mark it settled.
    async fn settle_one(
        &self,
        one: Received,
        publisher: &ConfirmedPublisher,
        acks: Option<&Acks>,
    ) -> Result<(), Unsettled> {
        if self.config.faults.ack_before_commit {
            // The deliberately broken consumer (see `Faults::ack_before_commit`).
            one.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(BrokerError::operation("basic.ack"))?;
        }
        let processed = context::scope(
            one.trace,
            self.process(&one.message, publisher)
                .instrument(one.span.clone()),
        )
        .await;
        let Some(settled) = processed? else {
            return Err(Unsettled::DatabaseUnavailable(DATABASE_PATIENCE));
        };
        self.finish(&one, settled, acks);
        Ok(())
    }

    /// The delivery's outcome is final: let it be acked, count it, close its span.
    fn finish(&self, one: &Received, settled: Settled, acks: Option<&Acks>) {
        if let Some(acks) = acks {
            acks.settled(one.tag);
        }
        let metrics = &self.metrics;
        metrics.handler_duration(one.started.elapsed());
        if settled == Settled::Handled
            && let Some(created) = one.message.created_at()
        {
            metrics.end_to_end((Utc::now() - created).to_std().unwrap_or_default());
        }
        let (counter, outcome) = match settled {
            Settled::Handled => (&self.stats.handled, Outcome::Ack),
            Settled::Duplicate => (&self.stats.duplicates, Outcome::Duplicate),
            Settled::Deferred => (&self.stats.deferred, Outcome::Deferred),
            Settled::Retried => (&self.stats.retried, Outcome::Retry),
            Settled::DeadLettered(FailureReason::Poison) => (&self.stats.poison, Outcome::Poison),
            Settled::DeadLettered(FailureReason::RetriesExhausted) => {
                (&self.stats.dead_lettered, Outcome::DeadLetter)
            }
        };
        one.span.record("msgkit.outcome", outcome.label());
        if !matches!(
            settled,
            Settled::Handled | Settled::Duplicate | Settled::Deferred
        ) {
            one.span.record("otel.status_code", "error");
        }
        metrics.consumed(outcome);
        if one.message.redelivered() {
            metrics.redelivered();
        }
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The delay tier a delayed retry that came back before it is due goes on to.
    fn onward_tier(&self, message: &IncomingMessage) -> Option<Duration> {
        let due = message.retry_due_at()?;
        delay_tier_for((due - Utc::now()).to_std().unwrap_or_default())
    }

    /// Decide and carry out what becomes of `message`; `None` when the database could not be
    /// reached (the message is not the problem).
    async fn process(
        &self,
        message: &IncomingMessage,
        publisher: &ConfirmedPublisher,
    ) -> Result<Option<Settled>, BrokerError> {
        // A delayed retry that came back from a tier before it is due goes on to the next.
        if let Some(tier) = self.onward_tier(message) {
            self.failures
                .republisher()
                .onward(message, tier, publisher)
                .await?;
            return Ok(Some(Settled::Deferred));
        }
        let Some(message_id) = message.message_id().filter(|id| !id.is_empty()) else {
            let error = HandlerError::new(
                FailureKind::Poison,
                "msgkit::consume::MissingMessageId",
                "message has no message_id: it cannot be deduplicated",
            );
            return self.fail(message, &error, publisher).await.map(Some);
        };

        let Some(mut tx) = self.begin().await else {
            return Ok(None);
        };
        let outcome = self.run_handler(message, message_id, &mut tx).await;
        let outcome = match outcome {
            Ok(true) => tx
                .commit()
                .await
                .map(|()| Settled::Handled)
                .map_err(HandlerError::from),
            Ok(false) => tx
                .commit()
                .await
                .map(|()| Settled::Duplicate)
                .map_err(HandlerError::from),
            Err(error) => {
                let _ = tx.rollback().await;
                Err(error)
            }
        };
        match outcome {
            Ok(settled) => Ok(Some(settled)),
            Err(error) => self.fail(message, &error, publisher).await.map(Some),
        }
    }

    /// Retry or dead-letter a message that failed, as the failure policy decides.
    async fn fail(
        &self,
        message: &IncomingMessage,
        error: &HandlerError,
        publisher: &ConfirmedPublisher,
    ) -> Result<Settled, BrokerError> {
        Ok(match self.failures.fail(message, error, publisher).await? {
            Verdict::Retry(_) => Settled::Retried,
            Verdict::DeadLetter(reason) => Settled::DeadLettered(reason),
        })
    }

    /// Inbox check, faults, handler. `Ok(false)` for a duplicate.
    async fn run_handler(
        &self,
        message: &IncomingMessage,
        message_id: &str,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<bool, HandlerError> {
        if self.config.inbox
            && !inbox::record(tx, &self.config.name, message_id, message.message_type()).await?
        {
            tracing::info!(message_id, "duplicate delivery; already applied");
            return Ok(false);
        }
        self.config.faults.apply(message).await?;
        match AssertUnwindSafe(self.handler.handle(message, tx))
            .catch_unwind()
            .await
        {
            Ok(result) => result.map(|()| true),
            Err(panic) => Err(panicked(panic.as_ref())),
        }
    }

    /// A transaction, waiting up to [`DATABASE_PATIENCE`] for the database.
    async fn begin(&self) -> Option<Transaction<'static, Postgres>> {
        let deadline = Instant::now() + DATABASE_PATIENCE;
        let mut delays = self.broker.reconnect_backoff();
        loop {
            match self.pool.begin().await {
                Ok(tx) => return Some(tx),
                Err(error) if Instant::now() < deadline => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    tracing::warn!(%error, retry_in = ?delay, "database unavailable; holding the message");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => {
                    tracing::error!(%error, "database unavailable; returning the message to the broker");
                    return None;
                }
            }
        }
    }
}

/// A panic in a handler, as a transient failure carrying the panic's message.
fn panicked(panic: &(dyn std::any::Any + Send)) -> HandlerError {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    HandlerError::new(FailureKind::Transient, "panic", text)
}
