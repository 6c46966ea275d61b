//! Stateful consumers against the real RabbitMQ and PostgreSQL: one key's state updates never
//! interleave across replicas and batches, expired entries read as absent, oversized entries
//! are poison; event time comes from the contract, and late events reach the late hook.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use msgkit::clock::Clock;
use msgkit::consume::{Consumer, ConsumerConfig, ConsumerStats, Context, HandlerError, Routes};
use msgkit::message::{OutgoingMessage, header_str};
use msgkit::testing::{TestBroker, TestDatabase, wait_until, wait_until_async};
use msgkit::{ConfirmedPublisher, EventType, Shutdown, Topology, WorkQueue};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Keyed {
    key: String,
    #[serde(default)]
    text: String,
}

const COUNTED: EventType<Keyed> = EventType::new("state.counted");
const REMEMBERED: EventType<Keyed> = EventType::new("state.remembered");
const RECALLED: EventType<Keyed> = EventType::new("state.recalled");

/// A numbered observation that happened `at`.
#[derive(Debug, Serialize, Deserialize)]
struct Tick {
    n: i32,
    at: chrono::DateTime<chrono::Utc>,
}

/// Its event time is in the payload.
const TICKED: EventType<Tick> = EventType::new("state.ticked").with_event_time(|tick| tick.at);
/// Its event time is when it was written (`x-created-at-ms`).
const NOTED: EventType<Tick> = EventType::new("state.noted");

async fn observe(ctx: Context<'_>, tick: Tick) -> Result<(), HandlerError> {
    note(ctx, tick, "on time").await
}

async fn observe_late(ctx: Context<'_>, tick: Tick) -> Result<(), HandlerError> {
    note(ctx, tick, "late").await
}

async fn note(mut ctx: Context<'_>, tick: Tick, outcome: &str) -> Result<(), HandlerError> {
    let event_time = ctx.event_time();
    sqlx::query("INSERT INTO observed (n, outcome, event_time) VALUES ($1, $2, $3)")
        .bind(tick.n)
        .bind(outcome)
        .bind(event_time)
        .execute(ctx.tx())
        .await?;
    Ok(())
}

async fn count(mut ctx: Context<'_>, event: Keyed) -> Result<(), HandlerError> {
    let mut state = ctx.keyed_state();
    let seen: i64 = state.get(&event.key).await?.unwrap_or(0);
    state.put(&event.key, &(seen + 1)).await
}

/// Remembers the text for an hour (by the consumer's clock).
async fn remember(mut ctx: Context<'_>, event: Keyed) -> Result<(), HandlerError> {
    let hour = Duration::from_secs(3600);
    ctx.keyed_state()
        .put_for(&event.key, &event.text, hour)
        .await
}

/// Writes down what the state holds for the key now.
async fn recall(mut ctx: Context<'_>, event: Keyed) -> Result<(), HandlerError> {
    let found: Option<String> = ctx.keyed_state().get(&event.key).await?;
    sqlx::query("INSERT INTO recalled (key, found) VALUES ($1, $2)")
        .bind(&event.key)
        .bind(found)
        .execute(ctx.tx())
        .await?;
    Ok(())
}

fn routes() -> Routes {
    let lateness = Duration::from_secs(5);
    Routes::new()
        .route(COUNTED, count)
        .route(REMEMBERED, remember)
        .route(RECALLED, recall)
        .route_with_lateness(TICKED, lateness, observe, observe_late)
        .route(NOTED, observe)
}

fn topology() -> Topology {
    Topology::default().with_queue(WorkQueue::new("keyed").bind("state.#"))
}

struct Harness {
    pool: PgPool,
    broker: TestBroker,
    publisher: ConfirmedPublisher,
    shutdown: Shutdown,
    _db: TestDatabase,
}

async fn harness() -> Harness {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.kit_pool().await;
    for table in [
        "CREATE TABLE recalled (key text, found text)",
        "CREATE TABLE observed (n int, outcome text, event_time timestamptz)",
    ] {
        sqlx::query(table).execute(&pool).await.unwrap();
    }
    let shutdown = Shutdown::new();
    let publisher = broker.publisher(&topology()).await;
    Harness {
        pool,
        broker,
        publisher,
        shutdown,
        _db: db,
    }
}

