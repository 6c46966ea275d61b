//! A timer survives its service being SIGKILLed: the consumer runs in a child process (this
//! test binary running this same test again, which the child's environment turns into the
//! service), a handler sets a timer, the child is killed before the timer is due, and a new
//! child whose clock is an hour ahead fires it once, marked overdue. Nothing shuts down
//! gracefully, so nothing but the database carries the timer.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Stdio;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use msgkit::clock::Clock;
use msgkit::consume::{Consumer, ConsumerConfig, Context, HandlerError, Routes};
use msgkit::message::OutgoingMessage;
use msgkit::testing::{TestBroker, TestDatabase, wait_until_async};
use msgkit::timer::{Fired, TimerType};
use msgkit::{BrokerSettings, EventType, OutboxRelay, RelayConfig, Shutdown, Topology, WorkQueue};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(60);
/// Set in the child's environment: the child mode runs the service instead of returning.
const CHILD_DATABASE: &str = "MSGKIT_SIGKILL_CHILD_DATABASE_URL";
const CHILD_AMQP: &str = "MSGKIT_SIGKILL_CHILD_AMQP_URL";
const CHILD_CLOCK_AHEAD_MS: &str = "MSGKIT_SIGKILL_CHILD_CLOCK_AHEAD_MS";

#[derive(Debug, Serialize, Deserialize)]
struct Alarm {
    key: String,
    at_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ring {
    key: String,
}

const ALARM_SET: EventType<Alarm> = EventType::new("alarm.set");
const RING: TimerType<Ring> = TimerType::new("ring");

async fn set(mut ctx: Context<'_>, alarm: Alarm) -> Result<(), HandlerError> {
    let at = Utc.timestamp_millis_opt(alarm.at_ms).unwrap();
    let ring = Ring { key: alarm.key };
    ctx.timers().set(RING, &ring.key, at, &ring).await
}

async fn ring(mut ctx: Context<'_>, fired: Fired<Ring>) -> Result<(), HandlerError> {
    sqlx::query("INSERT INTO rung (key, overdue, pid) VALUES ($1, $2, $3)")
        .bind(&fired.payload().key)
        .bind(fired.overdue())
        .bind(i64::from(std::process::id()))
        .execute(ctx.tx())
        .await?;
    Ok(())
}

fn topology() -> Topology {
    Topology::default().with_queue(WorkQueue::new("alarms").bind(ALARM_SET))
}

/// The child mode: the `alarms` service (consumer and relay) until it is killed.
async fn child_service(database: String, amqp: String) {
    let ahead: u64 = std::env::var(CHILD_CLOCK_AHEAD_MS)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0);
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .connect(&database)
        .await
        .unwrap();
    let clock = Clock::system();
    clock.advance(Duration::from_millis(ahead));
    let shutdown = Shutdown::new();
    let broker = |name: &str| {
        let mut settings = BrokerSettings::new(amqp.clone(), name);
        settings.reconnect_initial = Duration::from_millis(50);
        settings
    };
    let relay = OutboxRelay::new(
        pool.clone(),
        broker("relay"),
        topology(),
        RelayConfig::new("alarms"),
    );
    shutdown.spawn(relay.run(shutdown.child()));
    let config = ConsumerConfig {
        clock,
        ..ConsumerConfig::new("alarms", "alarms")
    };
    let routes = Routes::new().route(ALARM_SET, set).on_timer(RING, ring);
    let consumer = Consumer::new(pool, broker("alarms"), topology(), config, routes);
    consumer.run(shutdown.child()).await;
}

fn start_child(db: &TestDatabase, broker: &TestBroker, clock_ahead: Duration) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_timer_set_before_its_service_is_sigkilled_fires_once_overdue_after_restart",
            "--nocapture",
        ])
        .env(CHILD_DATABASE, db.url())
        .env(CHILD_AMQP, broker.amqp_url())
        .env(CHILD_CLOCK_AHEAD_MS, clock_ahead.as_millis().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn rung(pool: &PgPool) -> Vec<(String, bool, i64)> {
    sqlx::query_as("SELECT key, overdue, pid FROM rung")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_timer_set_before_its_service_is_sigkilled_fires_once_overdue_after_restart() {
    if let (Ok(database), Ok(amqp)) = (std::env::var(CHILD_DATABASE), std::env::var(CHILD_AMQP)) {
        return child_service(database, amqp).await;
    }
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.kit_pool().await;
    sqlx::query("CREATE TABLE rung (key text, overdue boolean, pid bigint)")
        .execute(&pool)
        .await
        .unwrap();
    let mut first = start_child(&db, &broker, Duration::ZERO);
    // Ten minutes ahead: it cannot fire before the kill.
    let due = Utc::now() + chrono::Duration::minutes(10);
    let alarm = Alarm {
        key: "k".into(),
        at_ms: due.timestamp_millis(),
    };
    let message = OutgoingMessage::event(ALARM_SET.name(), "k", "test", &alarm).unwrap();
    let publisher = broker.publisher(&topology()).await;
    assert!(publisher.publish(&message).await.unwrap().is_confirmed());
    wait_until_async("the timer pending", DEADLINE, || async {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM msgkit_timers")
            .fetch_one(&pool)
            .await
            .ok()?;
        (pending == 1).then_some(())
    })
    .await;

    first.start_kill().unwrap();
    let status = first.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    assert!(
        rung(&pool).await.is_empty(),
        "nothing fired before the kill"
    );

    // The restarted service's clock is an hour on: the timer is long overdue.
    let second = start_child(&db, &broker, Duration::from_secs(3600));
    let second_pid = i64::from(second.id().unwrap());
    let fired = wait_until_async("the timer to fire after the restart", DEADLINE, || async {
        let rung = rung(&pool).await;
        (!rung.is_empty()).then_some(rung)
    })
    .await;
    assert_eq!(
        fired,
        [("k".to_owned(), true, second_pid)],
        "once, overdue, by the new process"
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM msgkit_timers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pending, 0);
    let firings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM msgkit_outbox WHERE message_type = 'msgkit.timer.ring'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(firings, 1, "fired once");
    drop(second);
    publisher.close().await;
}
