//! A partial match survives the service being SIGKILLed: the risk service runs in a child
//! process (this test binary running this same test again, which the child's environment
//! turns into the service), the first transaction of the default rule's pattern is handled,
//! the child is killed, and a new child that gets the second transaction raises the alert,
//! once. Nothing shuts down gracefully, so only the database carries the user's state.

use std::process::Stdio;

use chrono::{Duration, TimeZone, Utc};
use msgkit::Shutdown;
use msgkit::service::ServiceSettings;
use msgkit::testing::{TestBroker, TestDatabase, test_config, wait_until_async};
use risk::startup::{NAME, build};
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{DEADLINE, transaction};

/// Set in the child's environment: the child runs the service instead of the test.
const CHILD_DATABASE: &str = "RISK_SIGKILL_CHILD_DATABASE_URL";
const CHILD_AMQP: &str = "RISK_SIGKILL_CHILD_AMQP_URL";
/// What the child prints, followed by its HTTP address, once it is ready.
const LISTENING: &str = "risk-sigkill-child listening on ";
const TEST_NAME: &str =
    "sigkill::a_pattern_half_seen_before_a_sigkill_alerts_once_after_the_restart";

/// The child mode: the risk service, as the tests build it, until it is killed.
async fn child_service(database: String, amqp: String) {
    let source = test_config([
        ("DATABASE_URL", database.as_str()),
        ("AMQP_URL", amqp.as_str()),
    ]);
    let settings = ServiceSettings::from_source(source, NAME, 0, NAME).unwrap();
    let service = build(settings).await.unwrap();
    println!("{LISTENING}{}", service.local_addr().unwrap());
    service.run_until_stopped(Shutdown::new()).await.unwrap();
}

/// A child running the service, and its HTTP address once it has started.
async fn start_child(db: &TestDatabase, broker: &TestBroker) -> (Child, String) {
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
    let address = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(address) = line.strip_prefix(LISTENING) {
                return format!("http://{address}");
            }
        }
        panic!("the child exited before it listened");
    })
    .await
    .expect("the child service started in time");
    // Keep reading, so that the child never blocks on (or dies of) a full or closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, address)
}

async fn post(client: &reqwest::Client, address: &str, body: &Value) {
    let response = client
        .post(format!("{address}/transactions"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

async fn handled(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM risk.msgkit_inbox \
         WHERE consumer = 'risk' AND message_type = 'transaction.recorded'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn alerts(pool: &PgPool) -> Vec<(i64, Vec<String>)> {
    sqlx::query_as("SELECT rule_id, transaction_ids FROM risk.alerts ORDER BY created_at")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pattern_half_seen_before_a_sigkill_alerts_once_after_the_restart() {
    if let (Ok(database), Ok(amqp)) = (std::env::var(CHILD_DATABASE), std::env::var(CHILD_AMQP)) {
        return child_service(database, amqp).await;
    }
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let client = reqwest::Client::new();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();

    let (mut first, address) = start_child(&db, &broker).await;
    // The child has migrated the schema before it listened.
    let pool = db.pool().await;
    let mut published = broker.probe("events", "risk.alert").await;
    post(
        &client,
        &address,
        &transaction("t-1", "12000.00", "Shanghai", t0),
    )
    .await;
    wait_until_async("the first transaction handled", DEADLINE, || async {
        (handled(&pool).await == 1).then_some(())
    })
    .await;

    first.start_kill().unwrap();
    let status = first.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
    assert!(alerts(&pool).await.is_empty(), "half a pattern");

    let (second, address) = start_child(&db, &broker).await;
    let later = t0 + Duration::minutes(3);
    post(
        &client,
        &address,
        &transaction("t-2", "50.00", "Beijing", later),
    )
    .await;
    let raised = wait_until_async("the alert after the restart", DEADLINE, || async {
        let raised = alerts(&pool).await;
        (!raised.is_empty()).then_some(raised)
    })
    .await;
    assert_eq!(raised, [(1, vec!["t-1".to_owned(), "t-2".to_owned()])]);
    let got = published
        .collect_until("risk.alert published", DEADLINE, |got| !got.is_empty())
        .await;
    assert_eq!(got.len(), 1);
    let outbox: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM risk.msgkit_outbox WHERE message_type = 'risk.alert'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(outbox, 1, "one risk.alert, ever");
    assert_eq!(handled(&pool).await, 2);
    stop(second).await;
}

async fn stop(mut child: Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
