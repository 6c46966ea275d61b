//! Processing one delivery: a delayed retry that came back early goes on to the next tier, a
//! message without an id is poison, then the inbox check and the handler in one database
//! transaction (a panic counts as a failure), and a failure goes to the failure policy.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use lapin::message::Delivery;
use sqlx::{PgPool, Postgres, Transaction};
use tracing::Instrument;

use super::acks::Acks;
use super::config::ConsumerConfig;
use super::failure::{FailurePolicy, Verdict};
use super::handler::{FailureKind, Handler, HandlerError};
use super::message::IncomingMessage;
use super::outcome::{Outcomes, Settled, Unsettled};
use super::republish::Republisher;
use crate::backoff;
use crate::broker::{BrokerError, BrokerSettings};
use crate::inbox;
use crate::key_order::Position;
use crate::outbox::{Dispatch, DispatchSlot, deferred};
use crate::publish::ConfirmedPublisher;
use crate::telemetry::{context, spans};
use crate::topology::delay_tier_for;
use crate::trace_context::TraceParent;

/// How long a consumer keeps retrying to open a database transaction for a message before it
/// gives the message back to the broker. A database outage is not the message's fault, so it
/// should not burn the message's attempts.
pub(super) const DATABASE_PATIENCE: Duration = Duration::from_secs(30);

/// A delivery taken apart for processing.
pub(super) struct Received {
    pub(super) tag: u64,
    pub(super) message: IncomingMessage,
    /// The `process` span, carrying the message's trace.
    pub(super) span: tracing::Span,
    pub(super) trace: TraceParent,
    pub(super) started: Instant,
}

/// Everything a delivery goes through between the broker handing it over and its outcome
/// being final; shared by every session of a consumer.
pub(super) struct Pipeline<H> {
    pool: PgPool,
    /// Its backoff paces waiting for the database.
    broker: BrokerSettings,
    /// The consumer's name in the inbox.
    pub(super) name: String,
    pub(super) queue: String,
    pub(super) inbox: bool,
    /// Deliveries handled in one transaction at most ([`ConsumerConfig::batch`]).
    pub(super) batch: usize,
    pub(super) handler: H,
    pub(super) failures: FailurePolicy,
    /// Whether sequenced messages wait for their turn ([`crate::key_order`]).
    key_order: bool,
    pub(super) clock: crate::clock::Clock,
    /// [`super::Faults::drop_type`]: the type this deliberately broken consumer drops.
    drop_type: Option<String>,
    pub(super) outcomes: Outcomes,
    /// `<queue> process`, the name of every delivery's span.
    span_name: String,
    /// The service's direct dispatch of follow-up events, when it runs a relay.
    dispatch: DispatchSlot,
}

impl<H: Handler> Pipeline<H> {
    pub(super) fn new(
        pool: PgPool,
        broker: BrokerSettings,
        config: &ConsumerConfig,
        handler: H,
        outcomes: Outcomes,
    ) -> Self {
        Self {
            pool,
            broker,
            name: config.name.clone(),
            queue: config.queue.clone(),
            inbox: config.inbox,
            // A key's turn is decided message by message.
            batch: if handler.key_order() {
                1
            } else {
                config.batch.max(1)
            },
            key_order: handler.key_order(),
            clock: config.clock.clone(),
            drop_type: config.faults.drop_type.clone(),
            handler,
            failures: FailurePolicy::new(
                config.retry.clone(),
                Republisher::new(
                    &config.queue,
                    &config.service,
                    outcomes.metrics.registry.clone(),
                ),
            ),
            outcomes,
            span_name: spans::process_name(&config.queue),
            dispatch: DispatchSlot::default(),
        }
    }

    /// Hand follow-up events to `dispatch` once it is set (see [`crate::outbox::Dispatch`]).
    pub(super) fn with_dispatch(mut self, dispatch: DispatchSlot) -> Self {
        self.dispatch = dispatch;
        self
    }

    /// The direct dispatch, when the service runs one.
    pub(super) fn dispatch(&self) -> Option<&Dispatch> {
        self.dispatch.get()
    }

    /// Take a delivery apart: the message, the span that carries its trace, and its tag.
    pub(super) fn receive(&self, delivery: Delivery) -> Received {
        let Delivery {
            delivery_tag,
            exchange,
            routing_key,
            redelivered,
            properties,
            data,
            ..
        } = delivery;
        let message = IncomingMessage {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            redelivered,
            properties,
            body: data,
        };
        let span = spans::process(&self.span_name, &self.queue, &message);
        let trace = context::continue_trace(&span, message.trace());
        Received {
            tag: delivery_tag,
            message,
            span,
            trace,
            started: Instant::now(),
        }
    }

