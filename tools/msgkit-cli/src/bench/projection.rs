//! The projection stage: catching up with the event archive. N events are written once into
//! the archive (a stream) of a vhost of their own; each repetition then reads that same
//! stream from its first offset three times, into a fresh schema each time:
//! - the ceiling: the fastest plain lapin + sqlx code for the work (a stream consumer whose
//!   decoded events a writer applies in batches, one transaction per batch with the offset in
//!   it, while the consumer keeps reading), the batch's statements sent in one round trip;
//! - the same with one round trip per statement (bound parameters, as an apply function
//!   runs them): what sqlx, which does not pipeline, allows a projection;
//! - the kit: a [`Service`] running a [`Projection`] with the same upsert, as services run it.
//!
//! Each is timed from its first event (delivery, apply) to the commit of the last one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use msgkit::message::OutgoingMessage;
use msgkit::projection::{Context, Projection, ProjectionError};
use msgkit::service::{Service, ServiceSettings};
use msgkit::testing::{TestBroker, TestDatabase};
use msgkit::topology::Archive;
use msgkit::{EventType, Shutdown, Topology};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::kit::wait_for;
use crate::CliError;

/// The upsert every side runs once per event.
const UPSERT: &str = "INSERT INTO totals (key, sum, events) VALUES ($1, $2, 1)
     ON CONFLICT (key) DO UPDATE SET sum = totals.sum + $2, events = totals.events + 1";
/// The projection's table, created by the kit's migration and by the ceiling alike.
const TABLE: &str = include_str!("projection_migrations/20260101000000_bench_totals.sql");
/// Keys the events spread over: a row is updated many times, as a customer's balance is.
const KEYS: usize = 1000;
/// Deliveries the ceiling's consumer may have unacknowledged, and the most events it applies
/// in one transaction: tried with 2,000/500, 4,000/1,000, 8,000/2,000 and 20,000/5,000 (see
/// docs/performance.md); from 8,000/2,000 on the rate is flat, and the kit's default is
/// 20,000/5,000, so the ceiling gets no smaller batch than the kit.
const CEILING_PREFETCH: u16 = 20000;
const CEILING_BATCH: usize = 5000;
const LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Serialize, Deserialize)]
struct Added {
    key: String,
    amount: i64,
}

const ADDED: EventType<Added> = EventType::new("bench.added");

/// When the kit's projection applied its first event of the repetition, and how many it has
/// applied: apply functions are plain functions, so the bench's probe is process-wide (one
/// projection runs at a time).
static FIRST_APPLY: Mutex<Option<Instant>> = Mutex::new(None);
static APPLIED: AtomicUsize = AtomicUsize::new(0);

async fn on_added(mut ctx: Context<'_>, added: Added) -> Result<(), ProjectionError> {
    if APPLIED.fetch_add(1, Ordering::Relaxed) == 0
        && let Ok(mut first) = FIRST_APPLY.lock()
    {
        first.get_or_insert_with(Instant::now);
    }
    sqlx::query(UPSERT)
        .bind(&added.key)
        .bind(added.amount)
        .execute(ctx.tx())
        .await?;
    Ok(())
}

/// The archive with its N events, read again by every repetition.
pub(super) struct ProjectionWorkload {
    broker: TestBroker,
    archive: Archive,
    n: usize,
}

/// One repetition's rates, events/s.
pub(super) struct Round {
    /// The ceiling: a batch's statements in one round trip.
    pub(super) ceiling: f64,
    /// The plain code with one round trip per statement.
    pub(super) bound: f64,
    pub(super) kit: f64,
}

/// How the ceiling sends a batch's statements to PostgreSQL.
#[derive(Clone, Copy, Debug)]
enum Statements {
    /// All of them, with `BEGIN` and `COMMIT`, as one simple-protocol query: one round trip
    /// per batch (the values are written into the SQL; they are the bench's own).
    OneRoundTrip,
    /// Each one prepared with bound parameters, awaited before the next (sqlx does not
    /// pipeline): one round trip per event, as a projection's apply function does.
    Bound,
}

