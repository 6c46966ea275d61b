//! The notify service: its routes called directly with test messages, its settings, and risk
//! alerts through the running service.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use contracts::event_type::{
    ORDER_CONFIRMED, ORDER_REJECTED, RECONCILE_MATCHED, RECONCILE_MISMATCH, RECONCILE_RESOLVED,
    RISK_ALERT,
};
use contracts::{OrderConcluded, Reconciliation, RiskAlert};
use msgkit::Shutdown;
use msgkit::message::OutgoingMessage;
use msgkit::testing::{
    TestBroker, TestDatabase, TestMessage, metric_value, scrape, service_settings, wait_until_async,
};
use sqlx::PgPool;

#[tokio::test]
async fn the_services_own_consumer_defaults_survive_when_nothing_is_set() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let settings = service_settings("notify", "notify", &db, broker.settings("notify"));
    let service = notify::build(settings).await.unwrap();
    let [consumer] = service.consumers() else {
        panic!("one consumer");
    };
    assert_eq!(consumer.queue, "notify");
    assert_eq!(consumer.batch, 16, "notify's own batch size");
    assert_eq!(consumer.prefetch, 32, "the kit's default prefetch");
    assert!(!consumer.faults.is_active(), "no faults unless configured");
}

#[tokio::test]
async fn the_queues_own_settings_win_over_the_shared_ones() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let mut settings = service_settings("notify", "notify", &db, broker.settings("notify"));
    settings.source.set("CONSUMER_BATCH", "8");
    settings.source.set("CONSUMER_PREFETCH", "64");
    settings.source.set("NOTIFY_CONSUMER_BATCH", "2");
    settings.source.set("ORDER_CONSUMER_PREFETCH", "1");
    let service = notify::build(settings).await.unwrap();
    let [consumer] = service.consumers() else {
        panic!("one consumer");
    };
    assert_eq!(consumer.batch, 2, "NOTIFY_CONSUMER_BATCH");
    assert_eq!(
        consumer.prefetch, 64,
        "CONSUMER_PREFETCH; ORDER_ is another queue's"
    );
}

