//! The acceptance scenarios, on the service's clock moved by the test.

use chrono::{DateTime, Utc};
use contracts::GatewayOutcome::{Declined, Success};
use contracts::event_type;
use uuid::Uuid;

use crate::helpers::{callback, failed, outbox_count, row_of, spawn_app};

#[tokio::test]
async fn orders_match_within_the_window_a_missing_callback_is_a_mismatch_and_its_late_arrival_resolves_it()
 {
    let mut app = spawn_app().await;
    let (order_1, order_2, order_3, never_charged) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );

    app.at(1.0);
    app.paid(order_1, 1_000).await;
    app.at(2.0);
    app.paid(order_2, 2_000).await;
    app.at(3.0);
    app.called_back(&callback("cb-1", order_1, Success, 1_000))
        .await;
    let first = app.wait_for_outcome(order_1, "matched").await;
    app.at(3.5);
    app.paid(order_3, 3_500).await;
    app.at(4.0);
    app.called_back(&callback("cb-3", order_3, Success, 3_500))
        .await;
    let third = app.wait_for_outcome(order_3, "matched").await;
    let to_match = |ms: Option<i64>| ms.unwrap() as f64 / 1000.0;
    assert!(
        (1.5..2.9).contains(&to_match(first.time_to_match_ms)),
        "{first:?}"
    );
    assert!(
        (0.3..1.4).contains(&to_match(third.time_to_match_ms)),
        "{third:?}"
    );

    // The matched orders' windows were cancelled; the one left is order 2's, due 5 s after
    // its first side, not at once (a timer for the wrong side) and not moved.
    let pending: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT key, due_at FROM msgkit_timers")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].0, order_2.to_string());
    let due = app.secs(pending[0].1);
    assert!((7.0..8.0).contains(&due), "due at {due} s");
    assert_eq!(
        row_of(&app.pool, order_2).await,
        None,
        "still in its window"
    );

    app.at(7.0);
    let second = app.wait_for_outcome(order_2, "third-party-missing").await;
    let decided = app.secs(second.decided_at);
    assert!((6.0..=8.0).contains(&decided), "decided at {decided} s");
    assert_eq!(second.status, "open");

    // A callback for an order we never charged: app-missing once its window ends.
    app.called_back(&callback("cb-x", never_charged, Success, 999))
        .await;
    app.at(13.0);
    let unknown = app.wait_for_outcome(never_charged, "app-missing").await;
    assert_eq!(unknown.gateway_amount_cents, Some(999));

    // Order 2's callback, late: resolved, and the mismatch keeps its history.
    app.at(20.0);
    app.called_back(&callback("cb-2", order_2, Success, 2_000))
        .await;
    let resolved = app.wait_for_outcome(order_2, "late-match").await;
    assert_eq!(resolved.status, "resolved");
    let history: Vec<&str> = resolved
        .history
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["third-party-missing", "late-match"]);

    let mut events = app.published(5).await;
    events.sort();
    let mut expected = vec![
        (
            "reconcile.matched".to_owned(),
            order_1,
            "matched".to_owned(),
        ),
        (
            "reconcile.matched".to_owned(),
            order_3,
            "matched".to_owned(),
        ),
        (
            "reconcile.mismatch".to_owned(),
            order_2,
            "third-party-missing".to_owned(),
        ),
        (
            "reconcile.mismatch".to_owned(),
            never_charged,
            "app-missing".to_owned(),
        ),
        (
            "reconcile.resolved".to_owned(),
            order_2,
            "late-match".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(events, expected);
    assert_eq!(
        outbox_count(&app.pool, "reconcile.mismatch").await,
        2,
        "no new alarm"
    );
    assert_eq!(outbox_count(&app.pool, "reconcile.matched").await, 2);
}

#[tokio::test]
async fn a_duplicated_callback_makes_one_match() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    app.paid(order, 500).await;
    let sent = callback("cb-1", order, Success, 500);
    app.called_back(&sent).await;
    // The gateway sends it again: another message, the same callback.
    app.called_back(&sent).await;
    app.wait_for_outcome(order, "matched").await;
    // Past the window too: the cancelled timer does not turn into a mismatch.
    app.at(30.0);
    app.called_back(&sent).await;
    let row = app.reconciliation(order).await;
    assert_eq!(row.outcome, "matched");
    assert_eq!(row.history.as_array().unwrap().len(), 1);
    assert_eq!(outbox_count(&app.pool, "reconcile.matched").await, 1);
    assert_eq!(outbox_count(&app.pool, "reconcile.mismatch").await, 0);
}

#[tokio::test]
async fn a_callback_with_another_amount_is_an_amount_mismatch() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    app.called_back(&callback("cb-1", order, Success, 499))
        .await;
    app.paid(order, 500).await;
    let row = app.wait_for_outcome(order, "amount-mismatch").await;
    assert_eq!(
        (row.app_amount_cents, row.gateway_amount_cents),
        (Some(500), Some(499))
    );
    assert_eq!(row.status, "open");
    assert_eq!(outbox_count(&app.pool, "reconcile.mismatch").await, 1);
}

#[tokio::test]
async fn a_decline_on_both_sides_is_a_match() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    app.send(event_type::PAYMENT_FAILED, order, &failed(order, 700))
        .await;
    app.called_back(&callback("cb-1", order, Declined, 700))
        .await;
    let row = app.wait_for_outcome(order, "matched").await;
    assert_eq!(row.app_outcome.as_deref(), Some("failed"));
    assert_eq!(row.gateway_outcome.as_deref(), Some("declined"));
}

#[tokio::test]
async fn a_charge_the_gateway_declined_is_a_status_mismatch() {
    let app = spawn_app().await;
    let order = Uuid::new_v4();
    app.paid(order, 700).await;
    app.called_back(&callback("cb-1", order, Declined, 700))
        .await;
    app.wait_for_outcome(order, "status-mismatch").await;
}

#[tokio::test]
async fn a_side_later_than_the_retention_changes_no_decision_and_raises_nothing() {
    let app = crate::helpers::spawn_app_with(&[("RECONCILE_RETENTION_MS", "60000")]).await;
    let order = Uuid::new_v4();
    app.paid(order, 500).await;
    app.at(6.0);
    app.wait_for_outcome(order, "third-party-missing").await;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM msgkit_state")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept, 1, "the sides are kept after the mismatch");

    app.at(6.0 + 61.0);
    app.called_back(&callback("cb-1", order, Success, 500))
        .await;
    let row = app.reconciliation(order).await;
    assert_eq!(row.outcome, "third-party-missing");
    let history: Vec<&str> = row
        .history
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["third-party-missing", "after-retention"]);
    assert_eq!(outbox_count(&app.pool, "reconcile.resolved").await, 0);
    assert_eq!(outbox_count(&app.pool, "reconcile.mismatch").await, 1);
    let timers: i64 = sqlx::query_scalar("SELECT count(*) FROM msgkit_timers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(timers, 0, "no new window");
}

#[tokio::test]
async fn a_window_ending_later_than_the_retention_still_finds_its_side() {
    // The service was down (here: the clock jumps) past the retention before the timer fired.
    let app = crate::helpers::spawn_app_with(&[("RECONCILE_RETENTION_MS", "60000")]).await;
    let order = Uuid::new_v4();
    app.paid(order, 500).await;
    app.at(600.0);
    let row = app.wait_for_outcome(order, "third-party-missing").await;
    assert_eq!(row.app_amount_cents, Some(500));
}
