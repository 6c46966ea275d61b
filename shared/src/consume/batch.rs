//! Batching: deliveries that have already arrived together are handled in one database
//! transaction, through the same pipeline as single ones. If anything of the batch fails,
//! nothing of it is applied and each message goes through the pipeline on its own.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use lapin::message::Delivery;
use sqlx::{Postgres, Transaction};
use tracing::Instrument;

use super::acks::Acks;
use super::handler::{Handler, HandlerError};
use super::message::IncomingMessage;
use super::outcome::{Settled, Unsettled};
use super::pipeline::{
    DATABASE_PATIENCE, Pipeline, Received, commit_or_roll_back, onward_tier, panicked,
};
use crate::inbox;
use crate::outbox::PendingRow;
use crate::outbox::deferred;
use crate::publish::ConfirmedPublisher;
use crate::telemetry::context;

impl<H: Handler> Pipeline<H> {
    /// Process deliveries that arrived together and mark them settled for [`Acks`] to
    /// acknowledge: in one transaction when the consumer batches and they are all plain work,
    /// else one by one. An `Err` means one could not be settled on this connection: it and
    /// those not settled yet will be redelivered.
    pub(super) async fn settle(
        &self,
        deliveries: Vec<Delivery>,
        publisher: &ConfirmedPublisher,
        acks: Option<&Acks>,
    ) -> Result<(), Unsettled> {
        if deliveries.len() == 1 {
            // The common case without batching: no second vector per message.
            for delivery in deliveries {
                self.settle_one(self.receive(delivery), publisher, acks)
                    .await?;
                if self.batch > 1 {
                    // A batch of one: how full batches get is what the histogram is for.
                    self.outcomes.metrics.batch_committed(1);
                }
            }
            return Ok(());
        }
        // Deferred retries, messages without an id and dropped ones take their own path.
        let received = deliveries.into_iter().map(|d| self.receive(d));
        let (together, alone): (Vec<_>, Vec<_>) = received.partition(|one| {
            onward_tier(&one.message).is_none()
                && one.message.message_id().is_some_and(|id| !id.is_empty())
                && !self.drops(&one.message)
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
        self.settle_together(together, publisher, acks).await
    }

    /// Settle plain deliveries in one transaction, or one by one if that fails.
    async fn settle_together(
        &self,
        mut together: Vec<Received>,
        publisher: &ConfirmedPublisher,
        acks: Option<&Acks>,
    ) -> Result<(), Unsettled> {
        // In correlation order (stable: one correlation's messages keep their delivery order).
        // Handlers lock their entity's rows; were batches handled in delivery order, two of
        // them holding messages of the same entities in opposite orders would deadlock. In one
        // global order they cannot, as long as a message locks only its own correlation's rows.
        together.sort_by(|a, b| a.message.correlation_id().cmp(&b.message.correlation_id()));
        match self.handle_together(&together).await {
            None => Err(Unsettled::DatabaseUnavailable(DATABASE_PATIENCE)),
            Some(Ok((outcomes, direct))) => {
                if let Some(dispatch) = self.dispatch() {
                    dispatch.send(direct).await;
                }
                self.outcomes.metrics.batch_committed(together.len());
                for (one, settled) in together.iter().zip(outcomes) {
                    self.finish(one, settled, acks);
                }
                Ok(())
            }
            Some(Err(error)) => {
                // Nothing of the batch was applied: each message gets its own transaction,
                // so that only the failing one is retried or dead-lettered.
                self.outcomes.metrics.batch_rolled_back();
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
    ) -> Option<Result<(Vec<Settled>, Vec<PendingRow>), HandlerError>> {
        let mut tx = self.begin().await?;
        let applied = self.apply_together(batch, &mut tx).await;
        Some(commit_or_roll_back(tx, applied).await)
    }

    /// The batch's work in `tx`, not committed: the handler's `before_batch`, every inbox row
    /// in one statement, each new message's handler, then the follow-up events they published
    /// in one statement (one round trip each instead of one per message: the batch's only
    /// per-message statements are then the handlers' own). Also the rows to dispatch once it
    /// commits.
    async fn apply_together(
        &self,
        batch: &[Received],
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(Vec<Settled>, Vec<PendingRow>), HandlerError> {
        let messages: Vec<&IncomingMessage> = batch.iter().map(|one| &one.message).collect();
        AssertUnwindSafe(self.handler.before_batch(&messages, tx))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref())))?;
        let new = if self.inbox {
            let ids: Vec<(&str, &str)> = messages
                .iter()
                .map(|m| (m.message_id().unwrap_or_default(), m.message_type()))
                .collect();
            inbox::record_batch(tx, &self.name, &ids).await?
        } else {
            vec![true; batch.len()]
        };
        let (outcomes, published) = deferred::collect(async {
            let mut outcomes = Vec::with_capacity(batch.len());
            for (one, new) in batch.iter().zip(new) {
                if !new {
                    let message_id = one.message.message_id().unwrap_or_default();
                    one.span.in_scope(|| {
                        tracing::info!(message_id, "duplicate delivery; already applied");
                    });
                    outcomes.push(Settled::Duplicate);
                    continue;
                }
                let handled = context::scope(
                    one.trace,
                    self.apply(&one.message, tx).instrument(one.span.clone()),
                )
                .await?;
                outcomes.push(handled);
            }
            Ok::<_, HandlerError>(outcomes)
        })
        .await;
        let outcomes = outcomes?;
        let lease = self.dispatch().map(|dispatch| dispatch.lease());
        let direct = deferred::flush(tx, &published, lease).await?;
        Ok((outcomes, direct))
    }
}
