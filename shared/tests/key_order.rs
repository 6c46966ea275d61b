//! Per-key order through retries against the real RabbitMQ and PostgreSQL: a producer numbers
//! each key's events in its outbox, and two replicas of an ordered consumer (concurrency 8
//! each) apply them in that order while one of them waits for its retries, without delaying
//! other keys; a dead-lettered message lets its key go on, and its replay is applied after
//! what the key did since; a number that never comes is skipped after the gap timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use msgkit::consume::{
    Consumer, ConsumerConfig, Context, FailureKind, HandlerError, RetryPolicy, Routes,
};
use msgkit::message::OutgoingMessage;
use msgkit::outbox::{self, OutboxMessage};
use msgkit::service::{Service, ServiceError};
use msgkit::testing::{TestBroker, TestDatabase, service_settings, wait_until_async};
use msgkit::{
    ConfirmedPublisher, EventType, OutboxRelay, RelayConfig, Shutdown, Topology, WorkQueue,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Change {
    n: i64,
    /// Fail transiently on this many attempts first.
    fail_times: u32,
}

const CHANGED: EventType<Change> = EventType::new("ledger.changed").in_sequence("ledger");

/// Applies a change, in the handler's transaction; fails while the change says so, and as
/// poison while its key is listed in `broken`.
async fn apply(mut ctx: Context<'_>, change: Change) -> Result<(), HandlerError> {
    let key = ctx.correlation_id().to_owned();
    let broken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM broken WHERE key = $1)")
        .bind(&key)
        .fetch_one(ctx.tx())
        .await?;
    if broken {
        return Err(HandlerError::new(
            FailureKind::Poison,
            "test::Broken",
            "this key is broken",
        ));
    }
    if ctx.attempt() <= change.fail_times {
        return Err(HandlerError::new(
            FailureKind::Transient,
            "test::NotYet",
            format!("attempt {} fails", ctx.attempt()),
        ));
    }
    sqlx::query("INSERT INTO applied (key, n) VALUES ($1, $2)")
        .bind(&key)
        .bind(change.n)
        .execute(ctx.tx())
        .await?;
    Ok(())
}

fn routes() -> Routes {
    Routes::new().in_key_order().route(CHANGED, apply)
}

fn topology() -> Topology {
    Topology::default().with_queue(WorkQueue::new("ledger").bind(CHANGED))
}

struct Harness {
    pool: PgPool,
    broker: TestBroker,
    shutdown: Shutdown,
    _db: TestDatabase,
}

async fn harness(retry: RetryPolicy, gap_timeout: Duration) -> Harness {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.kit_pool().await;
    for table in [
        "CREATE TABLE applied (id bigserial PRIMARY KEY, key text NOT NULL, n bigint NOT NULL)",
        "CREATE TABLE broken (key text PRIMARY KEY)",
    ] {
        sqlx::query(table).execute(&pool).await.unwrap();
    }
    let h = Harness {
        pool,
        broker,
        shutdown: Shutdown::new(),
        _db: db,
    };
    let relay = OutboxRelay::new(
        h.pool.clone(),
        h.broker.settings("relay"),
        topology(),
        RelayConfig {
            poll_interval: Duration::from_millis(200),
            ..RelayConfig::new("ledger")
        },
    );
    h.shutdown.spawn(relay.run(h.shutdown.child()));
    // Two replicas, each with its own pool, handling eight messages at once.
    for replica in ["a", "b"] {
        let config = ConsumerConfig {
            concurrency: 8,
            retry: retry.clone(),
            key_order_gap_timeout: gap_timeout,
            ..ConsumerConfig::new("ledger", "ledger")
        };
        let pool = h.pool.clone();
        let settings = h.broker.settings(&format!("ledger-{replica}"));
        let consumer = Consumer::new(pool, settings, topology(), config, routes());
        h.shutdown.spawn(consumer.run(h.shutdown.child()));
    }
    h
}

fn retry_after(initial: Duration) -> RetryPolicy {
    RetryPolicy {
        initial_delay: initial,
        multiplier: 2.0,
        max_delay: initial * 4,
        max_attempts: 4,
        jitter: 0.0,
    }
}

