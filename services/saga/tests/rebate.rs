//! Rebate balances against the saga that earns them, every service running with the event
//! archive on: orders of a few customers, a third cancelled by their customer after
//! confirmation (refunded), and every balance equal to a sum computed independently from the
//! orders and payments tables; then a rebuild of the projection equal to it row for row. Every
//! event published on the way is one the contract declares for its publisher.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use msgkit::Shutdown;
use msgkit::testing::wait_until_async;
use saga::{DEADLINE, Saga};
use sqlx::PgPool;

const ORDERS: usize = 240;
// Coprime with 3, so that every customer has orders kept as well as cancelled.
const CUSTOMERS: usize = 13;

/// Balances by customer, as rebate has them.
async fn balances(rebate: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT customer_id, balance_cents FROM rebate_balances ORDER BY customer_id")
        .fetch_all(rebate)
        .await
        .unwrap()
}

/// Balances computed from the orders and payments tables alone: 1 % (rounded down) of every
/// payment of an order that stayed confirmed. No customer here reaches the first higher tier
/// (1,000.00 a month), whose rates services/rebate's tests check.
async fn expected(saga: &Saga) -> Vec<(String, i64)> {
    let paid: Vec<(String, i64)> = sqlx::query_as(
        "SELECT order_id::text, amount_cents FROM payments WHERE status = 'succeeded'",
    )
    .fetch_all(&saga.payment)
    .await
    .unwrap();
    let orders: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id::text, customer_id, status FROM orders")
            .fetch_all(&saga.orders)
            .await
            .unwrap();
    let mut sums = std::collections::BTreeMap::<String, i64>::new();
    for (order_id, customer, status) in orders {
        let Some((_, amount)) = paid.iter().find(|(id, _)| *id == order_id) else {
            continue;
        };
        let cents = if status == "confirmed" {
            amount / 100
        } else {
            0
        };
        *sums.entry(customer).or_default() += cents;
    }
    sums.into_iter().collect()
}

#[tokio::test]
async fn every_balance_equals_the_sum_computed_from_the_orders_with_cancellations_refunded() {
    let saga = Saga::start(&[
        ("ARCHIVE_ENABLED", "true"),
        ("PROJECTION_HEARTBEAT_MS", "200"),
    ])
    .await;
    let mut events = saga.watch_events().await;
    let rebate_service = rebate::startup::build(saga.settings_for("rebate", "rebate"))
        .await
        .unwrap();
    let rebate = rebate_service.pool().clone();
    let stop = Shutdown::new();
    let running = tokio::spawn(rebate_service.run_until_stopped(stop.clone()));

    let mut placed = Vec::new();
    for n in 0..ORDERS {
        let items = [("SKU-1", 1 + (n % 3) as u32), ("SKU-3", 1 + (n % 2) as u32)];
        let customer = format!("c-{}", n % CUSTOMERS);
        placed.push(saga.place_order(&customer, &items).await);
    }
    // Every third order is cancelled by its customer once it is confirmed.
    let mut cancelled = 0;
    for order_id in placed.iter().step_by(3) {
        assert_eq!(saga.wait_final(order_id).await["status"], "confirmed");
        let response = saga
            .client
            .post(format!("{}/orders/{order_id}/cancel", saga.api))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        cancelled += 1;
    }
    wait_until_async("every cancellation refunded", DEADLINE, || async {
        let refunded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'cancelled'")
                .fetch_one(&saga.orders)
                .await
                .unwrap();
        (refunded == cancelled).then_some(())
    })
    .await;
    for order_id in &placed {
        saga.wait_final(order_id).await;
    }
    let want = expected(&saga).await;
    assert_eq!(want.len(), CUSTOMERS);
    assert!(want.iter().all(|(_, cents)| *cents > 0));
    let got = wait_until_async("the balances to settle", DEADLINE, || async {
        let got = balances(&rebate).await;
        (got == want).then_some(got)
    })
    .await;
    let lines: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'payment'), count(*) FILTER (WHERE kind = 'refund') FROM rebate_lines",
    )
    .fetch_one(&rebate)
    .await
    .unwrap();
    assert_eq!(
        lines,
        (ORDERS as i64, cancelled),
        "one credit per payment, one reversal per refund"
    );

    // A rebuild from the archive gives the same tables, row for row.
    let bounds =
        msgkit::projection::admin::archive_bounds(&saga.broker.settings("cli"), "events.archive")
            .await
            .unwrap();
    msgkit::projection::admin::request_rebuild(&rebate, "rebate", &bounds)
        .await
        .unwrap();
    let rebuilt = wait_until_async("the rebuild", DEADLINE, || async {
        msgkit::projection::admin::rebuild_status(&rebate, "rebate")
            .await
            .unwrap()
            .filter(|r| r.is_finished())
    })
    .await;
    assert_eq!(rebuilt.state, "done", "{rebuilt:?}");
    for table in ["rebate_lines", "rebate_balances", "rebate_monthly_spend"] {
        let differing: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM ((TABLE rebate.{table} EXCEPT TABLE rebate_rebate_previous.{table})
              UNION ALL (TABLE rebate_rebate_previous.{table} EXCEPT TABLE rebate.{table})) d"
        )))
        .fetch_one(&rebate)
        .await
        .unwrap();
        assert_eq!(
            differing, 0,
            "{table}: the rebuild equals the live projection"
        );
    }
    assert_eq!(balances(&rebate).await, got);
    let published = saga.assert_published_as_declared(&mut events).await;
    for pair in [
        ("order", "order.cancel_requested"),
        ("payment", "payment.refunded"),
    ] {
        assert!(
            published.contains(&(pair.0.to_owned(), pair.1.to_owned())),
            "{published:?}"
        );
    }

    stop.trigger();
    running.await.unwrap().unwrap();
    saga.stop().await;
}
