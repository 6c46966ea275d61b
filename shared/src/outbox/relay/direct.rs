//! Direct dispatch: a service publishes the events its consumers' handlers wrote as soon as
//! their transaction commits, from the process that wrote them, as MassTransit's, NServiceBus's
//! and Wolverine's outboxes do. The relay's way costs a notification, a wake-up, a claim's
//! transaction (four statements) and its latency per batch; this way costs one statement per
//! dispatched batch, to mark it.
//!
//! The row is still written in the handler's transaction, so nothing changes for durability:
//! it is written with `next_attempt_at` a lease ahead, so no relay claims it (nor is woken by
//! it) while its process publishes it. If the process dies first, the lease runs out and a
//! relay publishes it; if the dispatcher cannot publish (broker away, stopping) it hands the
//! rows to the relays at once. Per-aggregate order holds because only a row with no earlier
//! unpublished row of its aggregate is written for direct dispatch (see
//! `store::insert_many_direct`); a later one is the relay's, which waits for the direct one to
//! be marked, and the mark wakes the relays when such a row waits.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::OutboxRelay;
use crate::outbox::store::{self, PendingRow};
use crate::publish::ConfirmedPublisher;
use crate::shutdown::Shutdown;

/// How long the dispatcher goes on after shutdown while writers still send it rows.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Batches published and awaiting their confirms and marks at once.
const IN_FLIGHT: usize = 8;

/// Where committed rows go for direct dispatch; cloned into every consumer of a service that
/// runs a relay.
#[derive(Clone, Debug)]
pub(crate) struct Dispatch {
    sender: mpsc::UnboundedSender<Vec<PendingRow>>,
    lease: Duration,
    pool: PgPool,
}

/// A consumer's [`Dispatch`], filled in when its service runs a relay (consumers and the relay
/// are added to a service in any order).
pub(crate) type DispatchSlot = Arc<OnceLock<Dispatch>>;

impl Dispatch {
    /// How far ahead a row written for direct dispatch is due for the relays.
    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    /// Publish `rows`, committed for direct dispatch. If the dispatcher has stopped, they are
    /// handed to the relays instead.
    pub(crate) async fn send(&self, rows: Vec<PendingRow>) {
        if rows.is_empty() {
            return;
        }
        if let Err(returned) = self.sender.send(rows) {
            release(&self.pool, &ids(&returned.0)).await;
        }
    }
}

/// The task that publishes what [`Dispatch`] is sent (owned by the service, like its relay).
pub(crate) struct Dispatcher {
    relay: OutboxRelay,
    receiver: mpsc::UnboundedReceiver<Vec<PendingRow>>,
}

impl OutboxRelay {
    /// This relay's direct dispatch: the handle writers send committed rows to, and the task
    /// that publishes them with the relay's settings, metrics and archive copies.
    pub(crate) fn dispatcher(&self) -> (Dispatch, Dispatcher) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let dispatch = Dispatch {
            sender,
            lease: self.config.dispatch_lease,
            pool: self.pool.clone(),
        };
        let relay = Self {
            broker: self
                .broker
                .for_role(format!("{}/dispatch", self.config.app_id)),
            ..self.clone()
        };
        (dispatch, Dispatcher { relay, receiver })
    }
}

