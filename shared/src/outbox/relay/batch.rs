//! Relaying batches: claim rows, publish them with confirms, mark what the broker took.
//!
//! Two batches are in flight at once: the next one is claimed and sent while the broker
//! stores the previous one, whose confirms are then awaited and marked.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{TimeZone, Utc};

use super::archive::{self, RowOutcome};
use super::{BatchReport, MARK_PATIENCE, OutboxRelay, RelayError};
use crate::backoff;
use crate::key_order;
use crate::message::{CREATED_AT_HEADER, OutgoingMessage};
use crate::metrics::Publisher;
use crate::outbox::store::{self, FailedRow, PendingRow};
use crate::publish::{ConfirmedPublisher, PendingConfirms};
use crate::telemetry::spans;

/// A claimed batch whose messages are published and whose confirms are outstanding.
pub(super) struct SentBatch {
    /// The claim's transaction: it holds the rows' locks until the batch is marked. `None` for
    /// rows of direct dispatch, which no claim holds (their lease keeps the relays away).
    pub(super) tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    rows: Vec<PendingRow>,
    spans: Vec<tracing::Span>,
    confirms: PendingConfirms,
    /// For each row, whether an archive copy was sent before it.
    copied: Vec<bool>,
    started: Instant,
}

/// The rows of a batch sorted by what the broker said.
#[derive(Default)]
struct Verdicts {
    published: Vec<uuid::Uuid>,
    failed: Vec<FailedRow>,
    nacked: usize,
}

