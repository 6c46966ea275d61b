//! Refunds: `order.cancel_requested` -> the gateway refunds the charge in full, once ->
//! `payment.refunded`, recorded and published in one transaction.

use contracts::OrderCancelRequested;
use contracts::event_type::ORDER_CANCEL_REQUESTED;
use msgkit::message::{OutgoingMessage, header_i64, header_str};
use msgkit::outbox::{self, OutboxMessage};
use msgkit::testing::wait_until_async;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{DEADLINE, TestApp, reserve, spawn_app};

/// The customer's cancellation, as order publishes it.
fn cancellation(order_id: Uuid) -> OrderCancelRequested {
    OrderCancelRequested {
        order_id,
        customer_id: "c-1".into(),
        reason: Some("changed my mind".into()),
        requested_at: chrono::Utc::now(),
    }
}

/// Ask the service to refund `order_id`, as order does: an `order.cancel_requested` through
/// the outbox.
async fn cancel(pool: &PgPool, order_id: Uuid) {
    let message = OutboxMessage::of(
        ORDER_CANCEL_REQUESTED,
        order_id.to_string(),
        &cancellation(order_id),
    )
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    outbox::enqueue(&mut tx, &message).await.unwrap();
    tx.commit().await.unwrap();
}

impl TestApp {
    /// The order's payment, once settled: (status, charge id).
    async fn wait_for_payment(&self, order_id: Uuid) -> (String, Option<String>) {
        wait_until_async("the payment settled", DEADLINE, || async {
            sqlx::query_as("SELECT status, charge_id FROM payments WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(&self.pool)
                .await
                .unwrap()
        })
        .await
    }

    /// A charged order of `amount_cents`; returns its charge id.
    async fn charged(&self, amount_cents: i64) -> (Uuid, String) {
        let order_id = Uuid::new_v4();
        reserve(&self.pool, order_id, amount_cents).await;
        let (status, charge_id) = self.wait_for_payment(order_id).await;
        assert_eq!(status, "succeeded");
        (order_id, charge_id.unwrap())
    }

    /// The order's recorded refund, once there: (charge id, refund id, amount).
    async fn wait_for_refund(&self, order_id: Uuid) -> (String, String, i64) {
        wait_until_async("the refund recorded", DEADLINE, || async {
            sqlx::query_as(
                "SELECT charge_id, refund_id, amount_cents FROM refunds WHERE order_id = $1",
            )
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
        })
        .await
    }

    /// Refunds the gateway made of this charge.
    async fn gateway_refunds(&self, charge_id: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM gateway_refunds WHERE charge_id = $1")
            .bind(charge_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Whether the payment consumer has handled (or acked as a duplicate) this message id.
    async fn handled(&self, message_id: &str) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM msgkit_inbox WHERE message_id = $1)")
            .bind(message_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `msgkit_consumed_total` of the payment queue with this outcome.
    async fn consumed(&self, outcome: &str) -> f64 {
        self.metric(
            "msgkit_consumed_total",
            &[("queue", "payment"), ("outcome", outcome)],
        )
        .await
        .unwrap_or(0.0)
    }
}

#[tokio::test]
async fn a_cancelled_order_is_refunded_in_full_and_payment_refunded_published() {
    let app = spawn_app().await;
    let mut refunded = app.broker.probe("events", "payment.refunded").await;
    let (order_id, charge_id) = app.charged(5_000).await;

    cancel(&app.pool, order_id).await;
    let delivery = refunded
        .next(DEADLINE)
        .await
        .expect("payment.refunded published");
    let props = &delivery.properties;
    assert_eq!(
        props.correlation_id().as_ref().unwrap().as_str(),
        order_id.to_string()
    );
    assert_eq!(props.app_id().as_ref().unwrap().as_str(), "payment");
    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event["order_id"], order_id.to_string());
    assert_eq!(event["customer_id"], "c-1");
    assert_eq!(event["charge_id"], charge_id.as_str());
    assert_eq!(event["amount_cents"], 5_000, "the whole charge");
    assert!(event["refund_id"].as_str().unwrap().starts_with("re_"));
    assert!(event["occurred_at"].is_string());

    let (recorded_charge, refund_id, amount) = app.wait_for_refund(order_id).await;
    assert_eq!(
        (recorded_charge.as_str(), refund_id.as_str(), amount),
        (
            charge_id.as_str(),
            event["refund_id"].as_str().unwrap(),
            5_000
        )
    );
    assert_eq!(app.gateway_refunds(&charge_id).await, 1);
    assert_eq!(app.outbox_count("payment.refunded").await, 1);
}

#[tokio::test]
async fn a_redelivered_or_replayed_cancellation_refunds_once() {
    let app = spawn_app().await;
    let (order_id, charge_id) = app.charged(2_500).await;
    let publisher = app.broker.publisher(&contracts::topology()).await;
    let message = OutgoingMessage::event(
        ORDER_CANCEL_REQUESTED.name(),
        &order_id.to_string(),
        "order",
        &cancellation(order_id),
    )
    .unwrap();
    // The same message twice (a relay that crashed before marking it published), then a
    // replay of it under a new message id (an operator replaying an old copy).
    let mut replay = message.clone();
    replay.message_id = Uuid::now_v7().to_string();
    for copy in [&message, &message, &replay] {
        assert!(publisher.publish(copy).await.unwrap().is_confirmed());
    }
    wait_until_async("every copy handled", DEADLINE, || async {
        let duplicate = app.consumed("duplicate").await >= 1.0;
        (duplicate
            && app.handled(&message.message_id).await
            && app.handled(&replay.message_id).await)
            .then_some(())
    })
    .await;

    app.wait_for_refund(order_id).await;
    assert_eq!(
        app.gateway_refunds(&charge_id).await,
        1,
        "the gateway refunded once"
    );
    assert_eq!(app.outbox_count("payment.refunded").await, 1);
    assert_eq!(app.broker.queue_depth("payment.dlq").await, Some(0));
}

#[tokio::test]
async fn a_transient_gateway_failure_is_retried_until_the_charge_is_refunded() {
    let mut app = spawn_app().await;
    let (order_id, charge_id) = app.charged(7_000).await;
    // The gateway goes down (every call fails as unavailable) with retries to spare.
    let retries = [("RETRY_MAX_ATTEMPTS", "100"), ("RETRY_MAX_DELAY_MS", "200")];
    let down = [retries[0], retries[1], ("GATEWAY_ERROR_RATE", "1")];
    app.restart_with(&down).await;
    cancel(&app.pool, order_id).await;
    wait_until_async("the refund retried", DEADLINE, || async {
        (app.consumed("retry").await >= 2.0).then_some(())
    })
    .await;
    assert_eq!(
        app.gateway_refunds(&charge_id).await,
        0,
        "nothing refunded yet"
    );

    // The gateway is back: the pending retry refunds it.
    app.restart_with(&retries).await;
    let (_, _, amount) = app.wait_for_refund(order_id).await;
    assert_eq!(amount, 7_000);
    assert_eq!(app.gateway_refunds(&charge_id).await, 1);
    assert_eq!(app.outbox_count("payment.refunded").await, 1);
    assert_eq!(app.broker.queue_depth("payment.dlq").await, Some(0));
}

/// The dead letter of a refund asked of an order never charged.
async fn assert_dead_lettered_as_poison(app: &TestApp, order_id: Uuid, says: &str) {
    let dead = app.broker.take_one("payment.dlq", DEADLINE).await;
    let props = &dead.delivery.properties;
    assert_eq!(
        props.correlation_id().as_ref().unwrap().as_str(),
        order_id.to_string()
    );
    assert_eq!(
        props.kind().as_ref().unwrap().as_str(),
        "order.cancel_requested"
    );
    assert_eq!(header_str(props, "x-failure-reason"), Some("poison"));
    assert_eq!(header_i64(props, "x-attempt"), Some(1), "not retried");
    let message = header_str(props, "x-exception-message").unwrap();
    assert!(message.contains(says), "{message}");
    assert_eq!(app.outbox_count("payment.refunded").await, 0);
}

#[tokio::test]
async fn a_refund_of_an_order_never_charged_is_dead_lettered_as_poison() {
    let app = spawn_app().await;
    let order_id = Uuid::new_v4();
    cancel(&app.pool, order_id).await;
    assert_dead_lettered_as_poison(&app, order_id, "never charged: no payment to refund").await;
}

#[tokio::test]
async fn a_refund_of_a_declined_payment_is_dead_lettered_as_poison() {
    let app = spawn_app().await;
    let order_id = Uuid::new_v4();
    reserve(&app.pool, order_id, 100_001).await;
    assert_eq!(app.wait_for_payment(order_id).await.0, "failed");
    cancel(&app.pool, order_id).await;
    assert_dead_lettered_as_poison(&app, order_id, "its payment failed, nothing to refund").await;
}