impl Harness {
    /// The producer: `key`'s change `n` written to the outbox in its own transaction (the
    /// outbox numbers it in the key's sequence).
    async fn write(&self, key: &str, n: i64, fail_times: u32) {
        let mut tx = self.pool.begin().await.unwrap();
        let message = OutboxMessage::of(CHANGED, key, &Change { n, fail_times }).unwrap();
        outbox::enqueue(&mut tx, &message).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// `key`'s changes as applied, in order.
    async fn applied(&self, key: &str) -> Vec<i64> {
        sqlx::query_scalar("SELECT n FROM applied WHERE key = $1 ORDER BY id")
            .bind(key)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn wait_applied(&self, key: &str, count: usize) -> Vec<i64> {
        wait_until_async(&format!("{count} changes of {key}"), DEADLINE, || async {
            let applied = self.applied(key).await;
            (applied.len() >= count).then_some(applied)
        })
        .await
    }

    /// What the consumer expects next of `key`, and how many of its messages are parked.
    async fn position(&self, key: &str) -> (i64, i64) {
        sqlx::query_as(
            "SELECT next_seq, (SELECT count(*) FROM msgkit_key_parked WHERE key = $1) \
             FROM msgkit_key_order WHERE consumer = 'ledger' AND key = $1",
        )
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn publisher(&self) -> ConfirmedPublisher {
        self.broker.publisher(&topology()).await
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(DEADLINE, self.shutdown.wait_for_tasks())
            .await
            .expect("consumers and relay stop promptly");
    }
}

#[tokio::test]
async fn a_keys_events_are_applied_in_order_through_retries_while_other_keys_flow() {
    // The first change of K fails twice (retried after 1 s, then 2 s), and a gap timeout far
    // shorter than that must not let K's later changes overtake it while it waits.
    let h = harness(
        retry_after(Duration::from_secs(1)),
        Duration::from_millis(300),
    )
    .await;
    h.write("K", 1, 2).await;
    for n in 2..=5 {
        h.write("K", n, 0).await;
    }
    for n in 1..=5 {
        h.write("L", n, 0).await;
    }
    assert_eq!(h.wait_applied("K", 5).await, [1, 2, 3, 4, 5]);
    assert_eq!(h.applied("L").await, [1, 2, 3, 4, 5]);
    let order: Vec<String> = sqlx::query_scalar("SELECT key FROM applied ORDER BY id")
        .fetch_all(&h.pool)
        .await
        .unwrap();
    assert_eq!(
        order[..5],
        ["L", "L", "L", "L", "L"],
        "L is not held up behind K's retries: {order:?}"
    );
    // The producer numbered each key from 1, in the order it wrote them.
    let stamped: Vec<(String, String)> = sqlx::query_as(
        "SELECT aggregate_id, headers->>'x-key-seq' FROM msgkit_outbox \
         WHERE exchange = 'events' AND aggregate_id = 'K' ORDER BY seq",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    let numbers: Vec<&str> = stamped.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(numbers, ["1", "2", "3", "4", "5"]);
    assert_eq!(h.position("K").await, (6, 0), "K expects 6, nothing parked");
    assert_eq!(h.position("L").await, (6, 0));
    h.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_message_lets_its_key_go_on_and_its_replay_comes_after() {
    let h = harness(
        retry_after(Duration::from_millis(100)),
        Duration::from_secs(60),
    )
    .await;
    sqlx::query("INSERT INTO broken (key) VALUES ('K')")
        .execute(&h.pool)
        .await
        .unwrap();
    h.write("K", 1, 0).await;
    let dead = h.broker.take_one("ledger.dlq", DEADLINE).await;
    sqlx::query("DELETE FROM broken")
        .execute(&h.pool)
        .await
        .unwrap();
    h.write("K", 2, 0).await;
    h.write("K", 3, 0).await;
    assert_eq!(h.wait_applied("K", 2).await, [2, 3]);
    // An operator replays the dead letter: it goes after what K has done since.
    let publisher = h.publisher().await;
    let replayed = publisher
        .publish_raw("", "ledger", &dead.delivery.data, dead.delivery.properties)
        .await
        .unwrap();
    assert!(replayed.is_confirmed());
    assert_eq!(h.wait_applied("K", 3).await, [2, 3, 1]);
    assert_eq!(h.position("K").await, (4, 0));
    h.stop().await;
}

#[tokio::test]
async fn a_number_that_never_comes_is_skipped_after_the_gap_timeout() {
    let h = harness(
        retry_after(Duration::from_millis(100)),
        Duration::from_millis(500),
    )
    .await;
    // Number 1 of G was never published to this queue: 2 and 3 wait for it, then go on.
    let publisher = h.publisher().await;
    for n in [2_i64, 3] {
        let change = Change { n, fail_times: 0 };
        let mut message = OutgoingMessage::event(CHANGED.name(), "G", "test", &change).unwrap();
        message
            .headers
            .insert("x-key-sequence".into(), "ledger".into());
        message.headers.insert("x-key-seq".into(), n.to_string());
        assert!(publisher.publish(&message).await.unwrap().is_confirmed());
    }
    assert_eq!(h.wait_applied("G", 2).await, [2, 3]);
    assert_eq!(h.position("G").await, (4, 0));
    h.stop().await;
}

#[tokio::test]
async fn a_service_refuses_key_order_without_a_relay() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let settings = service_settings("ledger", "ledger", &db, broker.settings("ledger"));
    let service = Service::start(settings, topology(), Migrator::DEFAULT)
        .await
        .unwrap()
        .consume(routes())
        .unwrap();
    let refused = tokio::time::timeout(DEADLINE, service.run_until_stopped(Shutdown::new()))
        .await
        .expect("refused at once");
    let Err(error @ ServiceError::KeyOrderNeedsInboxAndRelay { .. }) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert!(error.to_string().contains("with_relay"), "{error}");
}
