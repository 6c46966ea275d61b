//! The order saga's `payment.succeeded`, evaluated as a transaction of its customer.

use chrono::{Duration, TimeZone, Utc};
use contracts::{PaymentSucceeded, event_type};
use msgkit::message::OutgoingMessage;
use msgkit::testing::wait_until_async;
use uuid::Uuid;

use crate::helpers::{DEADLINE, TestApp, spawn_app, transaction};

impl TestApp {
    /// Publish `payment` as payment does: correlated by its order.
    async fn publish_payment(&self, payment: &PaymentSucceeded) {
        let publisher = self.broker.publisher(&contracts::topology()).await;
        let message = OutgoingMessage::event(
            event_type::PAYMENT_SUCCEEDED.name(),
            &payment.order_id.to_string(),
            "payment",
            payment,
        )
        .unwrap();
        assert!(publisher.publish(&message).await.unwrap().is_confirmed());
    }

    /// Waits until the consumer has applied `count` payments (its inbox rows).
    async fn wait_until_payments_handled(&self, count: i64) {
        wait_until_async(
            &format!("{count} payment(s) handled by the risk consumer"),
            DEADLINE,
            || async {
                let handled: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM msgkit_inbox \
                     WHERE consumer = 'risk' AND message_type = 'payment.succeeded'",
                )
                .fetch_one(&self.pool)
                .await
                .unwrap();
                (handled >= count).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_large_payment_then_a_transaction_from_another_city_within_five_minutes_raises_the_default_alert()
 {
    let app = spawn_app().await;
    let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    let order_id = Uuid::new_v4();
    app.publish_payment(&PaymentSucceeded {
        order_id,
        charge_id: "ch-1".into(),
        amount_cents: 1_200_000,
        customer_id: "u-1".into(),
        location: Some("Shanghai".into()),
        occurred_at: Some(t0),
    })
    .await;
    // The payment must be the user's first event: arriving after a later transaction it would
    // be beyond the allowed lateness.
    app.wait_until_payments_handled(1).await;
    let second = transaction("t-2", "50.00", "Beijing", t0 + Duration::minutes(3));
    assert_eq!(app.post_transaction(&second).await.status(), 202);

    let alerts = app.wait_for_alerts("u-1").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule_id"], 1);
    assert_eq!(
        alerts[0]["transaction_ids"],
        serde_json::json!([format!("payment-{order_id}"), "t-2"])
    );
}

#[tokio::test]
async fn a_payment_from_before_the_customer_field_is_handled_without_an_alert() {
    let app = spawn_app().await;
    let old = PaymentSucceeded {
        order_id: Uuid::new_v4(),
        charge_id: "ch-1".into(),
        amount_cents: 1_200_000,
        customer_id: String::new(),
        location: None,
        occurred_at: None,
    };
    app.publish_payment(&old).await;
    app.wait_until_payments_handled(1).await;
    assert_eq!(app.outbox_count("risk.alert").await, 0);
    assert_eq!(app.broker.queue_depth("risk.dlq").await, Some(0));
}
