use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.count("orders").await, 0, "no order stored");
    assert_eq!(app.count("order_items").await, 0, "no order line stored");
    assert_eq!(app.count("msgkit_outbox").await, 0, "no event stored");
}

#[tokio::test]
async fn invalid_orders_get_a_422_naming_the_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"items": [{"sku": "SKU-1", "quantity": 1}]}),
            "customer_id",
        ),
        (json!({"customer_id": "c-1"}), "items"),
        (json!({"customer_id": "c-1", "items": []}), "items"),
        (
            json!({"customer_id": "", "items": [{"sku": "SKU-1", "quantity": 1}]}),
            "customer_id",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 0}]}),
            "items[0].quantity",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": -3}]}),
            "items[0].quantity",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 1.5}]}),
            "items[0].quantity",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": "2"}]}),
            "items[0].quantity",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"quantity": 2}]}),
            "items[0].sku",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "SKU 1", "quantity": 2}]}),
            "items[0].sku",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "A", "quantity": 1}, {"sku": "A", "quantity": 1}]}),
            "items[1].sku",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 1}], "coupon": "X"}),
            "coupon",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 1, "price": 3}]}),
            "items[0].price",
        ),
        (
            json!({"customer_id": 7, "items": [{"sku": "SKU-1", "quantity": 1}]}),
            "customer_id",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 1}], "location": " "}),
            "location",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 1}], "location": "x".repeat(101)}),
            "location",
        ),
        (
            json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 1}], "location": 5}),
            "location",
        ),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let response = app.post_order(&body).await;
        assert_eq!(response.status(), 422, "for {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "validation_failed", "for {body}");
        assert_eq!(error["field"], field, "for {body}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_a_400() {
    let app = spawn_app().await;
    for body in ["not json", "{\"customer_id\": ", ""] {
        let response = app.post_raw(body, "application/json").await;
        assert_eq!(response.status(), 400, "for {body:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "malformed_json");
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_body_declared_as_another_media_type_gets_a_415() {
    let app = spawn_app().await;
    let response = app
        .post_raw(
            r#"{"customer_id":"c-1","items":[{"sku":"S","quantity":1}]}"#,
            "text/plain",
        )
        .await;
    assert_eq!(response.status(), 415);
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_one_megabyte_body_gets_a_413() {
    let app = spawn_app().await;
    let padding = "x".repeat(1024 * 1024);
    let body = format!(r#"{{"customer_id":"{padding}","items":[{{"sku":"S","quantity":1}}]}}"#);
    let response = app.post_raw(body, "application/json").await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "payload_too_large");
    assert_nothing_stored(&app).await;
}
