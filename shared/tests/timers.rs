//! Durable timers against the real RabbitMQ and PostgreSQL: a cancelled timer never fires, a
//! reset one fires once at its new instant, one due while the consumer was down fires once on
//! restart marked overdue, thousands fire once each across two replicas, and firing needs no
//! other traffic. The consumer's clock is moved instead of waiting.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use msgkit::clock::Clock;
use msgkit::consume::{Consumer, ConsumerConfig, ConsumerStats, Context, HandlerError, Routes};
use msgkit::message::{OutgoingMessage, header_str};
use msgkit::service::{Service, ServiceError};
use msgkit::testing::{
    TestBroker, TestDatabase, metric_value, service_settings, wait_until, wait_until_async,
};
use msgkit::timer::{Fired, TimerType};
use msgkit::{
    ConfirmedPublisher, EventType, OutboxRelay, RelayConfig, Shutdown, Topology, WorkQueue,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

const DEADLINE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    key: String,
    at_ms: i64,
    note: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Key {
    key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Note {
    note: String,
}

const SCHEDULED: EventType<Plan> = EventType::new("timers.scheduled");
const CANCELLED: EventType<Key> = EventType::new("timers.cancelled");
const DUE: TimerType<Note> = TimerType::new("due");

async fn schedule(mut ctx: Context<'_>, plan: Plan) -> Result<(), HandlerError> {
    let at = Utc.timestamp_millis_opt(plan.at_ms).unwrap();
    let note = Note { note: plan.note };
    ctx.timers().set(DUE, &plan.key, at, &note).await
}

async fn cancel(mut ctx: Context<'_>, key: Key) -> Result<(), HandlerError> {
    let was_pending = ctx.timers().cancel(DUE, &key.key).await?;
    sqlx::query("INSERT INTO cancels (key, was_pending) VALUES ($1, $2)")
        .bind(&key.key)
        .bind(was_pending)
        .execute(ctx.tx())
        .await?;
    Ok(())
}

/// The timer's effect, written in the handler's transaction: the inbox makes it once.
async fn fired(mut ctx: Context<'_>, fired: Fired<Note>) -> Result<(), HandlerError> {
    let lateness_ms = i64::try_from(fired.lateness().as_millis()).unwrap();
    sqlx::query(
        "INSERT INTO effects (key, note, due_at, lateness_ms, overdue) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(fired.key())
    .bind(&fired.payload().note)
    .bind(fired.due_at())
    .bind(lateness_ms)
    .bind(fired.overdue())
    .execute(ctx.tx())
    .await?;
    Ok(())
}

fn routes() -> Routes {
    Routes::new()
        .route(SCHEDULED, schedule)
        .route(CANCELLED, cancel)
        .on_timer(DUE, fired)
}

fn topology() -> Topology {
    Topology::default().with_queue(WorkQueue::new("timed").bind("timers.#"))
}

#[derive(Debug)]
struct Effect {
    note: String,
    due_at: DateTime<Utc>,
    lateness_ms: i64,
    overdue: bool,
}

struct Harness {
    pool: PgPool,
    broker: TestBroker,
    publisher: ConfirmedPublisher,
    shutdown: Shutdown,
    clock: Clock,
    db: TestDatabase,
}

async fn harness() -> Harness {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.kit_pool().await;
    sqlx::query(
        "CREATE TABLE effects (key text, note text, due_at timestamptz, lateness_ms bigint, \
         overdue boolean)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TABLE cancels (key text, was_pending boolean)")
        .execute(&pool)
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let publisher = broker.publisher(&topology()).await;
    let h = Harness {
        pool,
        broker,
        publisher,
        shutdown,
        clock: Clock::system(),
        db,
    };
    h.start_relay(h.pool.clone());
    h
}

impl Harness {
    /// A relay of the service's outbox, which publishes the fired timers.
    fn start_relay(&self, pool: PgPool) {
        let config = RelayConfig {
            poll_interval: Duration::from_millis(200),
            ..RelayConfig::new("timed")
        };
        let settings = self.broker.settings("relay");
        let relay = OutboxRelay::new(pool, settings, topology(), config);
        self.shutdown.spawn(relay.run(self.shutdown.child()));
    }

    /// A replica of the `timed` consumer on the harness's clock and `pool`, stopped by `stop`.
    fn start_with(&self, pool: PgPool, stop: &Shutdown) -> Arc<ConsumerStats> {
        let config = ConsumerConfig {
            clock: self.clock.clone(),
            ..ConsumerConfig::new("timed", "timed")
        };
        let settings = self.broker.settings("timed");
        let consumer = Consumer::new(pool, settings, topology(), config, routes());
        let stats = consumer.stats();
        stop.spawn(consumer.run(stop.clone()));
        stats
    }

    fn start(&self) -> Arc<ConsumerStats> {
        self.start_with(self.pool.clone(), &self.shutdown.child())
    }

    async fn publish<P: Serialize>(&self, event: EventType<P>, key: &str, payload: &P) {
        let message = OutgoingMessage::event(event.name(), key, "test", payload).unwrap();
        let outcome = self.publisher.publish(&message).await.unwrap();
        assert!(outcome.is_confirmed());
    }

    /// Set (or reset) `key`'s timer for `at`, and wait until it is pending for `at`.
    async fn schedule(&self, key: &str, at: DateTime<Utc>, note: &str) {
        let plan = Plan {
            key: key.into(),
            at_ms: at.timestamp_millis(),
            note: note.into(),
        };
        self.publish(SCHEDULED, key, &plan).await;
        wait_until_async(&format!("{key}'s timer set for {at}"), DEADLINE, || async {
            let due: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT due_at FROM msgkit_timers WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .unwrap();
            (due.map(|due| due.timestamp_millis()) == Some(at.timestamp_millis())).then_some(())
        })
        .await;
    }

    async fn effects(&self, key: &str) -> Vec<Effect> {
        let rows: Vec<(String, DateTime<Utc>, i64, bool)> = sqlx::query_as(
            "SELECT note, due_at, lateness_ms, overdue FROM effects WHERE key = $1 ORDER BY ctid",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(note, due_at, lateness_ms, overdue)| Effect {
                note,
                due_at,
                lateness_ms,
                overdue,
            })
            .collect()
    }

    /// Wait until `key`'s timer has had an effect, and return its effects.
    async fn fired(&self, key: &str) -> Vec<Effect> {
        wait_until_async(&format!("{key}'s timer to fire"), DEADLINE, || async {
            let effects = self.effects(key).await;
            (!effects.is_empty()).then_some(effects)
        })
        .await
    }

    /// Firings of `key`'s timers: the outbox messages written for them.
    async fn firings(&self, key: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM msgkit_outbox WHERE aggregate_id = $1 \
             AND message_type = 'msgkit.timer.due'",
        )
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn pending(&self, key: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM msgkit_timers WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(DEADLINE, self.shutdown.wait_for_tasks())
            .await
            .expect("consumers and relay stop promptly");
    }
}

fn in_an(clock: &Clock, after: Duration) -> DateTime<Utc> {
    clock.now() + chrono::Duration::from_std(after).unwrap()
}

#[tokio::test]
async fn a_timer_cancelled_before_its_instant_never_fires() {
    let h = harness().await;
    h.start();
    h.schedule("cancelled", in_an(&h.clock, HOUR), "no").await;
    h.publish(
        CANCELLED,
        "cancelled",
        &Key {
            key: "cancelled".into(),
        },
    )
    .await;
    let was_pending: bool = wait_until_async("the cancel handled", DEADLINE, || async {
        sqlx::query_scalar("SELECT was_pending FROM cancels WHERE key = 'cancelled'")
            .fetch_optional(&h.pool)
            .await
            .unwrap()
    })
    .await;
    assert!(was_pending, "cancel reports the pending timer");
    // Set after the cancel and due after the cancelled one's instant: once it has fired, the
    // cancelled one would have.
    let later = in_an(&h.clock, HOUR + Duration::from_secs(1));
    h.schedule("witness", later, "yes").await;

    h.clock.advance(2 * HOUR);
    h.fired("witness").await;
    assert!(h.effects("cancelled").await.is_empty(), "no effect");
    assert_eq!(h.firings("cancelled").await, 0, "never fired");
    h.stop().await;
}

#[tokio::test]
async fn a_reset_timer_fires_once_at_its_new_instant_and_not_at_its_old_one() {
    let h = harness().await;
    h.start();
    let start = h.clock.now();
    let at = |hours: i64| start + chrono::Duration::hours(hours);
    h.schedule("reset", at(1), "old").await;
    h.schedule("reset", at(3), "new").await;
    h.schedule("witness", at(2), "between").await;

    h.clock.advance(2 * HOUR + HOUR / 2);
    h.fired("witness").await;
    assert!(
        h.effects("reset").await.is_empty(),
        "not at its old instant"
    );
    assert_eq!(h.pending("reset").await, 1, "still pending");

    h.clock.advance(HOUR);
    let effects = h.fired("reset").await;
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(effects[0].note, "new");
    assert_eq!(
        effects[0].due_at.timestamp_millis(),
        at(3).timestamp_millis()
    );
    assert_eq!(h.firings("reset").await, 1, "fired once");
    assert_eq!(h.pending("reset").await, 0);
    h.stop().await;
}

#[tokio::test]
async fn a_timer_due_while_its_consumer_was_down_fires_once_on_restart_overdue_with_its_lateness() {
    let h = harness().await;
    let first = h.shutdown.child();
    h.start_with(h.pool.clone(), &first);
    h.schedule("late", in_an(&h.clock, Duration::from_secs(600)), "late")
        .await;
    first.trigger();
    tokio::time::timeout(DEADLINE, first.wait_for_tasks())
        .await
        .expect("the first consumer stops");

    h.clock.advance(HOUR);
    assert_eq!(h.firings("late").await, 0, "nothing fires while it is down");
    h.start();
    let effects = h.fired("late").await;
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert!(effects[0].overdue, "marked overdue");
    let late_by = effects[0].lateness_ms;
    assert!(
        (50 * 60 * 1000..70 * 60 * 1000).contains(&late_by),
        "about 50 minutes late: {late_by} ms"
    );
    assert_eq!(h.firings("late").await, 1, "fired once");
    h.stop().await;
}

#[tokio::test]
async fn two_thousand_timers_fire_once_each_across_two_replicas() {
    const TIMERS: i64 = 2_000;
    let h = harness().await;
    // Two instances of a service: each with its own pool and relay.
    let replica = async || {
        let pool = h.db.pool().await;
        h.start_relay(pool.clone());
        h.start_with(pool, &h.shutdown.child())
    };
    let (first, second) = (replica().await, replica().await);
    let from = in_an(&h.clock, Duration::from_secs(1));
    sqlx::query(
        "INSERT INTO msgkit_timers (consumer, name, key, due_at, payload, set_at) \
         SELECT 'timed', 'due', 'k-' || n, $1 + (n % 200) * interval '1 millisecond', \
                jsonb_build_object('note', 'bulk'), $2 \
         FROM generate_series(1, $3) AS n",
    )
    .bind(from)
    .bind(h.clock.now())
    .bind(TIMERS)
    .execute(&h.pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('msgkit_timers_' || current_schema(), 'timed')")
        .execute(&h.pool)
        .await
        .unwrap();

    wait_until_async("every timer's effect", DEADLINE * 2, || async {
        let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
            .fetch_one(&h.pool)
            .await
            .unwrap();
        (effects >= TIMERS).then_some(())
    })
    .await;
    let (keys, most): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(max(n), 0) FROM \
         (SELECT key, count(*) AS n FROM effects GROUP BY key) per_key",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!((keys, most), (TIMERS, 1), "one effect per timer");
    let firings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM msgkit_outbox WHERE message_type = 'msgkit.timer.due'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(firings, TIMERS, "one firing per timer");
    let fired_by = |stats: &ConsumerStats| {
        metric_value(
            &stats.render_metrics(),
            "msgkit_timers_fired_total",
            &[("queue", "timed")],
        )
        .unwrap_or(0.0)
    };
    let (a, b) = (fired_by(&first), fired_by(&second));
    assert_eq!(a + b, TIMERS as f64, "metrics count each firing once");
    assert!(a > 0.0 && b > 0.0, "both replicas fired: {a} and {b}");
    h.stop().await;
}

#[tokio::test]
async fn a_timer_fires_on_a_quiet_queue_with_nothing_else_arriving() {
    let h = harness().await;
    let stats = h.start();
    // The real clock, not moved: firing is driven by time alone.
    h.schedule("quiet", in_an(&h.clock, Duration::from_secs(2)), "quiet")
        .await;
    let handled_before = stats.handled();
    let effects = h.fired("quiet").await;
    assert_eq!(effects.len(), 1);
    wait_until("the firing acked", DEADLINE, || {
        stats.handled() == handled_before + 1
    })
    .await;
    assert_eq!(h.firings("quiet").await, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_service_whose_routes_handle_timers_needs_no_binding_for_them_but_refuses_to_run_without_a_relay()
 {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let settings = service_settings("timed", "timed", &db, broker.settings("timed"));
    let service = Service::start(settings, topology(), Migrator::DEFAULT)
        .await
        .unwrap()
        .consume(routes())
        .expect("timer routes are not checked against the bindings");
    let refused = tokio::time::timeout(DEADLINE, service.run_until_stopped(Shutdown::new()))
        .await
        .expect("refused at once");
    let Err(error @ ServiceError::TimersWithoutRelay { .. }) = refused else {
        panic!("the service must refuse to run: {refused:?}");
    };
    assert!(error.to_string().contains("add .with_relay()"), "{error}");
}

#[tokio::test]
async fn a_timer_message_without_its_due_instant_is_dead_lettered_as_poison() {
    let h = harness().await;
    h.start();
    // A forged or hand-replayed message of a timer's type, without the kit's header.
    let note = Note {
        note: "forged".into(),
    };
    let forged = OutgoingMessage {
        exchange: String::new(),
        routing_key: "timed".into(),
        ..OutgoingMessage::event("msgkit.timer.due", "forged", "test", &note).unwrap()
    };
    assert!(h.publisher.publish(&forged).await.unwrap().is_confirmed());
    let dead = h.broker.take_one("timed.dlq", DEADLINE).await;
    let props = &dead.delivery.properties;
    assert_eq!(header_str(props, "x-failure-reason"), Some("poison"));
    assert_eq!(
        header_str(props, "x-exception-type"),
        Some(msgkit::timer::NOT_A_TIMER)
    );
    assert!(h.effects("forged").await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_timer_whose_payload_is_above_the_limit_is_poison_and_never_set() {
    let h = harness().await;
    h.start();
    let plan = Plan {
        key: "huge".into(),
        at_ms: Utc::now().timestamp_millis(),
        note: "x".repeat(70 * 1024),
    };
    h.publish(SCHEDULED, "huge", &plan).await;
    let dead = h.broker.take_one("timed.dlq", DEADLINE).await;
    let props = &dead.delivery.properties;
    assert_eq!(header_str(props, "x-failure-reason"), Some("poison"));
    assert_eq!(
        header_str(props, "x-exception-type"),
        Some(msgkit::timer::PAYLOAD_TOO_LARGE)
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM msgkit_timers WHERE key = 'huge'")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(pending, 0);
    h.stop().await;
}
