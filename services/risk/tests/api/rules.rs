//! `/rules`: rules as data, applied to the events handled after each change.

use chrono::{TimeZone, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{spawn_app, transaction};

fn condition(when: &str) -> Value {
    json!({"key": "user_id", "kind": {"type": "condition", "when": when}, "severity": "low"})
}

#[tokio::test]
async fn the_default_rule_is_installed_and_listed() {
    let app = spawn_app().await;
    let rules: Vec<Value> = app
        .send(Method::GET, "/rules", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    assert_eq!(
        (rule["id"].as_i64(), rule["version"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["severity"], "high");
    assert_eq!(rule["kind"]["type"], "sequence");
    assert_eq!(rule["kind"]["within_ms"], 300_000);
}

#[tokio::test]
async fn a_rule_that_does_not_compile_is_refused_naming_its_field() {
    let app = spawn_app().await;
    for when in ["amount_cents >", "amount > 5"] {
        let response = app
            .send(Method::POST, "/rules", Some(&condition(when)))
            .await;
        assert_eq!(response.status(), 400, "{when}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "invalid_rule", "{when}");
        assert_eq!(error["field"], "kind.when", "{when}: {error}");
    }
    let rules: Vec<Value> = app
        .send(Method::GET, "/rules", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rules.len(), 1, "nothing is stored");
}

#[tokio::test]
async fn an_edited_rule_applies_to_the_events_handled_after_the_edit() {
    let app = spawn_app().await;
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    let created = app
        .send(
            Method::POST,
            "/rules",
            Some(&condition("amount_cents > 1000000")),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        (created["id"].as_i64(), created["version"].as_i64()),
        (Some(2), Some(1))
    );

    let below = transaction("t-1", "6000.00", "Shanghai", at);
    assert_eq!(app.post_transaction(&below).await.status(), 202);
    app.wait_until_handled(1).await;
    assert!(app.alerts_of("u-1").await.is_empty());

    let edited = app
        .send(
            Method::PUT,
            "/rules/2",
            Some(&condition("amount_cents > 500000")),
        )
        .await;
    assert_eq!(edited.status(), 200);
    let again = transaction(
        "t-2",
        "6000.00",
        "Shanghai",
        at + chrono::Duration::minutes(1),
    );
    assert_eq!(app.post_transaction(&again).await.status(), 202);
    app.wait_until_handled(2).await;
    let alerts = app.alerts_of("u-1").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule_id"], 2);
    assert_eq!(alerts[0]["rule_version"], 2);
    assert_eq!(alerts[0]["transaction_ids"], json!(["t-2"]));
}

#[tokio::test]
async fn a_disabled_rule_raises_nothing() {
    let app = spawn_app().await;
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    let disabled = app.send(Method::DELETE, "/rules/1", None).await;
    assert_eq!(disabled.status(), 200);
    let first = transaction("t-1", "12000.00", "Shanghai", at);
    let second = transaction("t-2", "50.00", "Beijing", at + chrono::Duration::minutes(3));
    app.post_all(&[&first, &second]).await;
    app.wait_until_handled(2).await;
    assert!(app.alerts_of("u-1").await.is_empty());
    assert_eq!(
        app.send(Method::DELETE, "/rules/99", None).await.status(),
        404
    );
    let enabled: Value = app
        .send(Method::POST, "/rules/1/enable", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(enabled["enabled"], true);
}

#[tokio::test]
async fn a_match_started_before_an_edit_finishes_under_the_version_it_started_with() {
    let app = spawn_app().await;
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    let first = transaction("t-1", "12000.00", "Shanghai", at);
    assert_eq!(app.post_transaction(&first).await.status(), 202);
    app.wait_until_handled(1).await;

    let mut edited = crate::helpers::default_rule_json();
    edited["kind"]["first"] = json!("amount_cents > 500000");
    let response = app.send(Method::PUT, "/rules/1", Some(&edited)).await;
    assert_eq!(response.status(), 200);
    let second = transaction("t-2", "50.00", "Beijing", at + chrono::Duration::minutes(3));
    assert_eq!(app.post_transaction(&second).await.status(), 202);
    app.wait_until_handled(2).await;

    let alerts = app.alerts_of("u-1").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts[0]["rule_version"], 1,
        "the version the match started under"
    );
}
