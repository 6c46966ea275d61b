//! The consumer runtime against the real RabbitMQ and PostgreSQL.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use lapin::options::{BasicConsumeOptions, BasicGetOptions};
use lapin::types::FieldTable;
use msgkit::consume::{
    Consumer, ConsumerConfig, ConsumerStats, FailureKind, Handler, HandlerError, IncomingMessage,
    RetryPolicy,
};
use msgkit::message::{ATTEMPT_HEADER, OutgoingMessage, header_i64, header_str};
use msgkit::testing::{TestBroker, TestDatabase, metric_value, wait_until, wait_until_async};
use msgkit::{ConfirmedPublisher, Shutdown, Topology, WorkQueue};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

const DEADLINE: Duration = Duration::from_secs(30);

/// Applies `{"key": ..}` messages by inserting an `effects` row; fails or panics on the first
/// attempts when the body asks for it; remembers when each attempt started.
#[derive(Clone, Default)]
struct Recording {
    attempts: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
    /// When set, handling waits until the gate opens: messages stay in flight on demand.
    gate: Option<tokio::sync::watch::Receiver<bool>>,
    /// Like `gate`, for the messages whose body says `"hold": true` only.
    hold: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Recording {
    fn attempt_times(&self, key: &str) -> Vec<Instant> {
        self.attempts
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }
}

impl Handler for Recording {
    async fn handle(
        &self,
        message: &IncomingMessage,
        tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        let body: Value = message.decode()?;
        let key = body["key"].as_str().unwrap_or_default().to_owned();
        self.attempts
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .push(Instant::now());
        let attempt = u64::from(message.attempt());
        if attempt <= body["fail_attempts"].as_u64().unwrap_or(0) {
            return Err(HandlerError::new(
                FailureKind::Transient,
                "test::Flaky",
                format!("attempt {attempt} fails"),
            ));
        }
        if attempt <= body["panic_attempts"].as_u64().unwrap_or(0) {
            panic!("handler panics on attempt {attempt}");
        }
        if body["reject"].as_bool() == Some(true) {
            return Err(HandlerError::new(
                FailureKind::Poison,
                "test::Rejected",
                "rejected by the handler",
            ));
        }
        if let Some(gate) = &self.gate {
            let _ = gate.clone().wait_for(|open| *open).await;
        }
        if let Some(hold) = self.hold.as_ref().filter(|_| body["hold"] == true) {
            let _ = hold.clone().wait_for(|open| *open).await;
        }
        // Rows shared with other messages (a product's stock), locked in one order per message.
        for resource in shared_resources(&body) {
            lock(tx, &resource).await?;
            work_under_lock(tx).await?;
        }
        // An entity's row lock, held until commit (as a handler updating its entity's row).
        if let Some(entity) = body["lock"].as_str() {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(entity)
                .execute(&mut *tx)
                .await?;
            work_under_lock(tx).await?;
        }
        sqlx::query("INSERT INTO effects (key) VALUES ($1)")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
    /// Takes the shared locks of the whole batch at once, in one order (as inventory locks its
    /// batch's stock rows).
    async fn before_batch(
        &self,
        messages: &[&IncomingMessage],
        tx: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        let bodies: Vec<Value> = messages
            .iter()
            .filter_map(|message| message.decode::<Value>().ok())
            .collect();
        if bodies.iter().any(|body| body["fail_batch"] == true) {
            return Err(HandlerError::new(
                FailureKind::Transient,
                "test::BatchRefused",
                "before_batch fails for this batch",
            ));
        }
        let mut resources: Vec<String> = bodies.iter().flat_map(shared_resources).collect();
        resources.sort();
        resources.dedup();
        for resource in resources {
            lock(tx, &resource).await?;
        }
        Ok(())
    }
}

/// The resources a test message shares with others (`"shared": [..]`), sorted.
fn shared_resources(body: &Value) -> Vec<String> {
    let mut resources: Vec<String> = body["shared"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    resources.sort();
    resources
}

/// A handler's statements after it locks its rows (reads, writes): the lock is held across
/// a few round trips while other transactions run.
async fn work_under_lock(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    for _ in 0..4 {
        sqlx::query("SELECT count(*) FROM effects")
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// A lock on `resource` until the transaction ends (re-entrant within it).
async fn lock(tx: &mut PgConnection, resource: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(resource)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

struct Harness {
    pool: PgPool,
    broker: TestBroker,
    publisher: ConfirmedPublisher,
    topology: Topology,
    shutdown: Shutdown,
    _db: TestDatabase,
}

fn topology() -> Topology {
    Topology::default()
        .with_queue(WorkQueue::new("work").bind("test.#"))
        .with_queue(WorkQueue::new("slow").bind("slow.#"))
        // Queues of one test each: their metrics are not shared with other tests even when
        // the tests share a process (metrics are per process).
        .with_queue(WorkQueue::new("batched").bind("batched.#"))
        .with_queue(WorkQueue::new("batch-failure").bind("batch-failure.#"))
        .with_queue(WorkQueue::new("shared-locks").bind("shared-locks.#"))
        .with_queue(WorkQueue::new("batch-prepare").bind("batch-prepare.#"))
        .with_queue(
            WorkQueue::new("fragile")
                .bind("fragile.#")
                .delivery_limit(2),
        )
}

async fn harness() -> Harness {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.kit_pool().await;
    // `tx` tells which effects were committed together.
    sqlx::query(
        "CREATE TABLE effects (key text NOT NULL, tx bigint NOT NULL DEFAULT txid_current())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let topology = topology();
    let publisher = broker.publisher(&topology).await;
    Harness {
        pool,
        broker,
        publisher,
        topology,
        shutdown: Shutdown::new(),
        _db: db,
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(50),
        multiplier: 2.0,
        max_delay: Duration::from_secs(1),
        max_attempts: 4,
        jitter: 0.1,
    }
}

impl Harness {
    fn start(&self, queue: &str, handler: Recording, retry: RetryPolicy) -> Arc<ConsumerStats> {
        self.start_with(
            ConsumerConfig {
                retry,
                ..ConsumerConfig::new("test-service", queue)
            },
            handler,
        )
    }

    fn start_with(&self, config: ConsumerConfig, handler: Recording) -> Arc<ConsumerStats> {
        let queue = config.queue.clone();
        let consumer = Consumer::new(
            self.pool.clone(),
            self.broker.settings(&format!("consumer-{queue}")),
            self.topology.clone(),
            config,
            handler,
        );
        let stats = consumer.stats();
        self.shutdown.spawn(consumer.run(self.shutdown.child()));
        stats
    }

    fn message(routing_key: &str, body: &Value) -> OutgoingMessage {
        OutgoingMessage {
            message_id: uuid::Uuid::now_v7().to_string(),
            message_type: "test.happened".into(),
            exchange: "events".into(),
            routing_key: routing_key.into(),
            correlation_id: "agg-1".into(),
            app_id: "test".into(),
            created_at: Utc::now(),
            body: serde_json::to_vec(body).unwrap(),
            headers: BTreeMap::from([(
                "traceparent".to_owned(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            )]),
            attempt: 1,
        }
    }

    async fn publish(&self, message: &OutgoingMessage) {
        let outcome = self.publisher.publish(message).await.unwrap();
        assert!(outcome.is_confirmed(), "{outcome:?}");
    }

    async fn effects(&self, key: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM effects WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn wait_for_effects(&self, key: &str, count: i64) {
        wait_until_async(&format!("{count} effect(s) of {key}"), DEADLINE, || async {
            (self.effects(key).await == count).then_some(())
        })
        .await;
    }

    /// Take the one message from `queue` (failing if there is none within the deadline).
    async fn take_one(&self, queue: &str) -> lapin::message::BasicGetMessage {
        let connection = self.broker.connect().await;
        let channel = connection.create_channel().await.unwrap();
        wait_until_async(&format!("a message in {queue}"), DEADLINE, || {
            let channel = channel.clone();
            async move {
                channel
                    .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
            }
        })
        .await
    }

    /// Wait until `queue` holds nothing ready or unacked, per the management API (so while
    /// its consumer runs, not only once it has closed its channel).
    async fn wait_until_everything_acked(&self, queue: &str) {
        wait_until_async(
            &format!("nothing ready or unacked in {queue}"),
            DEADLINE,
            || async { (self.broker.queue_totals(queue).await == Some((0, 0))).then_some(()) },
        )
        .await;
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(DEADLINE, self.shutdown.wait_for_tasks())
            .await
            .expect("consumers stop promptly");
    }
}

#[tokio::test]
async fn a_handled_message_is_applied_once_and_acked() {
    let h = harness().await;
    let stats = h.start("work", Recording::default(), fast_retry());
    h.publish(&Harness::message("test.ok", &json!({"key": "a"})))
        .await;
    h.wait_for_effects("a", 1).await;
    wait_until("the ack to be counted", DEADLINE, || stats.handled() == 1).await;
    wait_until_async("the queue to be empty", DEADLINE, || async {
        (h.broker.queue_depth("work").await == Some(0)).then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn the_same_message_delivered_twice_is_applied_once() {
    let h = harness().await;
    let stats = h.start("work", Recording::default(), fast_retry());
    let message = Harness::message("test.dup", &json!({"key": "dup"}));
    h.publish(&message).await;
    h.publish(&message).await;
    wait_until("one handled and one duplicate", DEADLINE, || {
        stats.handled() == 1 && stats.duplicates() == 1
    })
    .await;
    assert_eq!(h.effects("dup").await, 1);
    h.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_with_exponentially_growing_delays() {
    let h = harness().await;
    let handler = Recording::default();
    let policy = RetryPolicy {
        initial_delay: Duration::from_millis(200),
        multiplier: 2.0,
        max_delay: Duration::from_secs(10),
        max_attempts: 5,
        jitter: 0.1,
    };
    let stats = h.start("work", handler.clone(), policy.clone());
    h.publish(&Harness::message(
        "test.flaky",
        &json!({"key": "flaky", "fail_attempts": 3}),
    ))
    .await;
    h.wait_for_effects("flaky", 1).await;

    let times = handler.attempt_times("flaky");
    assert_eq!(times.len(), 4, "three failures, then success");
    for (n, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let nominal = policy.nominal_delay(n as u32 + 1);
        // Jitter bounds, minus the shortest delay tier (a retry may be released up to 25 ms
        // early), plus the hops through the broker.
        let low = nominal.mul_f64(1.0 - policy.jitter) - Duration::from_millis(25);
        let high = nominal.mul_f64(1.0 + policy.jitter) + Duration::from_millis(300);
        assert!(
            gap >= low && gap <= high,
            "gap {n}: {gap:?} not within [{low:?}, {high:?}]"
        );
    }
    assert_eq!(stats.retried(), 3);
    h.stop().await;
}

#[tokio::test]
async fn a_message_retried_with_a_long_delay_does_not_hold_back_one_with_a_short_delay() {
    let h = harness().await;
    let slow = Recording::default();
    let fast = Recording::default();
    h.start(
        "slow",
        slow.clone(),
        RetryPolicy {
            initial_delay: Duration::from_secs(20),
            jitter: 0.0,
            ..fast_retry()
        },
    );
    h.start(
        "work",
        fast.clone(),
        RetryPolicy {
            initial_delay: Duration::from_millis(100),
            jitter: 0.0,
            ..fast_retry()
        },
    );
    // The long wait enters the delay tiers first.
    h.publish(&Harness::message(
        "slow.one",
        &json!({"key": "long", "fail_attempts": 1}),
    ))
    .await;
    wait_until("the long retry to be scheduled", DEADLINE, || {
        slow.attempt_times("long").len() == 1
    })
    .await;
    let started = Instant::now();
    h.publish(&Harness::message(
        "test.one",
        &json!({"key": "short", "fail_attempts": 1}),
    ))
    .await;
    h.wait_for_effects("short", 1).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "short retry took {:?}",
        started.elapsed()
    );
    assert_eq!(
        h.effects("long").await,
        0,
        "the long retry is still waiting"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_ends_in_the_dlq_with_every_failure_header() {
    let h = harness().await;
    let stats = h.start("work", Recording::default(), fast_retry());
    let message = Harness::message(
        "test.doomed",
        &json!({"key": "doomed", "fail_attempts": 99}),
    );
    h.publish(&message).await;
    let dead = h.take_one("work.dlq").await;
    let props = &dead.delivery.properties;
    let header = |name: &str| header_str(props, name).map(str::to_owned);
    assert_eq!(
        props.message_id().as_ref().unwrap().as_str(),
        message.message_id
    );
    assert_eq!(
        header("x-failure-reason").as_deref(),
        Some("retries-exhausted")
    );
    assert_eq!(header("x-exception-type").as_deref(), Some("test::Flaky"));
    assert_eq!(
        header("x-exception-message").as_deref(),
        Some("attempt 4 fails")
    );
    assert!(header("x-exception-detail").is_some());
    assert_eq!(header("x-failed-service").as_deref(), Some("test-service"));
    assert!(chrono::DateTime::parse_from_rfc3339(&header("x-failed-at").unwrap()).is_ok());
    assert_eq!(header("x-original-exchange").as_deref(), Some("events"));
    assert_eq!(
        header("x-original-routing-key").as_deref(),
        Some("test.doomed")
    );
    assert_eq!(header("x-original-queue").as_deref(), Some("work"));
    assert_eq!(header_i64(props, ATTEMPT_HEADER), Some(4));
    assert_eq!(
        header("traceparent"),
        message.headers.get("traceparent").cloned()
    );
    assert_eq!(props.kind().as_ref().unwrap().as_str(), "test.happened");
    assert_eq!(
        serde_json::from_slice::<Value>(&dead.delivery.data).unwrap()["key"],
        "doomed"
    );
    assert!(header("x-retry-at").is_none());
    wait_until("the dead letter to be counted", DEADLINE, || {
        stats.dead_lettered() == 1
    })
    .await;
    assert_eq!(h.effects("doomed").await, 0);
    h.stop().await;
}

#[tokio::test]
async fn poison_goes_to_the_dlq_after_one_attempt() {
    let h = harness().await;
    let handler = Recording::default();
    let stats = h.start("work", handler.clone(), fast_retry());
    let mut undecodable = Harness::message("test.poison", &json!({}));
    undecodable.body = b"{not json".to_vec();
    h.publish(&undecodable).await;
    let dead = h.take_one("work.dlq").await;
    let props = &dead.delivery.properties;
    assert_eq!(header_str(props, "x-failure-reason"), Some("poison"));
    assert_eq!(header_i64(props, ATTEMPT_HEADER), Some(1));
    assert!(
        header_str(props, "x-exception-type")
            .unwrap()
            .contains("UndecodableBody")
    );

    h.publish(&Harness::message(
        "test.rejected",
        &json!({"key": "r", "reject": true}),
    ))
    .await;
    let dead = h.take_one("work.dlq").await;
    assert_eq!(
        header_str(&dead.delivery.properties, "x-failure-reason"),
        Some("poison")
    );
    assert_eq!(
        handler.attempt_times("r").len(),
        1,
        "poison is never retried"
    );
    wait_until("both counted as poison", DEADLINE, || stats.poison() == 2).await;
    h.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_counts_as_a_failure_and_is_retried() {
    let h = harness().await;
    let stats = h.start("work", Recording::default(), fast_retry());
    h.publish(&Harness::message(
        "test.panic",
        &json!({"key": "p", "panic_attempts": 2}),
    ))
    .await;
    h.wait_for_effects("p", 1).await;
    assert_eq!(stats.retried(), 2);
    h.stop().await;
}

#[tokio::test]
async fn a_crash_loop_is_bounded_by_the_delivery_limit_and_ends_in_the_dlq() {
    let h = harness().await;
    // A consumer that "crashes" on every delivery: it takes the message and dies (connection
    // closed without an ack), like a handler that kills its process.
    h.publish(&Harness::message("fragile.boom", &json!({"key": "boom"})))
        .await;
    for _ in 0..3 {
        let connection = h.broker.connect().await;
        let channel = connection.create_channel().await.unwrap();
        let mut consumer = channel
            .basic_consume(
                "fragile".into(),
                "crasher".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        use futures_util::StreamExt;
        let delivery = tokio::time::timeout(DEADLINE, consumer.next()).await;
        drop(delivery);
        connection
            .close(320, "simulated crash".into())
            .await
            .unwrap();
    }
    let dead = h.take_one("fragile.dlq").await;
    assert_eq!(
        serde_json::from_slice::<Value>(&dead.delivery.data).unwrap()["key"],
        "boom"
    );
    assert_eq!(h.broker.queue_depth("fragile").await, Some(0));
    h.stop().await;
}

#[tokio::test]
async fn consumers_recover_when_the_broker_force_closes_every_connection() {
    let h = harness().await;
    let stats = h.start("work", Recording::default(), fast_retry());
    h.publish(&Harness::message("test.before", &json!({"key": "before"})))
        .await;
    h.wait_for_effects("before", 1).await;

    // The management API lists connections a few seconds after they open.
    wait_until_async(
        "the management API to list the consumer's connections",
        DEADLINE,
        || async { (h.broker.connections().await.len() >= 3).then_some(()) },
    )
    .await;
    let closed = h.broker.close_all_connections().await;
    assert!(closed >= 3, "closed {closed} connections");
    wait_until("the consumer to reconnect", DEADLINE, || {
        stats.reconnects() >= 1 && stats.connected()
    })
    .await;

    let publisher = ConfirmedPublisher::open(
        &h.broker.settings("test-publisher-2"),
        &h.topology,
        &Shutdown::new(),
    )
    .await
    .unwrap();
    for n in 0..20 {
        let message = Harness::message("test.after", &json!({"key": format!("after-{n}")}));
        assert!(publisher.publish(&message).await.unwrap().is_confirmed());
    }
    for n in 0..20 {
        h.wait_for_effects(&format!("after-{n}"), 1).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn old_inbox_rows_are_retired_by_their_consumer_and_only_theirs() {
    let h = harness().await;
    for (consumer, age) in [
        ("test-service", "2 days"),
        ("test-service", "1 minute"),
        ("other", "2 days"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO msgkit_inbox (consumer, message_id, message_type, processed_at) \
             VALUES ('{consumer}', gen_random_uuid()::text, 't', now() - interval '{age}')"
        )))
        .execute(&h.pool)
        .await
        .unwrap();
    }
    let config = ConsumerConfig {
        inbox_retention: Duration::from_secs(3600),
        ..ConsumerConfig::new("test-service", "work")
    };
    let consumer = Consumer::new(
        h.pool.clone(),
        h.broker.settings("consumer"),
        h.topology.clone(),
        config,
        Recording::default(),
    );
    h.shutdown.spawn(consumer.run(h.shutdown.child()));
    wait_until_async(
        "the old row of test-service to be deleted",
        DEADLINE,
        || async {
            let left: Vec<String> =
                sqlx::query_scalar("SELECT consumer FROM msgkit_inbox ORDER BY consumer")
                    .fetch_all(&h.pool)
                    .await
                    .unwrap();
            (left == ["other", "test-service"]).then_some(())
        },
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_and_acks_in_flight_messages() {
    let h = harness().await;
    let (gate, closed) = tokio::sync::watch::channel(false);
    let handler = Recording {
        gate: Some(closed),
        ..Recording::default()
    };
    let stats = h.start("work", handler.clone(), fast_retry());
    for n in 0..4 {
        h.publish(&Harness::message(
            "test.slow",
            &json!({"key": format!("slow-{n}")}),
        ))
        .await;
    }
    wait_until("all four to be in flight", DEADLINE, || {
        (0..4).all(|n| !handler.attempt_times(&format!("slow-{n}")).is_empty())
    })
    .await;
    // Shutdown is announced while all four are held inside the handler; they may finish only
    // afterwards, and must still be committed and acked.
    h.shutdown.trigger();
    gate.send_replace(true);
    tokio::time::timeout(DEADLINE, h.shutdown.wait_for_tasks())
        .await
        .expect("the consumer stops once in-flight messages are done");
    assert_eq!(stats.handled(), 4, "in-flight messages finished");
    for n in 0..4 {
        assert_eq!(h.effects(&format!("slow-{n}")).await, 1);
    }
    assert_eq!(
        h.broker.queue_depth("work").await,
        Some(0),
        "and were acked"
    );
}

#[tokio::test]
async fn a_slow_message_does_not_stop_the_consumer_from_handling_the_ones_behind_it() {
    let h = harness().await;
    let (release, held) = tokio::sync::watch::channel(false);
    let handler = Recording {
        hold: Some(held),
        ..Recording::default()
    };
    // Acks go out in batches up to the first unsettled delivery. Were the acks behind the slow
    // first message held until it finishes, the broker would stop at 4 unacked deliveries and
    // the consumer would handle only three of the twenty.
    let stats = h.start_with(
        ConsumerConfig {
            prefetch: 4,
            concurrency: 4,
            retry: fast_retry(),
            ..ConsumerConfig::new("test-service", "work")
        },
        handler,
    );
    h.publish(&Harness::message(
        "test.slow",
        &json!({"key": "slow", "hold": true}),
    ))
    .await;
    for n in 0..20 {
        h.publish(&Harness::message(
            "test.fast",
            &json!({"key": format!("fast-{n}")}),
        ))
        .await;
    }
    wait_until(
        "the twenty behind the slow one to be handled",
        DEADLINE,
        || stats.handled() == 20,
    )
    .await;
    assert_eq!(h.effects("slow").await, 0, "the slow one is still held");
    release.send_replace(true);
    wait_until("the slow one to be handled", DEADLINE, || {
        stats.handled() == 21
    })
    .await;
    // Every delivery is acked while the consumer runs (not only when it stops), and no ack
    // named a tag acked before: the broker would have closed the channel.
    h.wait_until_everything_acked("work").await;
    assert_eq!(stats.reconnects(), 0, "the channel stayed open");
    assert_eq!(h.effects("slow").await, 1);
    h.stop().await;
}

/// Messages of each deadlock test: enough for batches to meet in every order.
const MESSAGES: u64 = 64;

/// Four batches of 8 at once.
fn overlapping_batches(queue: &str) -> ConsumerConfig {
    ConsumerConfig {
        concurrency: 4,
        prefetch: 64,
        ..batching(queue, 8)
    }
}

/// Every message of `keys` ran once: a batch rolled back (a deadlock) runs its messages again.
fn assert_each_ran_once(handler: &Recording, keys: &[String]) {
    let rerun: Vec<&String> = keys
        .iter()
        .filter(|key| handler.attempt_times(key).len() != 1)
        .collect();
    assert!(
        rerun.is_empty(),
        "every message ran once (a deadlocked batch runs again): {rerun:?}"
    );
}

fn batching(queue: &str, batch: usize) -> ConsumerConfig {
    ConsumerConfig {
        batch,
        concurrency: 2,
        retry: fast_retry(),
        ..ConsumerConfig::new("test-service", queue)
    }
}

#[tokio::test]
async fn a_consumer_that_batches_commits_many_messages_together_and_applies_each_once() {
    let h = harness().await;
    // A backlog, so that deliveries arrive faster than they are handled and batches form.
    for n in 0..60 {
        h.publish(&Harness::message(
            "batched.msg",
            &json!({"key": format!("b-{n}")}),
        ))
        .await;
    }
    let stats = h.start_with(batching("batched", 10), Recording::default());
    wait_until("all sixty handled", DEADLINE, || stats.handled() == 60).await;
    for n in 0..60 {
        assert_eq!(h.effects(&format!("b-{n}")).await, 1);
    }
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT tx) FROM effects")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert!(
        transactions < 30,
        "60 messages in {transactions} transactions: batches did not form"
    );
    let exposition = stats.render_metrics();
    let work = [("queue", "batched")];
    assert_eq!(
        metric_value(&exposition, "msgkit_consumer_batch_size_sum", &work),
        Some(60.0),
        "every delivery counted in a batch: {exposition}"
    );
    assert_eq!(
        metric_value(&exposition, "msgkit_consumer_batch_size_count", &work),
        Some(transactions as f64),
        "one observation per transaction"
    );
    assert_eq!(
        metric_value(&exposition, "msgkit_consumer_batch_rollbacks_total", &work),
        Some(0.0)
    );
    h.wait_until_everything_acked("batched").await;
    h.stop().await;
}

#[tokio::test]
async fn a_batch_applies_each_message_once_when_it_holds_duplicates_and_already_applied_ones() {
    let h = harness().await;
    // Ten applied before (in the inbox), ten new ones each delivered twice back to back: the
    // batch's inbox rows are written by one statement, which must tell all three apart.
    let applied: Vec<OutgoingMessage> = (0..10)
        .map(|n| Harness::message("batched.msg", &json!({"key": format!("old-{n}")})))
        .collect();
    for message in &applied {
        sqlx::query(
            "INSERT INTO msgkit_inbox (consumer, message_id, message_type) VALUES ($1, $2, $3)",
        )
        .bind("test-service")
        .bind(&message.message_id)
        .bind(&message.message_type)
        .execute(&h.pool)
        .await
        .unwrap();
    }
    for (n, old) in applied.iter().enumerate() {
        let fresh = Harness::message("batched.msg", &json!({"key": format!("new-{n}")}));
        h.publish(&fresh).await;
        h.publish(&fresh).await;
        h.publish(old).await;
    }
    let stats = h.start_with(batching("batched", 10), Recording::default());
    wait_until("ten handled, twenty duplicates", DEADLINE, || {
        stats.handled() == 10 && stats.duplicates() == 20
    })
    .await;
    for n in 0..10 {
        assert_eq!(h.effects(&format!("new-{n}")).await, 1, "new-{n}");
        assert_eq!(h.effects(&format!("old-{n}")).await, 0, "old-{n}");
    }
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT tx) FROM effects")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert!(transactions < 10, "batches did not form: {transactions}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM msgkit_inbox")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(rows, 20);
    h.wait_until_everything_acked("batched").await;
    h.stop().await;
}

#[tokio::test]
async fn a_failure_in_a_batch_retries_or_dead_letters_only_the_failing_message() {
    let h = harness().await;
    let (release, held) = tokio::sync::watch::channel(false);
    let handler = Recording {
        hold: Some(held),
        ..Recording::default()
    };
    let mut keys = Vec::new();
    for n in 0..10 {
        let key = format!("m-{n}");
        let body = match n {
            0 => json!({"key": key, "hold": true}),
            3 => json!({"key": key, "fail_attempts": 1}),
            6 => json!({"key": key, "reject": true}),
            _ => json!({"key": key}),
        };
        h.publish(&Harness::message("batch-failure.msg", &body))
            .await;
        keys.push(key);
    }
    let stats = h.start_with(
        ConsumerConfig {
            concurrency: 1,
            ..batching("batch-failure", 10)
        },
        handler.clone(),
    );
    // The first is held until the broker has delivered all ten, so that the rest arrive
    // before the consumer takes its next batch: m-1 to m-9 are then handled together.
    wait_until_async("all ten delivered", DEADLINE, || async {
        (h.broker.queue_totals("batch-failure").await == Some((0, 10))).then_some(())
    })
    .await;
    release.send_replace(true);
    wait_until("nine handled and one poison", DEADLINE, || {
        stats.handled() == 9 && stats.poison() == 1
    })
    .await;
    for (n, key) in keys.iter().enumerate() {
        let expected = i64::from(n != 6);
        assert_eq!(h.effects(key).await, expected, "effects of {key}");
    }
    assert_eq!(stats.retried(), 1, "only the flaky message was retried");
    let exposition = stats.render_metrics();
    assert!(
        metric_value(
            &exposition,
            "msgkit_consumer_batch_rollbacks_total",
            &[("queue", "batch-failure")]
        )
        .is_some_and(|rollbacks| rollbacks >= 1.0),
        "the failed batch is counted: {exposition}"
    );
    let dead = h.take_one("batch-failure.dlq").await;
    assert_eq!(
        header_str(&dead.delivery.properties, "x-failure-reason"),
        Some("poison")
    );
    assert_eq!(
        header_i64(&dead.delivery.properties, ATTEMPT_HEADER),
        Some(1),
        "dead-lettered on its first delivery, not after retries"
    );
    assert_eq!(
        handler.attempt_times("m-2").len(),
        2,
        "m-2 ran in the batch that failed at m-3, then alone"
    );
    h.stop().await;
}

#[tokio::test]
async fn concurrent_batches_over_the_same_entities_do_not_deadlock() {
    let h = harness().await;
    let handler = Recording::default();
    // Four entities; each run of a batch's worth of messages visits them in one direction,
    // the next run in the other: batches taken in delivery order would lock them in opposite
    // orders and deadlock (PostgreSQL then aborts one after a second and its messages run
    // again, one by one).
    let entities = ["e0", "e1", "e2", "e3"];
    let mut keys = Vec::new();
    for round in 0..MESSAGES / 8 {
        let order: Vec<&str> = if round % 2 == 0 {
            entities.iter().chain(&entities).copied().collect()
        } else {
            entities.iter().chain(&entities).rev().copied().collect()
        };
        for (n, entity) in order.into_iter().enumerate() {
            let key = format!("{entity}-{round}-{n}");
            let mut message = Harness::message("test.entity", &json!({"key": key, "lock": entity}));
            // The correlation id names the entity, as the order id does in the saga.
            message.correlation_id = entity.to_owned();
            h.publish(&message).await;
            keys.push(key);
        }
    }
    let stats = h.start_with(overlapping_batches("work"), handler.clone());
    wait_until("all handled", DEADLINE, || stats.handled() == MESSAGES).await;
    assert_each_ran_once(&handler, &keys);
    h.stop().await;
}

#[tokio::test]
async fn batches_that_lock_shared_rows_up_front_do_not_deadlock() {
    let h = harness().await;
    let handler = Recording::default();
    // Each message locks two of four shared resources (in order, as inventory locks its SKUs);
    // its correlation is its own, so a batch's correlation order mixes the two pairs at
    // random. Concurrent batches then lock the pairs in opposite orders and deadlock, unless
    // the handler takes all of a batch's locks first (`before_batch`).
    let mut keys = Vec::new();
    for n in 0..MESSAGES {
        let key = format!("s-{n}");
        let shared = if n % 2 == 0 {
            ["r0", "r1"]
        } else {
            ["r2", "r3"]
        };
        let mut message =
            Harness::message("shared-locks.msg", &json!({"key": key, "shared": shared}));
        message.correlation_id = uuid::Uuid::new_v4().to_string();
        h.publish(&message).await;
        keys.push(key);
    }
    let stats = h.start_with(overlapping_batches("shared-locks"), handler.clone());
    wait_until("all handled", DEADLINE, || stats.handled() == MESSAGES).await;
    assert_each_ran_once(&handler, &keys);
    let exposition = stats.render_metrics();
    assert_eq!(
        metric_value(
            &exposition,
            "msgkit_consumer_batch_rollbacks_total",
            &[("queue", "shared-locks")]
        ),
        Some(0.0)
    );
    h.stop().await;
}

#[tokio::test]
async fn a_batch_whose_preparation_fails_is_handled_one_by_one() {
    let h = harness().await;
    let handler = Recording::default();
    let mut keys = Vec::new();
    for n in 0..20 {
        let key = format!("p-{n}");
        // Every batch holding message 0 or 10 is refused by `before_batch`; one by one, each
        // message runs without it.
        let body = json!({"key": key, "fail_batch": n % 10 == 0});
        h.publish(&Harness::message("batch-prepare.msg", &body))
            .await;
        keys.push(key);
    }
    let stats = h.start_with(batching("batch-prepare", 10), handler.clone());
    wait_until("all twenty handled", DEADLINE, || stats.handled() == 20).await;
    for key in &keys {
        assert_eq!(h.effects(key).await, 1, "effects of {key}");
    }
    assert_eq!(
        stats.retried(),
        0,
        "a refused batch is not a failed message"
    );
    h.wait_until_everything_acked("batch-prepare").await;
    h.stop().await;
}
