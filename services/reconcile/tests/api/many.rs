//! Many orders at once, their sides interleaved and some repeated: each order is decided
//! once, by the consumer's concurrent handlers (the order's keyed-state lock serialises its
//! sides).

use contracts::GatewayOutcome::Success;
use contracts::event_type::{PAYMENT_CALLBACK, PAYMENT_SUCCEEDED};
use msgkit::testing::wait_until_async;
use uuid::Uuid;

use crate::helpers::{DEADLINE, callback, outbox_count, publish_to, spawn_app, succeeded};

#[tokio::test]
async fn interleaved_and_repeated_sides_of_many_orders_decide_each_order_once() {
    let app = spawn_app().await;
    let publisher = app.publisher().await;
    let orders: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    // Orders 0..30 get both sides (the callback first for the even ones, and twice for every
    // third), 30..35 a wrong amount, 35..40 no callback.
    for (i, order) in orders.iter().enumerate() {
        let amount = 100 + i as i64;
        let paid = succeeded(*order, amount);
        let reported = if (30..35).contains(&i) {
            amount + 1
        } else {
            amount
        };
        let called = callback(&format!("cb-{i}"), *order, Success, reported);
        if i % 2 == 0 && i < 35 {
            publish_to(&publisher, PAYMENT_CALLBACK, *order, &called).await;
        }
        publish_to(&publisher, PAYMENT_SUCCEEDED, *order, &paid).await;
        if i % 2 == 1 && i < 35 {
            publish_to(&publisher, PAYMENT_CALLBACK, *order, &called).await;
        }
        if i % 3 == 0 && i < 35 {
            publish_to(&publisher, PAYMENT_CALLBACK, *order, &called).await;
            publish_to(&publisher, PAYMENT_SUCCEEDED, *order, &paid).await;
        }
    }
    let sides = 40 + 35 + 2 * (0..35).filter(|i| i % 3 == 0).count() as i64;
    app.wait_until_handled(sides).await;
    app.at(10.0);
    wait_until_async("every order decided", DEADLINE, || async {
        let decided: i64 = sqlx::query_scalar("SELECT count(*) FROM reconciliations")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (decided == 40).then_some(())
    })
    .await;
    let by_outcome: Vec<(String, i64)> = sqlx::query_as(
        "SELECT outcome, count(*) FROM reconciliations GROUP BY outcome ORDER BY outcome",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        by_outcome,
        [
            ("amount-mismatch".to_owned(), 5),
            ("matched".to_owned(), 30),
            ("third-party-missing".to_owned(), 5)
        ]
    );
    assert_eq!(outbox_count(&app.pool, "reconcile.matched").await, 30);
    assert_eq!(outbox_count(&app.pool, "reconcile.mismatch").await, 10);
    let transitions: i64 = sqlx::query_scalar("SELECT count(*) FROM reconciliation_history")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(transitions, 40, "one decision per order");
}