#[tokio::test]
async fn a_final_state_is_notified_once_however_often_it_arrives() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let settings = service_settings("notify", "notify", &db, broker.settings("notify"));
    let service = notify::build(settings).await.unwrap();
    let order_id = uuid::Uuid::now_v7();
    let concluded = |status: &str| OrderConcluded {
        order_id,
        customer_id: "c-1".into(),
        status: status.into(),
        reason: (status != "confirmed").then(|| "out of stock".into()),
    };
    let routes = notify::routes();
    let confirmed = TestMessage::event(ORDER_CONFIRMED, &concluded("confirmed"));
    // The same event twice (a replay with a new message id), then another final state.
    for message in [
        confirmed.clone().build(),
        confirmed.message_id("another-id").build(),
        TestMessage::event(ORDER_REJECTED, &concluded("rejected")).build(),
    ] {
        let mut tx = service.pool().begin().await.unwrap();
        msgkit::consume::Handler::handle(&routes, &message, &mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let sent: Vec<(String, String)> =
        sqlx::query_as("SELECT status, message FROM notifications ORDER BY status")
            .fetch_all(service.pool())
            .await
            .unwrap();
    assert_eq!(
        sent,
        [
            (
                "confirmed".to_owned(),
                format!("Your order {order_id} is confirmed.")
            ),
            (
                "rejected".to_owned(),
                format!("Your order {order_id} was rejected: out of stock.")
            ),
        ]
    );
}

const DEADLINE: Duration = Duration::from_secs(30);

/// The notify service running in this test's database and vhost until dropped.
struct RunningNotify {
    pool: PgPool,
    address: String,
    broker: TestBroker,
    shutdown: Shutdown,
    _db: TestDatabase,
}

impl Drop for RunningNotify {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn run_notify() -> RunningNotify {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let settings = service_settings("notify", "notify", &db, broker.settings("notify"));
    let service = notify::build(settings).await.unwrap();
    let pool = service.pool().clone();
    let address = format!("http://{}", service.local_addr().unwrap());
    let shutdown = Shutdown::new();
    tokio::spawn(service.run_until_stopped(shutdown.clone()));
    RunningNotify {
        pool,
        address,
        broker,
        shutdown,
        _db: db,
    }
}

impl RunningNotify {
    /// Publish `message` as risk's relay does.
    async fn publish(&self, message: &OutgoingMessage) {
        let publisher = self.broker.publisher(&contracts::topology()).await;
        assert!(publisher.publish(message).await.unwrap().is_confirmed());
        publisher.close().await;
    }

    /// Waits until notify has handled `count` distinct `risk.alert` messages (its inbox).
    async fn wait_until_handled(&self, count: i64) {
        wait_until_async(
            &format!("{count} risk alert(s) handled"),
            DEADLINE,
            || async {
                let handled: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM msgkit_inbox WHERE message_type = 'risk.alert'",
                )
                .fetch_one(&self.pool)
                .await
                .unwrap();
                (handled >= count).then_some(())
            },
        )
        .await;
    }

    async fn told(&self) -> Vec<(uuid::Uuid, String, Vec<String>, String)> {
        sqlx::query_as(
            "SELECT alert_id, user_id, transaction_ids, message FROM risk_notifications \
             ORDER BY sent_at",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

fn risk_alert(severity: &str) -> RiskAlert {
    RiskAlert {
        alert_id: uuid::Uuid::now_v7(),
        user_id: "u-1".into(),
        rule_id: 1,
        rule_version: 1,
        severity: severity.into(),
        transaction_ids: vec!["t-1".into(), "t-2".into()],
        at: chrono::DateTime::UNIX_EPOCH,
    }
}

fn alert_message(alert: &RiskAlert) -> OutgoingMessage {
    OutgoingMessage::event(RISK_ALERT.name(), &alert.user_id, "risk", alert).unwrap()
}

#[tokio::test]
async fn a_high_severity_risk_alert_is_told_once_however_often_it_is_delivered() {
    let notify = run_notify().await;
    let alert = risk_alert("high");
    let message = alert_message(&alert);
    notify.publish(&message).await;
    notify.wait_until_handled(1).await;
    // A redelivered copy (the same message id): the inbox acks it as a duplicate.
    notify.publish(&message).await;
    let client = reqwest::Client::new();
    wait_until_async("the copy acked as a duplicate", DEADLINE, || async {
        let exposition = scrape(&client, &notify.address).await;
        let labels = [("queue", "notify"), ("outcome", "duplicate")];
        let duplicates = metric_value(&exposition, "msgkit_consumed_total", &labels);
        (duplicates >= Some(1.0)).then_some(())
    })
    .await;
    // A replay (a new message id): the inbox cannot tell, the alert id does.
    notify.publish(&alert_message(&alert)).await;
    notify.wait_until_handled(2).await;

    let told = notify.told().await;
    assert_eq!(told.len(), 1, "{told:?}");
    let (alert_id, user_id, transactions, text) = &told[0];
    assert_eq!((alert_id, user_id.as_str()), (&alert.alert_id, "u-1"));
    assert_eq!(transactions, &["t-1", "t-2"]);
    assert!(text.contains("t-1, t-2"), "{text}");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&notify.pool)
        .await
        .unwrap();
    assert_eq!(orders, 0, "the order notifications are another table");
}

#[tokio::test]
async fn a_risk_alert_below_high_severity_is_acked_without_telling_anyone() {
    let notify = run_notify().await;
    for severity in ["low", "medium"] {
        notify.publish(&alert_message(&risk_alert(severity))).await;
    }
    notify.wait_until_handled(2).await;
    assert!(notify.told().await.is_empty());
    assert_eq!(notify.broker.queue_depth("notify.dlq").await, Some(0));
}

fn reconciliation(outcome: &str) -> Reconciliation {
    Reconciliation {
        order_id: uuid::Uuid::nil(),
        outcome: outcome.into(),
        app_amount_cents: Some(1_250),
        gateway_amount_cents: None,
        decided_at: chrono::DateTime::UNIX_EPOCH,
    }
}

#[tokio::test]
async fn operators_are_told_once_of_a_mismatch_and_once_of_its_resolution() {
    let notify = run_notify().await;
    let order = uuid::Uuid::nil().to_string();
    let mismatch = reconciliation("third-party-missing");
    let message =
        OutgoingMessage::event(RECONCILE_MISMATCH.name(), &order, "reconcile", &mismatch).unwrap();
    notify.publish(&message).await;
    // A replay under a new message id collides on the order, event and outcome.
    let replay =
        OutgoingMessage::event(RECONCILE_MISMATCH.name(), &order, "reconcile", &mismatch).unwrap();
    notify.publish(&replay).await;
    // A match: acked, nobody told.
    let matched = OutgoingMessage::event(
        RECONCILE_MATCHED.name(),
        &order,
        "reconcile",
        &reconciliation("matched"),
    )
    .unwrap();
    notify.publish(&matched).await;
    let resolved = reconciliation("late-match");
    let message =
        OutgoingMessage::event(RECONCILE_RESOLVED.name(), &order, "reconcile", &resolved).unwrap();
    notify.publish(&message).await;

    let told: Vec<(String, String, String)> = wait_until_async("both told", DEADLINE, || async {
        let handled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM msgkit_inbox WHERE message_type LIKE 'reconcile.%'",
        )
        .fetch_one(&notify.pool)
        .await
        .unwrap();
        if handled < 4 {
            return None;
        }
        let rows = sqlx::query_as(
            "SELECT event, outcome, message FROM reconcile_notifications ORDER BY sent_at, event",
        )
        .fetch_all(&notify.pool)
        .await
        .unwrap();
        Some(rows)
    })
    .await;
    assert_eq!(told.len(), 2, "{told:?}");
    assert_eq!(
        (told[0].0.as_str(), told[0].1.as_str()),
        ("mismatch", "third-party-missing")
    );
    assert!(
        told[0].2.contains("ours: 12.50, the gateway's: none"),
        "{}",
        told[0].2
    );
    assert_eq!(
        (told[1].0.as_str(), told[1].1.as_str()),
        ("resolved", "late-match")
    );
    assert_eq!(notify.broker.queue_depth("notify.dlq").await, Some(0));
}
