//! The window's timer survives the service being SIGKILLed between an order's two sides: the
//! service runs in a child process (this test binary running this same test again, which the
//! child's environment turns into the service), our side is handled, the child is killed, and
//! a new child fires the timer (a mismatch, once); the late callback then resolves it.
//! Nothing shuts down gracefully, so only the database carries the window. The children run
//! on the system clock with a short window: a clock cannot be shared across processes.

use std::process::Stdio;

use contracts::GatewayOutcome::Success;
use contracts::event_type;
use msgkit::Shutdown;
use msgkit::service::ServiceSettings;
use msgkit::testing::{TestBroker, TestDatabase, test_config, wait_until_async};
use reconcile::startup::{NAME, build};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::{DEADLINE, FAST_TIMERS, callback, publish_to, succeeded};

/// Set in the child's environment: the child runs the service instead of the test.
const CHILD_DATABASE: &str = "RECONCILE_SIGKILL_CHILD_DATABASE_URL";
const CHILD_AMQP: &str = "RECONCILE_SIGKILL_CHILD_AMQP_URL";
/// What the child prints, followed by its HTTP address, once it is ready.
const LISTENING: &str = "reconcile-sigkill-child listening on ";
const TEST_NAME: &str =
    "sigkill::the_window_of_an_order_half_seen_before_a_sigkill_ends_once_after_the_restart";
/// Long enough for the kill to come first, short enough not to slow the suite.
const WINDOW_MS: &str = "3000";

/// The child mode: the reconcile service, as the tests build it, until it is killed.
async fn child_service(database: String, amqp: String) {
    let source = test_config([
        ("DATABASE_URL", database.as_str()),
        ("AMQP_URL", amqp.as_str()),
        ("RECONCILE_WINDOW_MS", WINDOW_MS),
        FAST_TIMERS,
    ]);
    let settings = ServiceSettings::from_source(source, NAME, 0, NAME).unwrap();
    let service = build(settings).await.unwrap();
    println!("{LISTENING}{}", service.local_addr().unwrap());
    service.run_until_stopped(Shutdown::new()).await.unwrap();
}

/// A child running the service, once it has started (migrated and listening).
async fn start_child(db: &TestDatabase, broker: &TestBroker) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture"])
        .env(CHILD_DATABASE, db.url())
        .env(CHILD_AMQP, broker.amqp_url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with(LISTENING) {
                return;
            }
        }
        panic!("the child exited before it listened");
    })
    .await
    .expect("the child service started in time");
    // Keep reading, so that the child never blocks on (or dies of) a full or closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn the_window_of_an_order_half_seen_before_a_sigkill_ends_once_after_the_restart() {
    if let (Ok(database), Ok(amqp)) = (std::env::var(CHILD_DATABASE), std::env::var(CHILD_AMQP)) {
        return child_service(database, amqp).await;
    }
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let publisher = broker.publisher(&contracts::topology()).await;
    let order = Uuid::new_v4();

    let mut first = start_child(&db, &broker).await;
    let pool = db.pool().await;
    let mut published = broker.probe("events", "reconcile.#").await;
    publish_to(
        &publisher,
        event_type::PAYMENT_SUCCEEDED,
        order,
        &succeeded(order, 800),
    )
    .await;
    wait_until_async("our side handled", DEADLINE, || async {
        let handled = count(
            &pool,
            "SELECT count(*) FROM reconcile.msgkit_inbox WHERE consumer = 'reconcile'",
        )
        .await;
        (handled == 1).then_some(())
    })
    .await;

    first.start_kill().unwrap();
    let status = first.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM reconcile.msgkit_timers").await,
        1,
        "the window is pending in the database"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM reconcile.reconciliations").await,
        0
    );

    let mut second = start_child(&db, &broker).await;
    let missing = published
        .collect_until("the mismatch after the restart", DEADLINE, |got| {
            !got.is_empty()
        })
        .await;
    assert_eq!(missing[0].routing_key.as_str(), "reconcile.mismatch");

    publish_to(
        &publisher,
        event_type::PAYMENT_CALLBACK,
        order,
        &callback("cb-late", order, Success, 800),
    )
    .await;
    let resolved = published
        .collect_until("the late match", DEADLINE, |got| !got.is_empty())
        .await;
    assert_eq!(resolved[0].routing_key.as_str(), "reconcile.resolved");
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM reconcile.reconciliation_history ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        outcomes,
        ["third-party-missing", "late-match"],
        "the timer fired once"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM reconcile.msgkit_outbox WHERE message_type = 'reconcile.mismatch'"
        )
        .await,
        1
    );
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}