impl Dispatcher {
    /// Publish what arrives until every writer has stopped (the consumers finish their
    /// in-flight messages after `shutdown`, and their events should still go out at once), or
    /// [`DRAIN_LIMIT`] after `shutdown` at the latest; then hand what is left to the relays.
    ///
    /// Batches are pipelined: the next one is sent while earlier ones await their confirms
    /// and marks (up to [`IN_FLIGHT`]), so an event never waits for another batch's round
    /// trips. Two batches never hold rows of one aggregate: only an aggregate's first
    /// unpublished row is written for dispatch.
    pub(crate) async fn run(self, shutdown: Shutdown) {
        let Self {
            relay,
            mut receiver,
        } = self;
        let mut publisher: Option<ConfirmedPublisher> = None;
        let mut in_flight = FuturesUnordered::new();
        let limit = async {
            shutdown.triggered().await;
            tokio::time::sleep(DRAIN_LIMIT).await;
        };
        tokio::pin!(limit);
        let mut open = true;
        while open || !in_flight.is_empty() {
            tokio::select! {
                biased;
                Some((ids, finished)) = in_flight.next(), if !in_flight.is_empty() => {
                    if !finished_well(&relay, ids, finished).await
                        && let Some(stale) = publisher.take()
                    {
                        stale.close().await;
                    }
                }
                rows = receiver.recv(), if open && in_flight.len() < IN_FLIGHT => {
                    let Some(rows) = rows else {
                        open = false;
                        continue;
                    };
                    let rows = with_waiting(&mut receiver, rows, relay.config.batch_len());
                    let ids = ids(&rows);
                    publisher = connected(&relay, publisher.take()).await;
                    let Some(active) = &publisher else {
                        tracing::warn!(rows = ids.len(), "direct dispatch cannot reach the broker; the relay takes the rows");
                        release(&relay.pool, &ids).await;
                        continue;
                    };
                    match relay.send(active, rows, None).await {
                        Ok(sent) => {
                            let relay = &relay;
                            in_flight.push(async move { (ids, relay.finish(sent).await) });
                        }
                        Err(error) => {
                            tracing::warn!(%error, rows = ids.len(), "direct dispatch failed; the relay takes the rows");
                            release(&relay.pool, &ids).await;
                            if let Some(stale) = publisher.take() {
                                stale.close().await;
                            }
                        }
                    }
                }
                () = &mut limit, if open => open = false,
            }
        }
        // Writers that come after this find the channel closed and release their rows
        // themselves.
        receiver.close();
        let mut left = Vec::new();
        while let Ok(rows) = receiver.try_recv() {
            left.extend(ids(&rows));
        }
        release(&relay.pool, &left).await;
        if let Some(publisher) = publisher {
            publisher.close().await;
        }
    }
}

/// `rows` and whatever else is queued, up to `limit` rows: what piled up meanwhile goes out
/// together.
fn with_waiting(
    receiver: &mut mpsc::UnboundedReceiver<Vec<PendingRow>>,
    mut rows: Vec<PendingRow>,
    limit: usize,
) -> Vec<PendingRow> {
    while rows.len() < limit {
        match receiver.try_recv() {
            Ok(more) => rows.extend(more),
            Err(_) => break,
        }
    }
    rows
}

/// `current` if it is still connected, else a new publisher; `None` if the broker cannot be
/// reached. One attempt: while the broker is away, the relays back off for everyone.
async fn connected(
    relay: &OutboxRelay,
    current: Option<ConfirmedPublisher>,
) -> Option<ConfirmedPublisher> {
    match current {
        Some(publisher) if publisher.is_connected() => return Some(publisher),
        Some(stale) => stale.close().await,
        None => {}
    }
    let opened = match relay.broker.connect().await {
        Ok(connection) => ConfirmedPublisher::on_connection(connection, &relay.topology).await,
        Err(error) => Err(error),
    };
    match opened {
        Ok(publisher) => Some(
            publisher.with_confirm_timeout(
                relay
                    .config
                    .confirm_timeout
                    .min(relay.config.dispatch_lease / 2),
            ),
        ),
        Err(error) => {
            tracing::warn!(%error, "direct dispatch cannot open its channel");
            None
        }
    }
}

/// Whether the channel is still good after a batch finished: not after a nack (a nacking
/// channel may keep nacking, see the relay loop) or an error, whose unmarked rows go to the
/// relays now rather than when their lease ends (the broker may have some of them: a
/// duplicate, never a loss).
async fn finished_well(
    relay: &OutboxRelay,
    ids: Vec<Uuid>,
    finished: Result<super::BatchReport, super::RelayError>,
) -> bool {
    match finished {
        Ok(report) => report.nacked == 0,
        Err(error) => {
            tracing::warn!(%error, "direct dispatch could not confirm or mark a batch; the relay takes the unmarked rows");
            release(&relay.pool, &ids).await;
            false
        }
    }
}

