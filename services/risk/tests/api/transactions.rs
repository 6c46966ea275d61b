//! `POST /transactions`: validation, and a repeated transaction recorded once.

use chrono::Utc;
use serde_json::Value;

use crate::helpers::{spawn_app, transaction};

#[tokio::test]
async fn the_same_transaction_posted_twice_is_stored_and_published_once() {
    let app = spawn_app().await;
    let body = transaction("t-1", "12.50", "Shanghai", Utc::now());
    assert_eq!(app.post_transaction(&body).await.status(), 202);
    let again = app.post_transaction(&body).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["transaction_id"], "t-1");

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert_eq!(app.outbox_count("transaction.recorded").await, 1);
}

#[tokio::test]
async fn a_transaction_id_reused_with_other_content_is_a_conflict() {
    let app = spawn_app().await;
    let at = Utc::now();
    let body = transaction("t-1", "12.50", "Shanghai", at);
    assert_eq!(app.post_transaction(&body).await.status(), 202);
    let other = transaction("t-1", "13.50", "Shanghai", at);
    let response = app.post_transaction(&other).await;
    assert_eq!(response.status(), 409);
    assert_eq!(app.outbox_count("transaction.recorded").await, 1);
}

#[tokio::test]
async fn an_amount_without_two_decimal_places_is_refused_naming_amount() {
    let app = spawn_app().await;
    let response = app
        .post_transaction(&transaction("t-1", "12.5", "Shanghai", Utc::now()))
        .await;
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "validation_failed");
    assert_eq!(error["field"], "amount");

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing is stored");
}
