//! Callbacks pending when the payment process is SIGKILLed are still delivered after the
//! restart: the service runs in a child process (this test binary running this same test
//! again, which the child's environment turns into the service); the child charges an order
//! whose callback is due seconds later and is killed before that; a new child sends it. Nothing
//! shuts down gracefully, so only the database carries the pending callback.

use std::process::Stdio;

use msgkit::Shutdown;
use msgkit::service::ServiceSettings;
use msgkit::testing::{TestBroker, TestDatabase, test_config, wait_until_async};
use payment::startup::{NAME, build};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::{DEADLINE, FAST, reserve};

/// Set in the child's environment: the child runs the service instead of the test.
const CHILD_DATABASE: &str = "PAYMENT_SIGKILL_CHILD_DATABASE_URL";
const CHILD_AMQP: &str = "PAYMENT_SIGKILL_CHILD_AMQP_URL";
/// What the child prints, followed by its HTTP address, once it is ready.
const LISTENING: &str = "payment-sigkill-child listening on ";
const TEST_NAME: &str = "sigkill::callbacks_pending_at_a_sigkill_are_delivered_after_the_restart";
/// Long enough for the test to see the callbacks planned and kill the child before they are
/// due.
const DELAY_MS: &str = "3000";

/// The child mode: the payment service, as the tests build it, until it is killed.
async fn child_service(database: String, amqp: String) {
    let mut pairs = vec![
        ("DATABASE_URL", database.as_str()),
        ("AMQP_URL", amqp.as_str()),
    ];
    pairs.extend(FAST.iter().copied());
    pairs.push(("GATEWAY_CALLBACK_DELAY_MS", DELAY_MS));
    let settings = ServiceSettings::from_source(test_config(pairs), NAME, 0, NAME).unwrap();
    let service = build(settings).await.unwrap();
    println!("{LISTENING}{}", service.local_addr().unwrap());
    service.run_until_stopped(Shutdown::new()).await.unwrap();
}

/// A child running the service, once it has started.
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

/// (planned, sent) callbacks of the gateway.
async fn owed(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(sent_at) FROM payment.gateway_callbacks")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn received(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT order_id FROM payment.payment_callbacks ORDER BY order_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn callbacks_pending_at_a_sigkill_are_delivered_after_the_restart() {
    if let (Ok(database), Ok(amqp)) = (std::env::var(CHILD_DATABASE), std::env::var(CHILD_AMQP)) {
        return child_service(database, amqp).await;
    }
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let mut first = start_child(&db, &broker).await;
    // The child has migrated the schema before it listened.
    let pool = db.pool().await;
    let service_pool = db.settings(NAME).connect().await.unwrap();
    let mut published = broker.probe("events", "payment.callback").await;
    let mut orders = vec![Uuid::new_v4(), Uuid::new_v4()];
    reserve(&service_pool, orders[0], 5_000).await;
    reserve(&service_pool, orders[1], 200_000).await;
    wait_until_async("both callbacks planned", DEADLINE, || async {
        (owed(&pool).await == (2, 0)).then_some(())
    })
    .await;

    first.start_kill().unwrap();
    let status = first.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    assert_eq!(owed(&pool).await, (2, 0), "killed before they were due");

    let mut second = start_child(&db, &broker).await;
    let got = published
        .collect_until("two payment.callback after the restart", DEADLINE, |got| {
            got.len() == 2
        })
        .await;
    orders.sort();
    assert_eq!(received(&pool).await, orders);
    let mut outcomes: Vec<String> = got
        .iter()
        .map(|delivery| {
            let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
            event["outcome"].as_str().unwrap().to_owned()
        })
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["declined", "success"]);
    wait_until_async("both marked sent", DEADLINE, || async {
        (owed(&pool).await == (2, 2)).then_some(())
    })
    .await;
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}
