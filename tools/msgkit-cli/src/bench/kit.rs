//! The kit's own stages: the outbox relay's drain and the consumer runtime, each timed as the
//! services run them, next to the raw ceilings measured in the same round.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use msgkit::consume::{
    Consumer, ConsumerConfig, Handler, HandlerError, IncomingMessage, RetryPolicy,
};
use msgkit::message::OutgoingMessage;
use msgkit::testing::{TestBroker, TestDatabase};
use msgkit::{ConfirmedPublisher, OutboxRelay, RelayConfig, Shutdown};
use sqlx::{PgConnection, PgPool};

use crate::CliError;

use super::{BODY, raw, raw_inbox, topology};

/// Does nothing but note when it was first called: the consumer stages are timed from their
/// first message, as the raw consumer is from its first delivery (not from connecting and
/// declaring the topology).
#[derive(Clone, Default)]
struct Noop {
    first_call: Arc<OnceLock<Instant>>,
}

impl Handler for Noop {
    async fn handle(
        &self,
        _message: &IncomingMessage,
        _tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        self.first_call.get_or_init(Instant::now);
        Ok(())
    }
}

/// The relay's own loop (`OutboxRelay::run`, as the services run it) draining N rows over
/// 1,000 aggregates that arrive in one commit, from that commit until the last row is
/// confirmed and marked; with `archive`, also copying every event into it.
pub(super) async fn relay_drain(
    pool: &PgPool,
    broker: &TestBroker,
    setup: &lapin::Channel,
    n: usize,
    archive: Option<msgkit::topology::Archive>,
) -> Result<f64, CliError> {
    // A fresh outbox and an empty queue for every repetition.
    sqlx::query("TRUNCATE msgkit_outbox")
        .execute(pool)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    setup
        .queue_purge(
            "bench.relay".into(),
            lapin::options::QueuePurgeOptions::default(),
        )
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    let topology = match archive {
        Some(archive) => topology().with_archive(archive),
        None => topology(),
    };
    let relay = OutboxRelay::new(
        pool.clone(),
        broker.settings("bench/relay"),
        topology,
        RelayConfig {
            batch_size: 500,
            ..RelayConfig::new("bench")
        },
    );
    let stats = relay.stats();
    let shutdown = Shutdown::new();
    shutdown.spawn(relay.run(shutdown.clone()));
    wait_for(Duration::from_secs(30), "the relay to connect", || {
        stats.connected()
    })
    .await?;
    // 1,000 aggregates: a realistic spread (the relay takes one head row per aggregate).
    sqlx::query(
        "INSERT INTO msgkit_outbox (id, aggregate_id, exchange, routing_key, message_type, payload, headers) \
         SELECT gen_random_uuid(), 'agg-' || (g % 1000), 'events', 'bench.relay', 'bench.relay', $2::jsonb, '{}'::jsonb \
         FROM generate_series(1, $1) g",
    )
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .bind(serde_json::from_slice::<serde_json::Value>(BODY).unwrap_or_default())
    .execute(pool)
    .await
    .map_err(|e| CliError::Other(e.into()))?;
    let started = Instant::now();
    wait_for(Duration::from_secs(600), "the relay to drain", || {
        stats.published() as usize >= n
    })
    .await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    shutdown.trigger();
    shutdown.wait_for_tasks().await;
    if stats.published() as usize != n {
        return Err(CliError::Other(anyhow::anyhow!(
            "the relay published {} of {n}",
            stats.published()
        )));
    }
    Ok(rate)
}

/// Wait until `done` holds, polling every millisecond (the wait is part of what is timed).
pub(super) async fn wait_for(
    limit: Duration,
    what: &str,
    done: impl FnMut() -> bool,
) -> Result<(), CliError> {
    msgkit::testing::try_wait_until(what, limit, Duration::from_millis(1), done)
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!(e)))
}

pub(super) async fn consume_with_kit(
    db: &TestDatabase,
    broker: &TestBroker,
    n: usize,
    queue: &str,
    inbox: bool,
    batch: usize,
) -> Result<f64, CliError> {
    publish_with_ids(broker, queue, n).await?;
    let pool = kit_pool(db).await?;
    let handler = Noop::default();
    let consumer = Consumer::new(
        pool.clone(),
        broker.settings(&format!("bench/{queue}")),
        topology(),
        ConsumerConfig {
            prefetch: 500,
            concurrency: 10,
            batch,
            inbox,
            retry: RetryPolicy::default(),
            ..ConsumerConfig::new("bench", queue)
        },
        handler.clone(),
    );
    let stats = consumer.stats();
    let shutdown = Shutdown::new();
    shutdown.spawn(consumer.run(shutdown.clone()));
    wait_for(Duration::from_secs(600), "the consumer to drain", || {
        stats.handled() as usize >= n
    })
    .await?;
    let elapsed = handler
        .first_call
        .get()
        .map_or(Duration::ZERO, Instant::elapsed);
    let rate = n as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    shutdown.trigger();
    shutdown.wait_for_tasks().await;
    pool.close().await;
    Ok(rate)
}

/// `n` kit messages (with ids, which an inbox needs) for `queue`, published confirmed in
/// windows before a consumer stage starts.
async fn publish_with_ids(broker: &TestBroker, queue: &str, n: usize) -> Result<(), CliError> {
    let publisher = ConfirmedPublisher::on_connection(broker.connect().await, &topology())
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    let mut window = Vec::with_capacity(raw::WINDOW);
    for i in 0..n {
        let mut message = OutgoingMessage::event(
            queue,
            &format!("agg-{i}"),
            "bench",
            &serde_json::json!({"n": i}),
        )
        .map_err(|e| CliError::Other(e.into()))?;
        message.routing_key = queue.to_owned();
        window.push(message);
        if window.len() == raw::WINDOW || i + 1 == n {
            publisher
                .publish_batch(&window)
                .await
                .map_err(|e| CliError::Other(e.into()))?;
            window.clear();
        }
    }
    publisher.close().await;
    Ok(())
}

/// A pool with the kit's settings, as the services get them, and the kit's tables.
async fn kit_pool(db: &TestDatabase) -> Result<PgPool, CliError> {
    let pool = msgkit::database::pool_options(12)
        .connect_with(db.options())
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    msgkit::schema::migrate(&pool)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    Ok(pool)
}

/// The ceiling of [`consume_with_kit`] with its inbox in batches: the same messages and the
/// same inbox rows, by plain lapin and sqlx ([`raw_inbox`]).
pub(super) async fn consume_raw_with_inbox(
    db: &TestDatabase,
    broker: &TestBroker,
    n: usize,
    queue: &str,
    batch: usize,
) -> Result<f64, CliError> {
    publish_with_ids(broker, queue, n).await?;
    let pool = kit_pool(db).await?;
    let connection = broker.connect().await;
    let rate =
        raw_inbox::consume_with_inbox(&connection, &pool, queue, "bench-raw", n, batch).await?;
    let _ = connection.close(200, "done".into()).await;
    pool.close().await;
    Ok(rate)
}
