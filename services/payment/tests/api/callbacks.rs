//! The gateway calls back about each charge and decline, signed, once; the service publishes
//! each callback once.

use contracts::PaymentFailed;
use uuid::Uuid;

use crate::helpers::{DEADLINE, reserve, spawn_app};

#[tokio::test]
async fn a_charge_calls_back_once_signed_and_publishes_one_payment_callback() {
    let mut app = spawn_app().await;
    let order_id = Uuid::new_v4();
    reserve(&app.pool, order_id, 5_000).await;

    let received = app.wait_for_received(1).await;
    let charge_id: Option<String> =
        sqlx::query_scalar("SELECT charge_id FROM payments WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(
        (
            got.order_id,
            &got.outcome,
            got.amount_cents,
            got.known_order
        ),
        (order_id, &"success".to_owned(), 5_000, true)
    );
    assert!(charge_id.is_some());
    assert_eq!(got.charge_id, charge_id, "the gateway's charge id");

    let published = app.next_published().await;
    assert_eq!(published["callback_id"], got.callback_id.as_str());
    assert_eq!(published["order_id"], order_id.to_string());
    assert_eq!(published["outcome"], "success");
    assert_eq!(published["amount_cents"], 5_000);
    assert_eq!(published["known_order"], true);

    let owed = app.wait_for_sent(1).await;
    assert_eq!(owed.len(), 1, "one callback per charge");
    assert_eq!(
        owed[0].attempts, 1,
        "accepted at the first attempt: the signature verified"
    );
    assert_eq!(app.outbox_count("payment.callback").await, 1);
}

#[tokio::test]
async fn a_decline_calls_back_declined_and_payment_failed_carries_the_amount() {
    let mut app = spawn_app().await;
    let mut failed = app.broker.probe("events", "payment.failed").await;
    let order_id = Uuid::new_v4();
    reserve(&app.pool, order_id, 100_001).await;

    let received = app.wait_for_received(1).await;
    let got = &received[0];
    assert_eq!(
        (
            got.order_id,
            &got.outcome,
            got.amount_cents,
            got.known_order
        ),
        (order_id, &"declined".to_owned(), 100_001, true)
    );
    assert_eq!(got.charge_id, None, "nothing was charged");
    let published = app.next_published().await;
    assert_eq!(published["outcome"], "declined");
    assert_eq!(published["amount_cents"], 100_001);

    let delivery = failed
        .next(DEADLINE)
        .await
        .expect("payment.failed published");
    let event: PaymentFailed = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event.order_id, order_id);
    assert_eq!(event.amount_cents, Some(100_001));
    assert_eq!(app.wait_for_sent(1).await.len(), 1);
}