impl Harness {
    /// A replica of the `keyed` consumer (every replica has the same consumer name).
    fn start(&self, config: ConsumerConfig) -> Arc<ConsumerStats> {
        let consumer = Consumer::new(
            self.pool.clone(),
            self.broker.settings("keyed"),
            topology(),
            config,
            routes(),
        );
        let stats = consumer.stats();
        self.shutdown.spawn(consumer.run(self.shutdown.child()));
        stats
    }

    async fn publish<P: Serialize>(&self, event: EventType<P>, correlation: &str, payload: &P) {
        let message = OutgoingMessage::event(event.name(), correlation, "test", payload).unwrap();
        assert!(
            self.publisher
                .publish(&message)
                .await
                .unwrap()
                .is_confirmed()
        );
    }

    async fn entries(&self, key: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM msgkit_state WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn recalled(&self, key: &str, count: usize) -> Vec<Option<String>> {
        wait_until_async(&format!("{count} recall(s) of {key}"), DEADLINE, || async {
            let found: Vec<Option<String>> =
                sqlx::query_scalar("SELECT found FROM recalled WHERE key = $1 ORDER BY ctid")
                    .bind(key)
                    .fetch_all(&self.pool)
                    .await
                    .unwrap();
            (found.len() == count).then_some(found)
        })
        .await
    }

    async fn observed(&self, count: usize) -> Vec<(i32, String, chrono::DateTime<chrono::Utc>)> {
        wait_until_async(&format!("{count} observations"), DEADLINE, || async {
            let rows: Vec<(i32, String, chrono::DateTime<chrono::Utc>)> =
                sqlx::query_as("SELECT n, outcome, event_time FROM observed ORDER BY n")
                    .fetch_all(&self.pool)
                    .await
                    .unwrap();
            (rows.len() == count).then_some(rows)
        })
        .await
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(DEADLINE, self.shutdown.wait_for_tasks())
            .await
            .expect("consumers stop promptly");
    }
}

fn config() -> ConsumerConfig {
    ConsumerConfig::new("keyed", "keyed")
}

#[tokio::test]
async fn one_keys_counter_counts_each_of_a_thousand_deliveries_across_two_batching_replicas() {
    const DELIVERIES: u64 = 1_000;
    let h = harness().await;
    for n in 0..DELIVERIES {
        let event = Keyed {
            key: "total".into(),
            text: String::new(),
        };
        // Many correlations: batches run in correlation order, and mix them up.
        h.publish(COUNTED, &format!("c-{}", n % 37), &event).await;
    }
    let replica = || ConsumerConfig {
        batch: 16,
        concurrency: 4,
        prefetch: 64,
        ..config()
    };
    let (first, second) = (h.start(replica()), h.start(replica()));
    wait_until("every delivery handled", DEADLINE, || {
        first.handled() + second.handled() == DELIVERIES
    })
    .await;
    assert!(
        first.handled() > 0 && second.handled() > 0,
        "both replicas took part: {} and {}",
        first.handled(),
        second.handled()
    );
    let total: serde_json::Value = sqlx::query_scalar(
        "SELECT value FROM msgkit_state WHERE consumer = 'keyed' AND key = 'total'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(total, serde_json::json!(DELIVERIES));
    h.stop().await;
}

#[tokio::test]
async fn an_expired_entry_reads_as_absent_before_and_after_the_sweep() {
    let h = harness().await;
    let clock = Clock::system();
    // The sweep runs when a consumer starts, then hourly: nothing deletes the entry until a
    // second consumer starts.
    let first = ConsumerConfig {
        clock: clock.clone(),
        concurrency: 1,
        ..config()
    };
    h.start(first.clone());
    let event = |key: &str| Keyed {
        key: key.into(),
        text: "remember me".into(),
    };
    h.publish(REMEMBERED, "k", &event("k")).await;
    h.publish(RECALLED, "k", &event("k")).await;
    assert_eq!(
        h.recalled("k", 1).await,
        [Some("remember me".to_owned())],
        "alive within its hour"
    );

    clock.advance(Duration::from_secs(2 * 3600));
    h.publish(RECALLED, "k", &event("k")).await;
    assert_eq!(h.recalled("k", 2).await[1], None, "expired, not yet swept");
    assert_eq!(h.entries("k").await, 1, "still stored: no sweep ran");

    h.start(first);
    wait_until_async(
        "the sweep to delete the expired entry",
        DEADLINE,
        || async { (h.entries("k").await == 0).then_some(()) },
    )
    .await;
    h.publish(RECALLED, "k", &event("k")).await;
    assert_eq!(h.recalled("k", 3).await[2], None, "swept");
    h.stop().await;
}

#[tokio::test]
async fn an_entry_above_the_size_limit_is_dead_lettered_as_poison_with_the_reason() {
    let h = harness().await;
    h.start(ConsumerConfig {
        state_entry_limit: 100,
        ..config()
    });
    let big = Keyed {
        key: "big".into(),
        text: "x".repeat(1_000),
    };
    h.publish(REMEMBERED, "big", &big).await;
    let dead = h.broker.take_one("keyed.dlq", DEADLINE).await;
    let props = &dead.delivery.properties;
    assert_eq!(header_str(props, "x-failure-reason"), Some("poison"));
    assert_eq!(
        header_str(props, "x-exception-type"),
        Some(msgkit::state::ENTRY_TOO_LARGE)
    );
    let reason = header_str(props, "x-exception-message").unwrap();
    assert!(
        reason.contains("\"big\" is 1002 bytes of JSON, above the limit of 100"),
        "{reason}"
    );
    assert_eq!(h.entries("big").await, 0, "nothing stored");
    h.stop().await;
}

#[tokio::test]
async fn an_event_later_than_its_keys_watermark_minus_the_lateness_reaches_the_late_hook() {
    let h = harness().await;
    // One at a time, so the events are judged in the order they were published.
    let stats = h.start(ConsumerConfig {
        concurrency: 1,
        ..config()
    });
    let t = chrono::Utc::now();
    let s = chrono::Duration::seconds;
    for (n, key, at) in [
        (1, "k", t),
        (2, "k", t - s(3)),   // within 5 s of the watermark (t)
        (3, "k", t - s(10)),  // 10 s behind: late
        (4, "k", t + s(1)),   // the watermark moves on
        (5, "k2", t - s(60)), // another key: its first event is never late
    ] {
        h.publish(TICKED, key, &Tick { n, at }).await;
    }
    let outcomes: Vec<(i32, String)> = h
        .observed(5)
        .await
        .into_iter()
        .map(|(n, outcome, _)| (n, outcome))
        .collect();
    let expected = [
        (1, "on time"),
        (2, "on time"),
        (3, "late"),
        (4, "on time"),
        (5, "on time"),
    ];
    assert_eq!(outcomes, expected.map(|(n, o)| (n, o.to_owned())));
    let late = msgkit::testing::metric_value(
        &stats.render_metrics(),
        "msgkit_late_events_total",
        &[("queue", "keyed"), ("type", "state.ticked")],
    );
    assert_eq!(late, Some(1.0));
    let watermark: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT watermark FROM msgkit_watermarks WHERE key = 'k'")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(watermark.timestamp_micros(), (t + s(1)).timestamp_micros());
    h.stop().await;
}

#[tokio::test]
async fn the_event_time_comes_from_the_payload_if_the_contract_says_so_else_from_its_creation() {
    let h = harness().await;
    h.start(config());
    let happened = chrono::Utc::now() - chrono::Duration::hours(5);
    h.publish(TICKED, "k", &Tick { n: 1, at: happened }).await;
    let mut noted =
        OutgoingMessage::event(NOTED.name(), "k", "test", &Tick { n: 2, at: happened }).unwrap();
    let written = chrono::Utc::now() - chrono::Duration::minutes(7);
    noted.created_at = written;
    assert!(h.publisher.publish(&noted).await.unwrap().is_confirmed());
    let times: Vec<i64> = h
        .observed(2)
        .await
        .into_iter()
        .map(|(_, _, at)| at.timestamp_millis())
        .collect();
    assert_eq!(
        times,
        [happened.timestamp_millis(), written.timestamp_millis()]
    );
    h.stop().await;
}
