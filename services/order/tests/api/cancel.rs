//! `POST /orders/{id}/cancel`: a confirmed order's cancellation is recorded and announced to
//! payment; the refund (`payment.refunded`, sent here by the test as payment would) cancels
//! the order; anything else is a 409 saying why.

use contracts::event_type::{INVENTORY_REJECTED, PAYMENT_REFUNDED, PAYMENT_SUCCEEDED};
use contracts::{OrderSetback, PaymentRefunded, PaymentSucceeded};
use msgkit::message::OutgoingMessage;
use msgkit::testing::wait_until_async;
use msgkit::{ConfirmedPublisher, EventType, Shutdown};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{DEADLINE, TestApp, spawn_app, valid_order};

impl TestApp {
    /// `POST /orders/{id}/cancel` with this JSON body, or none.
    async fn cancel(&self, id: &str, body: Option<Value>) -> reqwest::Response {
        let request = self
            .client
            .post(format!("{}/orders/{id}/cancel", self.address));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        request.send().await.expect("POST /orders/{id}/cancel")
    }

    /// Publish `payload` as `event` about `order_id`, as another service would.
    async fn publish<P: Serialize>(&self, event: EventType<P>, order_id: &str, payload: &P) {
        let publisher = ConfirmedPublisher::open(
            &self.broker.settings("test"),
            &contracts::topology(),
            &Shutdown::new(),
        )
        .await
        .unwrap();
        let message = OutgoingMessage::event(event.name(), order_id, "test", payload).unwrap();
        assert!(publisher.publish(&message).await.unwrap().is_confirmed());
    }

    /// Wait until the order has `status`; returns it.
    async fn wait_status(&self, order_id: &str, status: &str) -> Value {
        wait_until_async(&format!("order {order_id} {status}"), DEADLINE, || async {
            let order: Value = self.get_order(order_id).await.json().await.ok()?;
            (order["status"] == status).then_some(order)
        })
        .await
    }

    /// A placed order.
    async fn placed(&self) -> String {
        let body: Value = self.post_order(&valid_order()).await.json().await.unwrap();
        body["order_id"].as_str().unwrap().to_owned()
    }

    /// A placed order, confirmed by a `payment.succeeded` of 12.34.
    async fn confirmed(&self) -> String {
        let order_id = self.placed().await;
        let payment = PaymentSucceeded {
            order_id: order_id.parse().unwrap(),
            charge_id: "ch_test".into(),
            amount_cents: 1234,
            customer_id: "c-1".into(),
            location: None,
            occurred_at: None,
        };
        self.publish(PAYMENT_SUCCEEDED, &order_id, &payment).await;
        self.wait_status(&order_id, "confirmed").await;
        order_id
    }

    /// What payment publishes once it has refunded the order's 12.34.
    async fn refund(&self, order_id: &str) {
        let refund = PaymentRefunded {
            order_id: order_id.parse().unwrap(),
            customer_id: "c-1".into(),
            charge_id: "ch_test".into(),
            refund_id: "re_test".into(),
            amount_cents: 1234,
            occurred_at: chrono::Utc::now(),
        };
        self.publish(PAYMENT_REFUNDED, order_id, &refund).await;
    }

