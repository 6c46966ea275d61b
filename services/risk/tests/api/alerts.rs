//! The default rule end to end: transactions in over HTTP, alerts out over HTTP and AMQP.

use chrono::{Duration, TimeZone, Utc};
use msgkit::testing::wait_until_async;
use serde_json::Value;

use crate::helpers::{DEADLINE, spawn_app, transaction};

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

#[tokio::test]
async fn a_large_amount_then_another_city_within_five_minutes_raises_one_alert() {
    let mut app = spawn_app().await;
    let first = transaction("t-1", "12000.00", "Shanghai", t0());
    let second = transaction("t-2", "50.00", "Beijing", t0() + Duration::minutes(3));
    app.post_all(&[&first, &second]).await;

    let alerts = app.wait_for_alerts("u-1").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert["rule_id"], 1);
    assert_eq!(alert["rule_version"], 1);
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["transaction_ids"], serde_json::json!(["t-1", "t-2"]));
    let since = alert["created_at"].as_str().unwrap();
    let newer: Vec<Value> = app
        .send(
            reqwest::Method::GET,
            &format!("/alerts?user=u-1&since={}", since.replace('+', "%2B")),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(newer.is_empty(), "nothing stored after it: {newer:?}");

    let published = app
        .alerts
        .collect_until("risk.alert published", DEADLINE, |got| !got.is_empty())
        .await;
    let payload: Value = serde_json::from_slice(&published[0].data).unwrap();
    assert_eq!(payload["alert_id"], alert["alert_id"]);
    assert_eq!(payload["user_id"], "u-1");
    assert_eq!(
        app.outbox_count("risk.alert").await,
        1,
        "one risk.alert, ever"
    );
}

#[tokio::test]
async fn another_city_after_the_window_raises_nothing() {
    let app = spawn_app().await;
    let first = transaction("t-1", "12000.00", "Shanghai", t0());
    let second = transaction("t-2", "50.00", "Beijing", t0() + Duration::minutes(6));
    app.post_all(&[&first, &second]).await;

    app.wait_until_handled(2).await;
    assert!(app.alerts_of("u-1").await.is_empty());
    assert_eq!(app.outbox_count("risk.alert").await, 0);
}

#[tokio::test]
async fn an_absence_rule_alerts_by_the_wall_clock_through_the_kits_timers() {
    let mut app = spawn_app().await;
    // A large amount not followed within 1 s by another from the same place: the timer is
    // due 1 s + the allowed lateness (5 s) after the first transaction.
    sqlx::query(
        "INSERT INTO rules (id, version, key, kind, severity) VALUES (2, 1, 'user_id', $1, 'medium')",
    )
    .bind(serde_json::json!({
        "type": "absence", "first": "amount_cents > 500000",
        "then": "b.location == a.location", "within_ms": 1000,
    }))
    .execute(&app.pool)
    .await
    .unwrap();
    let first = transaction("t-1", "6000.00", "Shanghai", Utc::now());
    assert_eq!(app.post_transaction(&first).await.status(), 202);

    let alerts = wait_until_async("the absence alert", DEADLINE, || async {
        let alerts = app.alerts_of("u-1").await;
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule_id"], 2);
    assert_eq!(alerts[0]["severity"], "medium");
    assert_eq!(alerts[0]["transaction_ids"], serde_json::json!(["t-1"]));
    let published = app
        .alerts
        .collect_until("risk.alert published", DEADLINE, |got| !got.is_empty())
        .await;
    let payload: Value = serde_json::from_slice(&published[0].data).unwrap();
    assert_eq!(payload["rule_id"], 2);
}

#[tokio::test]
async fn a_late_transaction_is_handled_without_alert_and_not_dead_lettered() {
    let app = spawn_app().await;
    // The second to arrive is 3 minutes older than the first: beyond the allowed lateness of
    // 5 s, so it is not evaluated. Within the lateness it would have completed the default
    // rule's pattern (large amount, then another city within 5 minutes) in reverse order.
    let newest = transaction("t-2", "50.00", "Beijing", t0() + Duration::minutes(3));
    let late = transaction("t-1", "12000.00", "Shanghai", t0());
    assert_eq!(app.post_transaction(&newest).await.status(), 202);
    app.wait_until_handled(1).await;
    assert_eq!(app.post_transaction(&late).await.status(), 202);

    app.wait_until_handled(2).await;
    let late = app.late_transactions().await;
    assert_eq!(late, Some(1.0), "counted in msgkit_late_events_total");
    assert!(app.alerts_of("u-1").await.is_empty());
    assert_eq!(app.broker.queue_depth("risk.dlq").await, Some(0));
}

#[tokio::test]
async fn a_rule_failing_at_run_time_does_not_stop_the_others_nor_fail_the_message() {
    let app = spawn_app().await;
    // Passes the write-time dry run (its samples are not in Paris), divides by zero in Paris.
    for (id, when) in [
        (
            2,
            "location == 'Paris' && 100 / (amount_cents - amount_cents) > 1",
        ),
        (3, "amount_cents > 10"),
    ] {
        sqlx::query(
            "INSERT INTO rules (id, version, key, kind, severity) VALUES ($1, 1, 'user_id', $2, 'low')",
        )
        .bind(id)
        .bind(serde_json::json!({"type": "condition", "when": when}))
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let paris = transaction("t-1", "0.50", "Paris", t0());
    assert_eq!(app.post_transaction(&paris).await.status(), 202);

    app.wait_until_handled(1).await;
    let alerts = app.alerts_of("u-1").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule_id"], 3);
    assert_eq!(app.broker.queue_depth("risk.dlq").await, Some(0));
    let errors = app.metric("risk_rule_errors_total", &[("rule", "2")]).await;
    assert_eq!(errors, Some(1.0), "the failing rule is counted");
    assert_eq!(
        app.metric("risk_alerts_total", &[("rule", "3"), ("severity", "low")])
            .await,
        Some(1.0),
        "the other rule's alert is counted"
    );
}
