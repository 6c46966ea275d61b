//! A customer cancels a confirmed order, every service running: payment refunds the charge,
//! inventory puts the stock back, the order ends `cancelled` and notify tells the customer.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use msgkit::testing::wait_until_async;
use saga::{DEADLINE, Saga};
use serde_json::Value;

#[tokio::test]
async fn a_confirmed_order_cancelled_by_the_customer_is_refunded_restocked_and_notified() {
    let saga = Saga::start(&[]).await;
    let mut refunds = saga.broker.probe("events", "payment.refunded").await;
    let before = (saga.stock("SKU-1").await, saga.stock("SKU-2").await);
    let order_id = saga.place_order("c-1", &[("SKU-1", 2), ("SKU-2", 1)]).await;
    assert_eq!(saga.wait_final(&order_id).await["status"], "confirmed");
    assert_eq!(saga.wait_notifications(&order_id, 1).await, ["confirmed"]);

    let response = saga
        .client
        .post(format!("{}/orders/{order_id}/cancel", saga.api))
        .json(&serde_json::json!({"reason": "changed my mind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let order = wait_until_async("the order cancelled", DEADLINE, || async {
        let order = saga.order(&order_id).await;
        (order["status"] == "cancelled").then_some(order)
    })
    .await;
    let history: Vec<(&str, &str)> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["status"].as_str().unwrap(), h["event"].as_str().unwrap()))
        .collect();
    assert_eq!(
        history,
        [
            ("pending", "order.placed"),
            ("pending", "inventory.reserved"),
            ("confirmed", "payment.succeeded"),
            ("confirmed", "order.cancel_requested"),
            ("cancelled", "payment.refunded"),
        ]
    );

    let refund = refunds.next(DEADLINE).await.expect("payment.refunded");
    let refund: Value = serde_json::from_slice(&refund.data).unwrap();
    assert_eq!(refund["amount_cents"], 2 * 1000 + 2500, "the whole charge");
    let gateway_refunds: Vec<i64> = sqlx::query_scalar("SELECT amount_cents FROM gateway_refunds")
        .fetch_all(&saga.payment)
        .await
        .unwrap();
    assert_eq!(gateway_refunds, [4500], "refunded once at the gateway");

    wait_until_async("the stock put back", DEADLINE, || async {
        ((saga.stock("SKU-1").await, saga.stock("SKU-2").await) == before).then_some(())
    })
    .await;
    assert_eq!(
        saga.wait_notifications(&order_id, 2).await,
        ["confirmed", "cancelled"]
    );
    let told: String = sqlx::query_scalar(
        "SELECT message FROM notifications WHERE order_id = $1::uuid AND status = 'cancelled'",
    )
    .bind(&order_id)
    .fetch_one(&saga.notify)
    .await
    .unwrap();
    assert!(told.contains("refunded 45.00"), "{told}");

    // Settled: no second refund was published, the stock stays put, nothing dead-lettered.
    for queue in ["order", "inventory", "payment", "notify"] {
        wait_until_async(&format!("{queue} drained"), DEADLINE, || async {
            (saga.broker.queue_depth(queue).await == Some(0)).then_some(())
        })
        .await;
    }
    let published: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM msgkit_outbox WHERE message_type = 'payment.refunded'",
    )
    .fetch_one(&saga.payment)
    .await
    .unwrap();
    assert_eq!(published, 1);
    assert_eq!(
        (saga.stock("SKU-1").await, saga.stock("SKU-2").await),
        before
    );
    for dlq in ["order.dlq", "inventory.dlq", "payment.dlq", "notify.dlq"] {
        assert_eq!(saga.broker.queue_depth(dlq).await, Some(0), "{dlq}");
    }
    saga.stop().await;
}