    /// Process one delivery in its own transaction and mark it settled.
    pub(super) async fn settle_one(
        &self,
        one: Received,
        publisher: &ConfirmedPublisher,
        acks: Option<&Acks>,
    ) -> Result<(), Unsettled> {
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
    pub(super) fn finish(&self, one: &Received, settled: Settled, acks: Option<&Acks>) {
        if let Some(acks) = acks {
            acks.settled(one.tag);
        }
        self.outcomes.record(one, settled);
    }

    /// Decide and carry out what becomes of `message`; `None` when the database could not be
    /// reached (the message is not the problem).
    async fn process(
        &self,
        message: &IncomingMessage,
        publisher: &ConfirmedPublisher,
    ) -> Result<Option<Settled>, BrokerError> {
        if self.drops(message) {
            tracing::warn!(
                message_type = message.message_type(),
                "FAULT_DROP_TYPE: acknowledged without handling"
            );
            return Ok(Some(Settled::Handled));
        }
        if let Some(tier) = onward_tier(message) {
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
        if self.key_order
            && let Some(position) = Position::of(message)
        {
            return self
                .process_in_order(message, message_id, &position, tx, publisher)
                .await;
        }
        let dispatch = self.dispatch();
        let (handled, published) =
            deferred::collect(self.run_handler(message, message_id, &mut tx)).await;
        let written = match handled {
            Ok(applied) => deferred::flush(&mut tx, &published, dispatch.map(Dispatch::lease))
                .await
                .map(|direct| (applied, direct))
                .map_err(HandlerError::from),
            Err(error) => Err(error),
        };
        match commit_or_roll_back(tx, written).await {
            Ok((settled, direct)) => {
                if let Some(dispatch) = dispatch {
                    dispatch.send(direct).await;
                }
                Ok(Some(settled))
            }
            Err(error) => self.fail(message, &error, publisher).await.map(Some),
        }
    }

    /// Whether the injected fault drops `message` unhandled.
    pub(super) fn drops(&self, message: &IncomingMessage) -> bool {
        self.drop_type.as_deref() == Some(message.message_type())
    }

    /// Retry or dead-letter a message that failed, as the failure policy decides.
    pub(super) async fn fail(
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

    /// Inbox check, then the handler: [`Settled::Duplicate`] when the inbox already has the
    /// message, else [`Settled::Handled`] (to be committed).
    pub(super) async fn run_handler(
        &self,
        message: &IncomingMessage,
        message_id: &str,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<Settled, HandlerError> {
        if self.inbox && !inbox::record(tx, &self.name, message_id, message.message_type()).await? {
            tracing::info!(message_id, "duplicate delivery; already applied");
            return Ok(Settled::Duplicate);
        }
        self.apply(message, tx).await
    }

    /// The handler alone (the inbox was checked), a panic counting as a failure.
    pub(super) async fn apply(
        &self,
        message: &IncomingMessage,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<Settled, HandlerError> {
        match AssertUnwindSafe(self.handler.handle(message, tx))
            .catch_unwind()
            .await
        {
            Ok(result) => result.map(|()| Settled::Handled),
            Err(panic) => Err(panicked(panic.as_ref())),
        }
    }

    /// A transaction, waiting up to [`DATABASE_PATIENCE`] for the database.
    pub(super) async fn begin(&self) -> Option<Transaction<'static, Postgres>> {
        let deadline = tokio::time::Instant::now() + DATABASE_PATIENCE;
        let begun = backoff::retry_until_deadline(
            "opening a transaction",
            self.broker.reconnect_backoff(),
            deadline,
            || async {
                self.pool.begin().await.inspect_err(|error| {
                    tracing::warn!(%error, "database unavailable; holding the message");
                })
            },
        )
        .await;
        begun
            .inspect_err(|error| {
                tracing::error!(%error, "database unavailable; returning the message to the broker");
            })
            .ok()
    }
}

/// Commit `tx` when `work` succeeded (a failed commit is the result then), roll it back when
/// it failed.
pub(super) async fn commit_or_roll_back<T>(
    tx: Transaction<'static, Postgres>,
    work: Result<T, HandlerError>,
) -> Result<T, HandlerError> {
    match work {
        Ok(value) => tx
            .commit()
            .await
            .map(|()| value)
            .map_err(HandlerError::from),
        Err(error) => {
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

/// The delay tier a delayed retry that came back before it is due goes on to.
pub(super) fn onward_tier(message: &IncomingMessage) -> Option<Duration> {
    let due = message.retry_due_at()?;
    delay_tier_for((due - Utc::now()).to_std().unwrap_or_default())
}

/// A panic in a handler, as a transient failure carrying the panic's message.
pub(super) fn panicked(panic: &(dyn std::any::Any + Send)) -> HandlerError {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    HandlerError::new(FailureKind::Transient, "panic", text)
}