impl OutboxRelay {
    /// Relay batches until the outbox has no full batch left, keeping two batches in flight.
    /// Per-aggregate order holds because a claim only takes heads of aggregates: the
    /// successor of a row in flight is not a head until that row is marked published, and rows
    /// in flight are locked (skipped) anyway.
    ///
    /// Returns the batches' reports added up; stops early after a nack (the caller opens a new
    /// channel, see [`OutboxRelay::run`]).
    pub(super) async fn pump(
        &self,
        publisher: &ConfirmedPublisher,
    ) -> Result<BatchReport, RelayError> {
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
            if batch.rows.len() < self.config.batch_len() || total.nacked > 0 {
                total.add(&self.finish(batch).await?);
                return Ok(total);
            }
            in_flight = Some(batch);
        }
    }

    /// Claim a batch and publish it without awaiting its confirms; `None` when there is
    /// nothing to publish. The returned batch holds the claim's transaction (its row locks).
    pub(super) async fn claim_and_send(
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
        // On a broker error the transaction is dropped (rolled back): the rows stay unpublished
        // and unlocked, and are claimed again after reconnecting.
        self.send(publisher, rows, Some(tx)).await.map(Some)
    }

    /// Publish `rows` without awaiting their confirms.
    pub(super) async fn send(
        &self,
        publisher: &ConfirmedPublisher,
        rows: Vec<PendingRow>,
        tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    ) -> Result<SentBatch, RelayError> {
        let mut messages: Vec<OutgoingMessage> =
            rows.iter().map(|row| self.outgoing(row)).collect();
        let spans: Vec<tracing::Span> = messages.iter_mut().map(spans::publish).collect();
        let already: Vec<bool> = rows.iter().map(|row| row.archived).collect();
        let (wire, copied) = archive::with_copies(
            self.topology.archive(),
            self.topology.exchange(),
            messages,
            &already,
        );
        let started = Instant::now();
        let confirms = publisher.send_batch(&wire).await?;
        Ok(SentBatch {
            tx,
            rows,
            spans,
            confirms,
            copied,
            started,
        })
    }

    /// Await a sent batch's confirms, mark the confirmed rows published and the refused ones
    /// for a later attempt, and commit.
    pub(super) async fn finish(&self, batch: SentBatch) -> Result<BatchReport, RelayError> {
        let SentBatch {
            tx,
            rows,
            spans,
            confirms,
            copied,
            started,
        } = batch;
        let outcomes = archive::per_message(confirms.confirmed().await?, &copied);
        self.metrics
            .registry
            .confirm(Publisher::Relay, started.elapsed());
        for (span, outcome) in spans.iter().zip(&outcomes) {
            if let Some(reason) = &outcome.failure {
                span.record("otel.status_code", "error");
                span.record("otel.status_description", reason.as_str());
            }
        }
        let verdicts = self.verdicts(&rows, outcomes);
        let direct = tx.is_none();
        let marked = match tx {
            Some(tx) => store::mark_batch(tx, &verdicts.published, &verdicts.failed).await,
            None => store::mark_dispatched(&self.pool, &verdicts.published, &verdicts.failed).await,
        };
        if let Err(error) = marked {
            // The broker has these messages; an unmarked row would be published again. The
            // claim's connection is gone (a database restart, typically), so mark them on a
            // fresh one while the database comes back. Refused rows need nothing: they are
            // retried anyway.
            tracing::warn!(%error, rows = verdicts.published.len(), "marking a confirmed batch failed; retrying on a new connection");
            self.mark_published_again(&verdicts.published).await?;
        }

        let (published, failed) = (verdicts.published.len(), verdicts.failed.len());
        self.metrics.published.inc_by(published as u64);
        if direct {
            self.metrics.dispatched.inc_by(published as u64);
        }
        self.metrics.refused.inc_by(failed as u64);
        let report = BatchReport {
            claimed: rows.len(),
            published,
            failed,
            nacked: verdicts.nacked,
        };
        tracing::debug!(?report, "outbox batch relayed");
        Ok(report)
    }

    /// Sort `rows` by their publish outcomes; a refused row is logged and given its next
    /// attempt's delay.
    fn verdicts(&self, rows: &[PendingRow], outcomes: Vec<RowOutcome>) -> Verdicts {
        let mut verdicts = Verdicts {
            published: Vec::with_capacity(rows.len()),
            ..Verdicts::default()
        };
        for (row, outcome) in rows.iter().zip(outcomes) {
            if outcome.nacked {
                verdicts.nacked += 1;
            }
            match outcome.failure {
                None => verdicts.published.push(row.id),
                Some(error) => {
                    tracing::error!(
                        message_id = %row.id,
                        routing_key = %row.routing_key,
                        exchange = %row.exchange,
                        attempts = row.attempts + 1,
                        %error,
                        "outbox message refused by the broker; kept for retry"
                    );
                    verdicts.failed.push(FailedRow {
                        id: row.id,
                        error,
                        retry_in: self.config.retry_delay(row.attempts),
                        archived: outcome.archived,
                    });
                }
            }
        }
        verdicts
    }

    /// Mark `ids` published outside the claim's transaction, retrying with backoff for up to
    /// [`MARK_PATIENCE`]. If the database stays away longer, the rows are published again
    /// later: a duplicate, never a loss (consumers deduplicate by message_id).
    async fn mark_published_again(&self, ids: &[uuid::Uuid]) -> Result<(), RelayError> {
        // Marking goes on through shutdown: giving up early would publish these rows again.
        backoff::retry_until_deadline(
            "marking published rows",
            self.broker.reconnect_backoff(),
            tokio::time::Instant::now() + MARK_PATIENCE,
            || store::mark_published_now(&self.pool, ids),
        )
        .await
        .map_err(RelayError::from)
    }

    /// The message a claimed row becomes.
    fn outgoing(&self, row: &PendingRow) -> OutgoingMessage {
        let mut headers: BTreeMap<String, String> = match &row.headers {
            serde_json::Value::Object(map) => map
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect(),
            _ => BTreeMap::new(),
        };
        // A released parked message (see `key_order`) goes out as the message it was: its own
        // id and creation time, not the row's.
        let message_id = headers
            .remove(key_order::MESSAGE_ID_HEADER)
            .unwrap_or_else(|| row.id.to_string());
        let created_at = headers
            .remove(CREATED_AT_HEADER)
            .and_then(|millis| millis.parse().ok())
            .and_then(|millis| Utc.timestamp_millis_opt(millis).single())
            .unwrap_or(row.created_at);
        OutgoingMessage {
            message_id,
            message_type: row.message_type.clone(),
            exchange: row.exchange.clone(),
            routing_key: row.routing_key.clone(),
            correlation_id: row.aggregate_id.clone(),
            app_id: self.config.app_id.clone(),
            created_at,
            // Serialising a JSON value cannot fail.
            body: serde_json::to_vec(&row.payload).unwrap_or_default(),
            headers,
            attempt: 1,
        }
    }
}
