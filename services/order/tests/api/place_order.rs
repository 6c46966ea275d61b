use msgkit::message::{ATTEMPT_HEADER, header_i64, header_str};
use serde_json::Value;

use crate::helpers::{DEADLINE, spawn_app, valid_order};

const INCOMING_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn a_valid_order_is_accepted_and_its_event_published_with_the_whole_contract() {
    let app = spawn_app().await;
    let mut probe = app.broker.probe("events", "order.placed").await;

    let response = app
        .client
        .post(format!("{}/orders", app.address))
        .header("traceparent", INCOMING_TRACEPARENT)
        .json(&valid_order())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/orders/{order_id}"));

    let delivery = probe.next(DEADLINE).await.expect("order.placed published");
    let props = &delivery.properties;
    let outbox_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM msgkit_outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        props.message_id().as_ref().unwrap().as_str(),
        outbox_id.to_string()
    );
    assert_eq!(props.kind().as_ref().unwrap().as_str(), "order.placed");
    assert_eq!(*props.delivery_mode(), Some(2));
    assert_eq!(
        props.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), order_id);
    assert_eq!(props.app_id().as_ref().unwrap().as_str(), "order");
    let sent_at = props.timestamp().expect("timestamp");
    let now = chrono::Utc::now().timestamp() as u64;
    assert!(
        now.abs_diff(sent_at) < 60,
        "timestamp {sent_at} is not now ({now})"
    );
    assert_eq!(header_i64(props, ATTEMPT_HEADER), Some(1));
    let traceparent = header_str(props, "traceparent").expect("traceparent header");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts[1], "0af7651916cd43dd8448eb211c80319c",
        "the request's trace continues"
    );
    assert_ne!(parts[2], "b7ad6b7169203331", "with a span of its own");

    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event["order_id"], order_id.as_str());
    assert_eq!(event["customer_id"], "c-1");
    assert_eq!(event["items"][0]["sku"], "SKU-1");
    assert_eq!(event["items"][0]["quantity"], 2);
}

#[tokio::test]
async fn the_event_reaches_the_inventory_work_queue_declared_by_the_kit() {
    let app = spawn_app().await;
    let response = app.post_order(&valid_order()).await;
    assert_eq!(response.status(), 202);
    msgkit::testing::wait_until_async("order.placed in the inventory queue", DEADLINE, || async {
        app.broker
            .queue_depth("inventory")
            .await
            .filter(|depth| *depth == 1)
    })
    .await;
    for queue in ["order", "payment", "notify", "inventory.dlq"] {
        assert_eq!(
            app.broker.queue_depth(queue).await,
            Some(0),
            "queue {queue}"
        );
    }
}

#[tokio::test]
async fn a_placed_order_can_be_read_back_with_its_history() {
    let app = spawn_app().await;
    let body: Value = app.post_order(&valid_order()).await.json().await.unwrap();
    let order_id = body["order_id"].as_str().unwrap();

    let response = app.get_order(order_id).await;
    assert_eq!(response.status(), 200);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["order_id"], order_id);
    assert_eq!(order["status"], "pending");
    assert_eq!(order["customer_id"], "c-1");
    assert_eq!(order["items"][0]["sku"], "SKU-1");
    assert_eq!(order["items"][0]["quantity"], 2);
    assert_eq!(order["history"][0]["status"], "pending");
    assert_eq!(order["history"][0]["event"], "order.placed");
}

#[tokio::test]
async fn an_orders_location_is_stored_and_carried_in_order_placed() {
    let app = spawn_app().await;
    let mut probe = app.broker.probe("events", "order.placed").await;
    let mut order = valid_order();
    order["location"] = " Shanghai ".into();
    let body: Value = app.post_order(&order).await.json().await.unwrap();
    let order_id = body["order_id"].as_str().unwrap();

    let stored: Value = app.get_order(order_id).await.json().await.unwrap();
    assert_eq!(
        stored["location"], "Shanghai",
        "trimmed, as customer ids are"
    );
    let delivery = probe.next(DEADLINE).await.expect("order.placed published");
    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event["location"], "Shanghai");
}

#[tokio::test]
async fn an_order_without_a_location_has_none() {
    let app = spawn_app().await;
    let body: Value = app.post_order(&valid_order()).await.json().await.unwrap();
    let stored: Value = app
        .get_order(body["order_id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert!(stored.get("location").is_none(), "{stored}");
}

#[tokio::test]
async fn an_unknown_order_is_a_404() {
    let app = spawn_app().await;
    for id in ["6f1c1c56-0c4b-4d5e-9d7a-1d2b3c4d5e6f", "not-a-uuid"] {
        let response = app.get_order(id).await;
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
    }
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    msgkit::testing::wait_until_async("/readyz to report ready", DEADLINE, || async {
        let response = app
            .client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let metrics = msgkit::testing::scrape(&app.client, &app.address).await;
    assert_eq!(
        msgkit::testing::metric_value(&metrics, "msgkit_outbox_pending", &[("service", "order")]),
        Some(0.0),
        "{metrics}"
    );
}