fn ids(rows: &[PendingRow]) -> Vec<Uuid> {
    rows.iter().map(|row| row.id).collect()
}

/// Hand the rows `ids` to the relays now rather than when their lease ends. If even that
/// fails, the lease still does it.
async fn release(pool: &PgPool, ids: &[Uuid]) {
    if ids.is_empty() {
        return;
    }
    if let Err(error) = store::release(pool, ids).await {
        tracing::warn!(%error, rows = ids.len(), "could not hand undispatched rows to the relay; they go when their lease ends");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerSettings;
    use crate::outbox::{OutboxMessage, RelayConfig, deferred};
    use crate::testing::{TestBroker, TestDatabase, wait_until, wait_until_async};
    use crate::topology::Topology;

    const DEADLINE: Duration = Duration::from_secs(30);

    /// Three rows written for direct dispatch with `lease`, committed.
    async fn committed_for_dispatch(pool: &PgPool, lease: Duration) -> Vec<PendingRow> {
        let messages: Vec<OutboxMessage> = (0..3)
            .map(|n| OutboxMessage::event("t.happened", format!("agg-{n}"), &n).unwrap())
            .collect();
        let mut tx = pool.begin().await.unwrap();
        let direct = deferred::flush(&mut tx, &messages, Some(lease))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(direct.len(), 3, "three aggregates, nothing before them");
        direct
    }

    /// The process died between the commit and the dispatch: a relay publishes the rows once
    /// their lease ends, not before.
    #[tokio::test]
    async fn rows_never_dispatched_are_published_by_a_relay_when_their_lease_ends() {
        let db = TestDatabase::create().await;
        let broker = TestBroker::create().await;
        let pool = db.pool().await;
        crate::schema::migrate(&pool).await.unwrap();
        let _probe = broker.probe("events", "#").await;
        committed_for_dispatch(&pool, Duration::from_millis(400)).await;
        let relay = OutboxRelay::new(
            pool.clone(),
            broker.settings("relay"),
            Topology::default(),
            RelayConfig {
                poll_interval: Duration::from_millis(50),
                ..RelayConfig::new("test")
            },
        );
        let stats = relay.stats();
        let shutdown = Shutdown::new();
        shutdown.spawn(relay.run(shutdown.clone()));
        wait_until("the relay to publish the three", DEADLINE, || {
            stats.published() == 3
        })
        .await;
        let early: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM msgkit_outbox WHERE published_at < next_attempt_at",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(early, 0, "published before the lease ended");
        assert_eq!(stats.dispatched(), 0);
        shutdown.trigger();
        shutdown.wait_for_tasks().await;
    }

    /// With the broker unreachable the dispatcher hands the rows to the relays at once
    /// instead of leaving them for the lease (an hour here).
    #[tokio::test]
    async fn rows_the_dispatcher_cannot_publish_are_handed_to_the_relays_at_once() {
        let db = TestDatabase::create().await;
        let pool = db.pool().await;
        crate::schema::migrate(&pool).await.unwrap();
        let direct = committed_for_dispatch(&pool, Duration::from_secs(3600)).await;
        let relay = OutboxRelay::new(
            pool.clone(),
            BrokerSettings::new("amqp://guest:guest@127.0.0.1:1/%2f", "nowhere"),
            Topology::default(),
            RelayConfig::new("test"),
        );
        let (dispatch, dispatcher) = relay.dispatcher();
        let shutdown = Shutdown::new();
        shutdown.spawn(dispatcher.run(shutdown.clone()));
        dispatch.send(direct).await;
        wait_until_async("the rows to be due for the relays", DEADLINE, || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM msgkit_outbox WHERE next_attempt_at > now()",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (waiting == 0).then_some(())
        })
        .await;
        drop(dispatch);
        shutdown.trigger();
        shutdown.wait_for_tasks().await;
    }
}