fn other(e: impl Into<anyhow::Error>) -> CliError {
    CliError::Other(e.into())
}

impl ProjectionWorkload {
    /// A fresh vhost whose archive holds `n` events over [`KEYS`] keys, published directly
    /// into the stream (as relays would).
    pub(super) async fn prepare(n: usize) -> Result<Self, CliError> {
        let broker = TestBroker::create().await;
        let archive = Archive::default();
        let publisher = broker
            .publisher(&Topology::default().with_archive(archive.clone()))
            .await;
        let mut window = Vec::with_capacity(super::raw::WINDOW);
        for i in 0..n {
            let key = format!("k{}", i % KEYS);
            let added = Added {
                key: key.clone(),
                amount: i64::try_from(i).unwrap_or(i64::MAX),
            };
            let mut message =
                OutgoingMessage::event(ADDED.name(), &key, "bench", &added).map_err(other)?;
            message.exchange = String::new();
            message.routing_key = archive.name.clone();
            window.push(message);
            if window.len() == super::raw::WINDOW || i + 1 == n {
                let outcomes = publisher.publish_batch(&window).await.map_err(other)?;
                if let Some(failed) = outcomes.iter().find(|o| !o.is_confirmed()) {
                    return Err(other(anyhow::anyhow!(
                        "an event was not archived: {failed:?}"
                    )));
                }
                window.clear();
            }
        }
        publisher.close().await;
        Ok(Self { broker, archive, n })
    }

    /// Repetition `round`: the ceiling, then the kit, each into a fresh schema.
    pub(super) async fn round(&self, db: &TestDatabase, round: usize) -> Result<Round, CliError> {
        eprintln!("bench: raw stream catch-up ({} events) ...", self.n);
        let ceiling = self
            .ceiling(
                db,
                &format!("bench_raw_projection_{round}"),
                Statements::OneRoundTrip,
            )
            .await?;
        eprintln!("bench: raw stream catch-up, a round trip per event ...");
        let bound = self
            .ceiling(
                db,
                &format!("bench_bound_projection_{round}"),
                Statements::Bound,
            )
            .await?;
        eprintln!("bench: kit projection catch-up ...");
        let kit = self
            .kit(db, &format!("bench_kit_projection_{round}"))
            .await?;
        Ok(Round {
            ceiling,
            bound,
            kit,
        })
    }

