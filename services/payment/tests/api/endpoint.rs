//! `POST /payments/callback` as the gateway (or anyone else) calls it.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, sign, spawn_app};

fn body(callback_id: &str, order_id: Uuid) -> String {
    json!({
        "callback_id": callback_id,
        "order_id": order_id,
        "charge_id": "ch_test",
        "outcome": "success",
        "amount_cents": 1_234,
    })
    .to_string()
}

async fn error_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON error")
}

async fn nothing_stored(app: &TestApp) {
    assert!(app.received().await.is_empty());
    assert_eq!(app.outbox_count("payment.callback").await, 0);
}

#[tokio::test]
async fn a_missing_or_wrong_signature_is_refused_with_401() {
    let app = spawn_app().await;
    let body = body("cb_1", Uuid::new_v4());
    let missing = app.post_callback(&body, None).await;
    assert_eq!(missing.status(), 401);
    let error = error_of(missing).await;
    assert_eq!(error["error"], "unauthorized");
    assert!(error["message"].as_str().unwrap().contains("missing"));

    let other_key = payment::signature::CallbackKey::new(vec![7; 32]).unwrap();
    let wrong = app
        .post_callback(&body, Some(&other_key.sign(body.as_bytes())))
        .await;
    assert_eq!(wrong.status(), 401);
    // Signed, then altered: the amount doubled.
    let altered = body.replace("1234", "2468");
    let tampered = app.post_callback(&altered, Some(&sign(&body))).await;
    assert_eq!(tampered.status(), 401);
    let garbage = app.post_callback(&body, Some("sha256=nothex")).await;
    assert_eq!(garbage.status(), 401);
    nothing_stored(&app).await;
    let refused = app
        .metric(
            "payment_callbacks_received_total",
            &[("result", "unauthorized")],
        )
        .await;
    assert_eq!(refused, Some(4.0));
}

#[tokio::test]
async fn a_malformed_body_is_refused_with_422_naming_the_field() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    let cases = [
        ("not json".to_owned(), "body"),
        ("[1, 2]".to_owned(), "body"),
        (
            json!({"callback_id": "cb", "order_id": order, "outcome": "success"}).to_string(),
            "amount_cents",
        ),
        (
            json!({"callback_id": "cb", "order_id": "nope", "outcome": "success", "amount_cents": 1})
                .to_string(),
            "order_id",
        ),
        (
            json!({"callback_id": "cb", "order_id": order, "outcome": "maybe", "amount_cents": 1})
                .to_string(),
            "outcome",
        ),
        (
            json!({"callback_id": "", "order_id": order, "outcome": "success", "amount_cents": 1})
                .to_string(),
            "callback_id",
        ),
        (
            json!({"callback_id": "cb", "order_id": order, "outcome": "success", "amount_cents": -1})
                .to_string(),
            "amount_cents",
        ),
    ];
    for (body, field) in cases {
        let response = app.post_callback(&body, Some(&sign(&body))).await;
        assert_eq!(response.status(), 422, "{body}");
        let error = error_of(response).await;
        assert_eq!(error["error"], "validation_failed", "{body}");
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    nothing_stored(&app).await;
}

#[tokio::test]
async fn a_callback_for_an_unknown_order_is_recorded_and_published_as_unknown() {
    let mut app = spawn_app().await;
    let order_id = Uuid::new_v4();
    let body = body("cb_unknown", order_id);
    let response = app.post_callback(&body, Some(&sign(&body))).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["known_order"], false);
    assert_eq!(answer["duplicate"], false);

    let received = app.received().await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        (received[0].order_id, received[0].known_order),
        (order_id, false)
    );
    let published = app.next_published().await;
    assert_eq!(published["order_id"], order_id.to_string());
    assert_eq!(published["known_order"], false);
    assert_eq!(published["charge_id"], "ch_test");
}

#[tokio::test]
async fn a_duplicated_callback_is_stored_and_published_once() {
    let mut app = spawn_app().await;
    let body = body("cb_twice", Uuid::new_v4());
    let first = app.post_callback(&body, Some(&sign(&body))).await;
    assert_eq!(first.status(), 200);
    let again = app.post_callback(&body, Some(&sign(&body))).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["duplicate"], true);

    assert_eq!(app.received().await.len(), 1);
    assert_eq!(app.outbox_count("payment.callback").await, 1);
    let published = app.next_published().await;
    assert_eq!(published["callback_id"], "cb_twice");
    assert!(
        app.published
            .next(std::time::Duration::from_millis(500))
            .await
            .is_none(),
        "published once"
    );
}
