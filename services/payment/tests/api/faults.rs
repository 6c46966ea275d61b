//! The gateway's injectable callback faults, with the gateway's own table as the ground truth.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::helpers::{reserve, spawn_app_with};

#[tokio::test]
async fn a_lost_callback_is_recorded_as_lost_and_never_sent() {
    let mut app = spawn_app_with(&[("GATEWAY_CALLBACK_LOSS_RATE", "1")]).await;
    let order_id = Uuid::new_v4();
    reserve(&app.pool, order_id, 5_000).await;
    let owed = app.wait_for_sent(1).await;
    assert_eq!(owed.len(), 1);
    assert!(owed[0].lost && !owed[0].sent, "{owed:?}");
    assert_eq!(owed[0].order_id, order_id);
    // Past its due time and a whole poll of the sender: still nothing.
    assert!(
        app.published
            .next(Duration::from_millis(1_500))
            .await
            .is_none(),
        "a lost callback is never published"
    );
    assert!(app.received().await.is_empty());
    assert_eq!(app.owed().await[0].attempts, 0, "never even tried");
    let lost = app
        .metric("payment_gateway_callbacks_lost_total", &[])
        .await;
    assert_eq!(lost, Some(1.0));
}

#[tokio::test]
async fn a_duplicated_callback_is_sent_twice_and_stored_and_published_once() {
    let mut app = spawn_app_with(&[("GATEWAY_CALLBACK_DUPLICATE_RATE", "1")]).await;
    reserve(&app.pool, Uuid::new_v4(), 5_000).await;
    let owed = app.wait_for_sent(1).await;
    assert_eq!((owed[0].copies, owed[0].attempts), (2, 1), "{owed:?}");
    assert_eq!(app.received().await.len(), 1);
    assert_eq!(app.outbox_count("payment.callback").await, 1);
    app.next_published().await;
    assert!(
        app.published
            .next(Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_wrong_amount_callback_reports_more_than_was_charged() {
    let mut app = spawn_app_with(&[("GATEWAY_CALLBACK_WRONG_AMOUNT_RATE", "1")]).await;
    reserve(&app.pool, Uuid::new_v4(), 5_000).await;
    let owed = app.wait_for_sent(1).await;
    assert_eq!(owed[0].charged_amount_cents, 5_000);
    assert!((5_001..=5_100).contains(&owed[0].amount_cents), "{owed:?}");
    let published = app.next_published().await;
    assert_eq!(published["amount_cents"], owed[0].amount_cents);
}

#[tokio::test]
async fn reordered_callbacks_of_orders_charged_together_arrive_newest_first() {
    let window_ms = 2_000;
    let app = spawn_app_with(&[
        ("GATEWAY_CALLBACK_DELAY_MS", "0"),
        ("GATEWAY_CALLBACK_REORDER_MS", &window_ms.to_string()),
    ])
    .await;
    // Two charges a few milliseconds apart share a hold window unless a window boundary falls
    // between them; such a pair proves nothing, and the next pair is tried.
    for round in 1..=3 {
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        reserve(&app.pool, first, 100).await;
        reserve(&app.pool, second, 100).await;
        app.wait_for_received(round * 2).await;
        let arrivals: Vec<(Uuid, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT g.order_id, g.seq, p.received_at FROM gateway_callbacks g \
             JOIN payment_callbacks p USING (callback_id) \
             WHERE g.order_id IN ($1, $2) ORDER BY p.received_at",
        )
        .bind(first)
        .bind(second)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let apart = arrivals[1].2 - arrivals[0].2;
        if apart < chrono::Duration::milliseconds(window_ms / 2) {
            assert!(
                arrivals[0].1 > arrivals[1].1,
                "held together, the later charge is sent first: {arrivals:?}"
            );
            return;
        }
    }
    panic!("three pairs of charges each straddled a hold window");
}