    /// The ceiling: a consumer task decodes deliveries into a channel while this task applies
    /// whatever has arrived (up to [`CEILING_BATCH`]) in one transaction with the offset,
    /// then acknowledges the batch with one `multiple` ack. The next batch's deliveries are
    /// read and decoded while the previous one commits.
    async fn ceiling(
        &self,
        db: &TestDatabase,
        schema: &str,
        statements: Statements,
    ) -> Result<f64, CliError> {
        let pool = db.settings(schema).connect().await.map_err(other)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "{TABLE}; CREATE TABLE checkpoint (name text PRIMARY KEY, position bigint);
             INSERT INTO checkpoint VALUES ('bench', NULL);"
        )))
        .execute(&pool)
        .await
        .map_err(other)?;
        let connection = self
            .broker
            .settings("bench/projection-ceiling")
            .connect()
            .await
            .map_err(other)?;
        let channel = connection.create_channel().await.map_err(other)?;
        channel
            .basic_qos(CEILING_PREFETCH, BasicQosOptions { global: false })
            .await
            .map_err(other)?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString(LongString::from("first")),
        );
        let consumer = channel
            .basic_consume(
                self.archive.name.as_str().into(),
                "bench-ceiling".into(),
                BasicConsumeOptions::default(),
                arguments,
            )
            .await
            .map_err(other)?;
        // Bounded by the prefetch: the broker sends no more than that unacknowledged.
        let (events, mut arrived) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_stream(consumer, events, self.n));
        let mut started = None;
        let mut applied = 0;
        let mut batch = Vec::with_capacity(CEILING_BATCH);
        while applied < self.n {
            let Some(first) = arrived.recv().await else {
                break;
            };
            started.get_or_insert(first.read_at);
            batch.push(first);
            while batch.len() < CEILING_BATCH
                && let Ok(event) = arrived.try_recv()
            {
                batch.push(event);
            }
            match statements {
                Statements::OneRoundTrip => apply_in_one_round_trip(&pool, &batch).await?,
                Statements::Bound => apply_bound(&pool, &batch).await?,
            }
            if let Some(last) = batch.last() {
                last.acker
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .map_err(other)?;
            }
            applied += batch.len();
            batch.clear();
        }
        let elapsed = started.map_or(Duration::ZERO, |s| s.elapsed());
        reader.await.map_err(other)??;
        let _ = channel.close(200, "done".into()).await;
        let _ = connection.close(200, "done".into()).await;
        pool.close().await;
        if applied < self.n {
            return Err(other(anyhow::anyhow!(
                "the raw stream consumer applied {applied} of {}",
                self.n
            )));
        }
        Ok(self.n as f64 / elapsed.as_secs_f64().max(f64::EPSILON))
    }

    /// The kit: a service projecting the archive into a fresh schema with the default
    /// projection settings, until the checkpoint has all N events.
    async fn kit(&self, db: &TestDatabase, schema: &str) -> Result<f64, CliError> {
        APPLIED.store(0, Ordering::Relaxed);
        if let Ok(mut first) = FIRST_APPLY.lock() {
            *first = None;
        }
        let mut settings =
            ServiceSettings::from_source(msgkit::testing::test_config([]), "bench", 0, schema)
                .map_err(other)?;
        settings.database = db.settings(schema);
        settings.broker = self.broker.settings("bench/projection");
        settings.archive = Some(self.archive.clone());
        let projection = Projection::new(
            "totals",
            sqlx::migrate!("./src/bench/projection_migrations"),
        )
        .apply(ADDED, on_added);
        let service = Service::start(
            settings,
            Topology::default(),
            sqlx::migrate::Migrator::DEFAULT,
        )
        .await
        .map_err(other)?
        .project(projection)
        .await
        .map_err(other)?;
        let pool = service.pool().clone();
        let shutdown = Shutdown::new();
        shutdown.spawn(service.run_until_stopped(shutdown.child()));
        let n = self.n;
        let done = async {
            // The last event applied, then the commit of its batch (the checkpoint's count).
            wait_for(LIMIT, "the projection to apply every event", || {
                APPLIED.load(Ordering::Relaxed) >= n
            })
            .await?;
            wait_for_checkpoint(&pool, n).await
        };
        let outcome = done.await;
        let elapsed = FIRST_APPLY
            .lock()
            .ok()
            .and_then(|first| *first)
            .map_or(Duration::ZERO, |first| first.elapsed());
        shutdown.trigger();
        shutdown.wait_for_tasks().await;
        outcome?;
        Ok(self.n as f64 / elapsed.as_secs_f64().max(f64::EPSILON))
    }
}

/// A decoded event and what acknowledges it (and, with `multiple`, all before it).
struct Decoded {
    offset: i64,
    added: Added,
    acker: Acker,
    read_at: Instant,
}

/// Read `n` deliveries, decoding each one, into `events`.
async fn read_stream(
    mut consumer: lapin::Consumer,
    events: mpsc::UnboundedSender<Decoded>,
    n: usize,
) -> Result<(), CliError> {
    for _ in 0..n {
        let delivery = consumer
            .next()
            .await
            .ok_or_else(|| other(anyhow::anyhow!("the stream consumer ended")))?
            .map_err(other)?;
        let read_at = Instant::now();
        let offset = msgkit::message::header_i64(&delivery.properties, "x-stream-offset")
            .ok_or_else(|| other(anyhow::anyhow!("a delivery without x-stream-offset")))?;
        let is_added = delivery
            .properties
            .kind()
            .as_ref()
            .is_some_and(|kind| kind.as_str() == ADDED.name());
        if !is_added {
            continue;
        }
        let added: Added = serde_json::from_slice(&delivery.data).map_err(other)?;
        let decoded = Decoded {
            offset,
            added,
            acker: delivery.acker,
            read_at,
        };
        if events.send(decoded).is_err() {
            break;
        }
    }
    Ok(())
}

