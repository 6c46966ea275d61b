use serde_json::{Value, json};

use crate::helpers::{spawn_app, valid_order};

#[tokio::test]
async fn a_retried_request_with_the_same_key_returns_the_first_response() {
    let app = spawn_app().await;
    let send = || {
        app.client
            .post(format!("{}/orders", app.address))
            .header("idempotency-key", "retry-1")
            .json(&valid_order())
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(app.count("msgkit_outbox").await, 1);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_refused() {
    let app = spawn_app().await;
    let post = |body: Value| {
        app.client
            .post(format!("{}/orders", app.address))
            .header("idempotency-key", "reused")
            .json(&body)
            .send()
    };
    assert_eq!(post(valid_order()).await.unwrap().status(), 202);
    let other = json!({"customer_id": "c-2", "items": [{"sku": "SKU-9", "quantity": 1}]});
    let response = post(other).await.unwrap();
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "idempotency_key_reused");
    assert_eq!(error["field"], "Idempotency-Key");
    assert_eq!(app.count("orders").await, 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_order() {
    let app = spawn_app().await;
    let mut requests = Vec::new();
    for _ in 0..8 {
        let request = app
            .client
            .post(format!("{}/orders", app.address))
            .header("idempotency-key", "burst")
            .json(&valid_order())
            .send();
        requests.push(request);
    }
    let responses = futures_util::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        ids.insert(body["order_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "every response names the same order");
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(app.count("msgkit_outbox").await, 1);
}

#[tokio::test]
async fn a_malformed_key_is_a_400() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/orders", app.address))
        .header("idempotency-key", "x".repeat(300))
        .json(&valid_order())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(app.count("orders").await, 0);
}
