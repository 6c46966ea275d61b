//! Processing a sequenced message in its key's turn (see [`crate::key_order`]): the key's row
//! is locked for the whole transaction; the expected message runs its handler inside a
//! savepoint, so that a failure can still record, in the same commit, that the key waits for
//! its retry (or, once it is dead-lettered, goes on); a message ahead of its turn is parked.

use sqlx::{Postgres, Transaction};

use super::failure::Verdict;
use super::handler::{FailureKind, Handler, HandlerError};
use super::message::IncomingMessage;
use super::outcome::Settled;
use super::pipeline::{Pipeline, commit_or_roll_back};
use crate::broker::BrokerError;
use crate::key_order::{self, Position, Turn};
use crate::publish::ConfirmedPublisher;

/// A savepoint around the handler: its failure undoes its writes, not the key's lock.
const SAVEPOINT: &str = "SAVEPOINT msgkit_handler";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT msgkit_handler";

impl<H: Handler> Pipeline<H> {
    /// Process `message`, at `position` in its key's sequence, in `tx`; `None` when the
    /// database could not be reached (the message is not the problem).
    pub(super) async fn process_in_order(
        &self,
        message: &IncomingMessage,
        message_id: &str,
        position: &Position,
        mut tx: Transaction<'static, Postgres>,
        publisher: &ConfirmedPublisher,
    ) -> Result<Option<Settled>, BrokerError> {
        let turn = match key_order::turn(&mut tx, &self.name, position).await {
            Ok(turn) => turn,
            Err(error) => {
                let _ = tx.rollback().await;
                return self.fail(message, &error.into(), publisher).await.map(Some);
            }
        };
        let outcome = match turn {
            Turn::Ahead { expected } => {
                tracing::debug!(
                    seq = position.seq,
                    expected,
                    "ahead of its key's turn; parked"
                );
                self.park(message, position, tx).await
            }
            Turn::Behind { expected } => {
                tracing::info!(
                    seq = position.seq,
                    expected,
                    "behind its key's turn: a replay, applied after what the key has done since"
                );
                self.apply_unordered(message, message_id, tx).await
            }
            Turn::Next => {
                return self
                    .apply_in_turn(message, message_id, position, tx, publisher)
                    .await;
            }
        };
        match outcome {
            Ok(settled) => Ok(Some(settled)),
            Err(error) => self.fail(message, &error, publisher).await.map(Some),
        }
    }

    /// Keep a message that is ahead of its turn (acknowledged once committed).
    async fn park(
        &self,
        message: &IncomingMessage,
        position: &Position,
        mut tx: Transaction<'static, Postgres>,
    ) -> Result<Settled, HandlerError> {
        let parked = key_order::park(&mut tx, &self.name, position, message, self.clock.now())
            .await
            .map_err(|error| match error {
                // The producer's JSON did not parse: it never will.
                crate::outbox::OutboxError::Serialize(_) => HandlerError::new(
                    FailureKind::Poison,
                    "msgkit::key_order::UndecodablePayload",
                    format!("a sequenced message's body is not JSON: {error}"),
                ),
                crate::outbox::OutboxError::Database(_) => HandlerError::from(error),
            });
        if let Err(error) = parked {
            let _ = tx.rollback().await;
            return Err(error);
        }
        tx.commit().await?;
        Ok(Settled::Parked)
    }

    /// Inbox and handler as for any message (the key's row stays locked until the commit).
    async fn apply_unordered(
        &self,
        message: &IncomingMessage,
        message_id: &str,
        mut tx: Transaction<'static, Postgres>,
    ) -> Result<Settled, HandlerError> {
        let handled = self.run_handler(message, message_id, &mut tx).await;
        commit_or_roll_back(tx, handled).await
    }

    /// The message its key expects: applied, it lets the key go on (releasing the next one
    /// if it is parked); failed, the key waits for its retry, or goes on once it is
    /// dead-lettered. The key's bookkeeping commits before the retry or dead letter is
    /// published: a crash in between redelivers the message, which then finds its key past
    /// it and is applied as a replay.
    async fn apply_in_turn(
        &self,
        message: &IncomingMessage,
        message_id: &str,
        position: &Position,
        mut tx: Transaction<'static, Postgres>,
        publisher: &ConfirmedPublisher,
    ) -> Result<Option<Settled>, BrokerError> {
        let applied = match sqlx::query(SAVEPOINT).execute(&mut *tx).await {
            Ok(_) => self.run_handler(message, message_id, &mut tx).await,
            Err(error) => Err(error.into()),
        };
        let failure = match applied {
            Ok(settled) => {
                let advanced = key_order::advance(&mut tx, &self.name, &self.queue, position)
                    .await
                    .map_err(HandlerError::from);
                match advanced {
                    Ok(()) => match tx.commit().await {
                        Ok(()) => return Ok(Some(settled)),
                        Err(error) => {
                            return self.fail(message, &error.into(), publisher).await.map(Some);
                        }
                    },
                    Err(error) => {
                        let _ = tx.rollback().await;
                        return self.fail(message, &error, publisher).await.map(Some);
                    }
                }
            }
            Err(failure) => failure,
        };
        let verdict = self.failures.verdict(message.attempt(), &failure);
        if let Err(error) = self.record_failure(&mut tx, position, verdict).await {
            // The key's bookkeeping could not be written: leave the message with the broker,
            // which redelivers it, rather than retry it with its key not waiting.
            tracing::warn!(%error, "could not record a key's failed turn; the message comes back");
            let _ = tx.rollback().await;
            return Ok(None);
        }
        if let Err(error) = tx.commit().await {
            tracing::warn!(%error, "could not record a key's failed turn; the message comes back");
            return Ok(None);
        }
        self.fail(message, &failure, publisher).await.map(Some)
    }

    /// Undo the handler's writes and record what the key does while `verdict` is carried out.
    async fn record_failure(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        position: &Position,
        verdict: Verdict,
    ) -> Result<(), crate::outbox::OutboxError> {
        sqlx::query(ROLLBACK_TO_SAVEPOINT)
            .execute(&mut **tx)
            .await?;
        match verdict {
            Verdict::Retry(_) => {
                key_order::mark_retrying(tx, &self.name, position, self.clock.now()).await?;
            }
            Verdict::DeadLetter(_) => {
                key_order::advance(tx, &self.name, &self.queue, position).await?;
            }
        }
        Ok(())
    }
}