/// One transaction, sent as one query: the upsert of every event, then the offset reached.
async fn apply_in_one_round_trip(pool: &PgPool, batch: &[Decoded]) -> Result<(), CliError> {
    use std::fmt::Write;
    let Some(last) = batch.last() else {
        return Ok(());
    };
    let mut sql = String::with_capacity(batch.len() * 170 + 100);
    sql.push_str("BEGIN;");
    for event in batch {
        let key = event.added.key.replace('\'', "''");
        let amount = event.added.amount;
        let _ = write!(
            sql,
            "INSERT INTO totals (key, sum, events) VALUES ('{key}', {amount}, 1)
             ON CONFLICT (key) DO UPDATE SET sum = totals.sum + {amount}, events = totals.events + 1;"
        );
    }
    let _ = write!(
        sql,
        "UPDATE checkpoint SET position = {} WHERE name = 'bench'; COMMIT;",
        last.offset
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .map_err(other)?;
    Ok(())
}

/// One transaction: the upsert of every event, then the offset reached, a statement at a time.
async fn apply_bound(pool: &PgPool, batch: &[Decoded]) -> Result<(), CliError> {
    let Some(last) = batch.last() else {
        return Ok(());
    };
    let mut tx = pool.begin().await.map_err(other)?;
    for event in batch {
        sqlx::query(UPSERT)
            .bind(&event.added.key)
            .bind(event.added.amount)
            .execute(&mut *tx)
            .await
            .map_err(other)?;
    }
    sqlx::query("UPDATE checkpoint SET position = $1 WHERE name = 'bench'")
        .bind(last.offset)
        .execute(&mut *tx)
        .await
        .map_err(other)?;
    tx.commit().await.map_err(other)
}

/// Wait until the projection's checkpoint counts `n` applied events, polling every
/// millisecond (the wait is part of what is timed).
async fn wait_for_checkpoint(pool: &PgPool, n: usize) -> Result<(), CliError> {
    let want = i64::try_from(n).unwrap_or(i64::MAX);
    let deadline = Instant::now() + LIMIT;
    loop {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT applied FROM msgkit_projections WHERE name = 'totals'")
                .fetch_optional(pool)
                .await
                .map_err(other)?;
        if applied.is_some_and(|applied| applied >= want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(other(anyhow::anyhow!(
                "the projection's checkpoint has {applied:?} of {n} events after {LIMIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

    use super::*;

    async fn totals(pool: &PgPool, schema: &str) -> Vec<(String, i64, i64)> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT key, sum, events FROM {schema}.totals ORDER BY key"
        )))
        .fetch_all(pool)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn the_ceiling_and_the_kit_build_the_same_totals_from_the_same_stream() {
        let db = TestDatabase::create().await;
        let workload = ProjectionWorkload::prepare(3000).await.unwrap();
        let round = workload.round(&db, 1).await.unwrap();
        assert!(round.ceiling > 0.0 && round.bound > 0.0 && round.kit > 0.0);

        let pool = db.pool().await;
        let raw = totals(&pool, "bench_raw_projection_1").await;
        let bound = totals(&pool, "bench_bound_projection_1").await;
        let kit = totals(&pool, "bench_kit_projection_1").await;
        assert_eq!(raw.len(), KEYS, "every key has a row");
        assert_eq!(raw.iter().map(|(_, _, events)| events).sum::<i64>(), 3000);
        assert_eq!(raw, kit, "the same work on both sides");
        assert_eq!(bound, kit, "the same work on both sides");
    }
}