    async fn outbox_count(&self, message_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox WHERE message_type = $1")
            .bind(message_type)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

fn history(order: &Value) -> Vec<(String, String)> {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["status"].as_str().unwrap().to_owned(),
                h["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The 409's code and message.
async fn conflict(response: reqwest::Response) -> (String, String) {
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    (
        body["error"].as_str().unwrap().to_owned(),
        body["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn cancelling_a_confirmed_order_records_the_request_and_asks_payment_to_refund() {
    let app = spawn_app().await;
    let mut requested = app.broker.probe("events", "order.cancel_requested").await;
    let order_id = app.confirmed().await;

    let response = app
        .cancel(&order_id, Some(json!({"reason": " changed my mind "})))
        .await;
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["order_id"], order_id.as_str());
    assert_eq!(order["status"], "confirmed", "confirmed until refunded");
    assert!(order["cancel_requested_at"].is_string(), "{order}");
    let last = order["history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["event"], "order.cancel_requested");
    assert_eq!(last["status"], "confirmed");
    assert_eq!(last["reason"], "cancellation requested: changed my mind");

    let delivery = requested
        .next(DEADLINE)
        .await
        .expect("order.cancel_requested published");
    let props = &delivery.properties;
    assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), order_id);
    assert_eq!(props.app_id().as_ref().unwrap().as_str(), "order");
    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event["order_id"], order_id.as_str());
    assert_eq!(event["customer_id"], "c-1");
    assert_eq!(event["reason"], "changed my mind");
    assert!(event["requested_at"].is_string());
    msgkit::testing::wait_until_async("the request in the payment queue", DEADLINE, || async {
        app.broker
            .queue_depth("payment")
            .await
            .filter(|depth| *depth == 1)
    })
    .await;
}

#[tokio::test]
async fn a_cancellation_without_a_body_has_no_reason() {
    let app = spawn_app().await;
    let order_id = app.confirmed().await;
    let response = app.cancel(&order_id, None).await;
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.unwrap();
    let last = order["history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["reason"], "cancellation requested");
}

#[tokio::test]
async fn the_refund_cancels_the_order_and_tells_notify() {
    let app = spawn_app().await;
    let mut cancelled = app.broker.probe("events", "order.cancelled").await;
    let order_id = app.confirmed().await;
    assert_eq!(app.cancel(&order_id, None).await.status(), 202);

    app.refund(&order_id).await;
    let order = app.wait_status(&order_id, "cancelled").await;
    assert_eq!(
        history(&order),
        [
            ("pending".to_owned(), "order.placed".to_owned()),
            ("confirmed".to_owned(), "payment.succeeded".to_owned()),
            ("confirmed".to_owned(), "order.cancel_requested".to_owned()),
            ("cancelled".to_owned(), "payment.refunded".to_owned()),
        ]
    );
    let delivery = cancelled
        .next(DEADLINE)
        .await
        .expect("order.cancelled published");
    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event["status"], "cancelled");
    assert_eq!(event["customer_id"], "c-1");
    assert_eq!(
        event["reason"], "cancelled by the customer; refunded 12.34",
        "{event}"
    );

    let (code, message) = conflict(app.cancel(&order_id, None).await).await;
    assert_eq!(code, "order_already_cancelled");
    assert!(message.contains("already cancelled"), "{message}");
}

#[tokio::test]
async fn cancelling_twice_is_a_conflict_saying_it_was_already_requested() {
    let app = spawn_app().await;
    let order_id = app.confirmed().await;
    assert_eq!(app.cancel(&order_id, None).await.status(), 202);

    let (code, message) = conflict(app.cancel(&order_id, None).await).await;
    assert_eq!(code, "cancellation_already_requested");
    assert!(message.contains("already requested"), "{message}");
    assert_eq!(app.outbox_count("order.cancel_requested").await, 1);
}

#[tokio::test]
async fn a_pending_order_cannot_be_cancelled() {
    let app = spawn_app().await;
    let order_id = app.placed().await;
    let (code, message) = conflict(app.cancel(&order_id, None).await).await;
    assert_eq!(code, "order_not_confirmed");
    assert!(message.contains("pending"), "{message}");
    assert_eq!(app.outbox_count("order.cancel_requested").await, 0);
    let order: Value = app.get_order(&order_id).await.json().await.unwrap();
    assert_eq!(history(&order).len(), 1, "nothing recorded: {order}");
}

#[tokio::test]
async fn a_rejected_order_cannot_be_cancelled() {
    let app = spawn_app().await;
    let order_id = app.placed().await;
    let rejection = OrderSetback {
        order_id: order_id.parse().unwrap(),
        reason: "out of stock: SKU-1".into(),
    };
    app.publish(INVENTORY_REJECTED, &order_id, &rejection).await;
    app.wait_status(&order_id, "rejected").await;

    let (code, message) = conflict(app.cancel(&order_id, None).await).await;
    assert_eq!(code, "order_rejected");
    assert!(message.contains("rejected"), "{message}");
}

#[tokio::test]
async fn cancelling_an_unknown_order_is_a_404() {
    let app = spawn_app().await;
    for id in [Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let response = app.cancel(&id, None).await;
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
    }
}

#[tokio::test]
async fn of_concurrent_cancellations_exactly_one_is_accepted() {
    let app = spawn_app().await;
    for _ in 0..3 {
        let order_id = app.confirmed().await;
        let statuses: Vec<u16> = futures_util::future::join_all(
            (0..8).map(|_| async { app.cancel(&order_id, None).await.status().as_u16() }),
        )
        .await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 202).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 409).count(),
            7,
            "{statuses:?}"
        );
        let order: Value = app.get_order(&order_id).await.json().await.unwrap();
        let requests = history(&order)
            .iter()
            .filter(|(_, event)| event == "order.cancel_requested")
            .count();
        assert_eq!(requests, 1, "{order}");
    }
    assert_eq!(app.outbox_count("order.cancel_requested").await, 3);
}

#[tokio::test]
async fn an_invalid_cancellation_body_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let order_id = app.confirmed().await;
    for (body, field) in [
        (json!({"reason": "  "}), "reason"),
        (json!({"reason": "x".repeat(501)}), "reason"),
        (json!({"why": "no"}), "why"),
    ] {
        let response = app.cancel(&order_id, Some(body)).await;
        assert_eq!(response.status(), 422);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], field, "{problem}");
    }
    let order: Value = app.get_order(&order_id).await.json().await.unwrap();
    assert!(order.get("cancel_requested_at").is_none(), "{order}");
}
