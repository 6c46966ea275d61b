//! The default rule's edges through the service: the window is exclusive at its far end, the
//! amount must be strictly above 10,000.00, and event time (not arrival) decides the order.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::helpers::{DEADLINE, spawn_app, spawn_app_with_config, transaction};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

#[tokio::test]
async fn another_city_exactly_five_minutes_later_raises_nothing_as_the_window_is_exclusive() {
    let app = spawn_app().await;
    let first = transaction("t-1", "12000.00", "Shanghai", t0());
    let second = transaction("t-2", "50.00", "Beijing", t0() + Duration::minutes(5));
    app.post_all(&[&first, &second]).await;

    app.wait_until_handled(2).await;
    assert!(app.alerts_of("u-1").await.is_empty());
    assert_eq!(app.outbox_count("risk.alert").await, 0);
}

#[tokio::test]
async fn a_first_amount_of_exactly_ten_thousand_raises_nothing() {
    let app = spawn_app().await;
    let first = transaction("t-1", "10000.00", "Shanghai", t0());
    let second = transaction("t-2", "50.00", "Beijing", t0() + Duration::minutes(3));
    app.post_all(&[&first, &second]).await;

    app.wait_until_handled(2).await;
    assert!(app.alerts_of("u-1").await.is_empty());
    assert_eq!(app.outbox_count("risk.alert").await, 0);
}

#[tokio::test]
async fn two_transactions_arriving_in_reverse_order_within_the_lateness_match_by_event_time() {
    let mut app = spawn_app().await;
    // Beijing happened 3 s after Shanghai but arrives first; Shanghai is then 3 s behind the
    // user's newest event, within the allowed lateness of 5 s.
    let second = transaction("t-2", "50.00", "Beijing", t0() + Duration::seconds(3));
    let first = transaction("t-1", "12000.00", "Shanghai", t0());
    assert_eq!(app.post_transaction(&second).await.status(), 202);
    app.wait_until_handled(1).await;
    assert!(app.alerts_of("u-1").await.is_empty(), "half a pattern");
    assert_eq!(app.post_transaction(&first).await.status(), 202);

    let alerts = app.wait_for_alerts("u-1").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule_id"], 1);
    assert_eq!(
        alerts[0]["transaction_ids"],
        serde_json::json!(["t-1", "t-2"]),
        "in event-time order, not arrival order"
    );
    app.wait_until_handled(2).await;
    assert_eq!(
        app.late_transactions().await.unwrap_or(0.0),
        0.0,
        "not late"
    );
    let published = app
        .alerts
        .collect_until("risk.alert published", DEADLINE, |got| !got.is_empty())
        .await;
    assert_eq!(published.len(), 1);
    assert_eq!(app.outbox_count("risk.alert").await, 1);
}

#[tokio::test]
async fn a_users_transactions_are_evaluated_in_the_order_recorded_through_retries() {
    // A third of the attempts fail transiently and wait 300 ms for their retry, while the
    // relay publishes a user's next transaction within milliseconds: without per-user order
    // the second would overtake the first, which, three minutes older, would then be late.
    let app = spawn_app_with_config(&[
        ("FAULT_TRANSIENT_RATE", "0.3"),
        ("RETRY_MAX_ATTEMPTS", "30"),
        ("RETRY_INITIAL_DELAY_MS", "300"),
        ("OUTBOX_POLL_INTERVAL_MS", "10"),
    ])
    .await;
    let users: Vec<String> = (0..20).map(|n| format!("u-{n}")).collect();
    for user in &users {
        let mut first = transaction(&format!("{user}-t1"), "12000.00", "Shanghai", t0());
        let mut second = transaction(
            &format!("{user}-t2"),
            "50.00",
            "Beijing",
            t0() + Duration::minutes(3),
        );
        first["user_id"] = user.as_str().into();
        second["user_id"] = user.as_str().into();
        assert_eq!(app.post_transaction(&first).await.status(), 202);
        assert_eq!(app.post_transaction(&second).await.status(), 202);
    }

    app.wait_until_handled(40).await;
    for user in &users {
        let alerts = app.alerts_of(user).await;
        assert_eq!(alerts.len(), 1, "{user}: {alerts:?}");
    }
    assert_eq!(app.late_transactions().await.unwrap_or(0.0), 0.0);
    assert_eq!(app.broker.queue_depth("risk.dlq").await, Some(0));
}
