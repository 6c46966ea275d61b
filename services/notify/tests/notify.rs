//! The notify service: its routes called directly with test messages, and its settings.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use contracts::OrderConcluded;
use contracts::event_type::{ORDER_CONFIRMED, ORDER_REJECTED};
use msgkit::testing::{TestBroker, TestDatabase, TestMessage, service_settings};

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
