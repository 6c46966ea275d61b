//! The order saga through real RabbitMQ hops and real PostgreSQL, every service running.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use msgkit::message::{OutgoingMessage, header_i64, header_str};
use msgkit::testing::wait_until_async;
use msgkit::{ConfirmedPublisher, Shutdown};
use saga::{DEADLINE, Saga};

async fn take_dead_letter(saga: &Saga, queue: &str) -> lapin::message::BasicGetMessage {
    saga.broker.take_one(queue, DEADLINE).await
}

#[tokio::test]
async fn a_payable_order_in_stock_is_confirmed_with_stock_taken_once_and_one_notification() {
    let saga = Saga::start(&[]).await;
    let before = saga.stock("SKU-1").await;
    let order_id = saga.place_order("c-1", &[("SKU-1", 2), ("SKU-2", 1)]).await;

    let order = saga.wait_final(&order_id).await;
    assert_eq!(order["status"], "confirmed");
    let events: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["order.placed", "inventory.reserved", "payment.succeeded"]
    );
    assert_eq!(saga.stock("SKU-1").await, before - 2);
    assert_eq!(
        saga.charges(&order_id).await,
        [("captured".to_owned(), 2 * 1000 + 2500)]
    );
    assert_eq!(saga.wait_notifications(&order_id, 1).await, ["confirmed"]);
    saga.stop().await;
}

#[tokio::test]
async fn an_order_out_of_stock_is_rejected_without_a_charge() {
    let saga = Saga::start(&[]).await;
    let mut events = saga.watch_events().await;
    let before = saga.stock("SKU-1").await;
    let order_id = saga
        .place_order("c-2", &[("SKU-1", 1), ("SKU-GONE", 1)])
        .await;

    let order = saga.wait_final(&order_id).await;
    assert_eq!(order["status"], "rejected");
    let last = order["history"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["reason"].as_str().unwrap().contains("SKU-GONE"),
        "{last}"
    );
    assert_eq!(saga.stock("SKU-1").await, before, "nothing reserved");
    assert!(saga.charges(&order_id).await.is_empty(), "no charge");
    assert_eq!(saga.wait_notifications(&order_id, 1).await, ["rejected"]);
    let published = saga.assert_published_as_declared(&mut events).await;
    assert!(published.contains(&("inventory".into(), "inventory.rejected".into())));
    saga.stop().await;
}

#[tokio::test]
async fn a_declined_payment_cancels_the_order_and_restores_the_stock_exactly() {
    let saga = Saga::start(&[]).await;
    let mut events = saga.watch_events().await;
    let before = saga.stock("SKU-LUX").await;
    let order_id = saga.place_order("c-3", &[("SKU-LUX", 1)]).await;

    let order = saga.wait_final(&order_id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(
        saga.charges(&order_id).await,
        [("declined".to_owned(), 250_000)]
    );
    assert_eq!(saga.wait_notifications(&order_id, 1).await, ["cancelled"]);
    wait_until_async("the reservation to be released", DEADLINE, || async {
        (saga.stock("SKU-LUX").await == before).then_some(())
    })
    .await;
    wait_until_async(
        "the release to reach the order's history",
        DEADLINE,
        || async {
            let order = saga.order(&order_id).await;
            order["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["event"] == "inventory.released")
                .then_some(())
        },
    )
    .await;
    let published = saga.assert_published_as_declared(&mut events).await;
    assert!(published.contains(&("payment".into(), "payment.failed".into())));
    saga.stop().await;
}

#[tokio::test]
async fn transient_failures_on_the_first_attempts_end_in_success() {
    let saga = Saga::start(&[
        ("INVENTORY_FAULT_FAIL_FIRST_ATTEMPTS", "2"),
        ("PAYMENT_FAULT_FAIL_FIRST_ATTEMPTS", "1"),
    ])
    .await;
    let before = saga.stock("SKU-3").await;
    let order_id = saga.place_order("c-4", &[("SKU-3", 3)]).await;
    assert_eq!(saga.wait_final(&order_id).await["status"], "confirmed");
    assert_eq!(
        saga.stock("SKU-3").await,
        before - 3,
        "reserved once despite the retries"
    );
    assert_eq!(saga.charges(&order_id).await.len(), 1);
    saga.stop().await;
}

#[tokio::test]
async fn a_message_that_exhausts_its_retries_is_dead_lettered_and_the_order_visibly_stuck() {
    let saga = Saga::start(&[
        ("INVENTORY_FAULT_TRANSIENT_RATE", "1.0"),
        ("RETRY_INITIAL_DELAY_MS", "30"),
        ("RETRY_MAX_DELAY_MS", "100"),
        ("RETRY_MAX_ATTEMPTS", "3"),
    ])
    .await;
    let order_id = saga.place_order("c-5", &[("SKU-1", 1)]).await;
    let dead = take_dead_letter(&saga, "inventory.dlq").await;
    let props = &dead.delivery.properties;
    assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), order_id);
    assert_eq!(props.kind().as_ref().unwrap().as_str(), "order.placed");
    assert_eq!(
        header_str(props, "x-failure-reason"),
        Some("retries-exhausted")
    );
    assert_eq!(
        header_str(props, "x-exception-type"),
        Some("msgkit::faults::InjectedFailure")
    );
    assert_eq!(header_str(props, "x-failed-service"), Some("inventory"));
    assert_eq!(header_str(props, "x-original-queue"), Some("inventory"));
    assert_eq!(
        header_str(props, "x-original-routing-key"),
        Some("order.placed")
    );
    assert_eq!(header_str(props, "x-original-exchange"), Some("events"));
    assert!(header_str(props, "x-exception-message").is_some());
    assert!(header_str(props, "x-exception-detail").is_some());
    assert!(header_str(props, "x-failed-at").is_some());
    assert!(header_str(props, "traceparent").is_some());
    assert_eq!(header_i64(props, "x-attempt"), Some(3));
    assert_eq!(
        saga.order(&order_id).await["status"],
        "pending",
        "stuck, not lost"
    );
    saga.stop().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_after_one_attempt() {
    let saga = Saga::start(&[("INVENTORY_FAULT_POISON_MARKER", "poison-customer")]).await;
    let order_id = saga.place_order("poison-customer", &[("SKU-1", 1)]).await;
    let dead = take_dead_letter(&saga, "inventory.dlq").await;
    let props = &dead.delivery.properties;
    assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), order_id);
    assert_eq!(header_str(props, "x-failure-reason"), Some("poison"));
    assert_eq!(header_i64(props, "x-attempt"), Some(1));
    // An ordinary order still goes through: poison blocks nothing.
    let fine = saga.place_order("c-6", &[("SKU-1", 1)]).await;
    assert_eq!(saga.wait_final(&fine).await["status"], "confirmed");
    saga.stop().await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_is_applied_once() {
    let saga = Saga::start(&[]).await;
    let before = saga.stock("SKU-2").await;
    let order_id = saga.place_order("c-7", &[("SKU-2", 4)]).await;
    assert_eq!(saga.wait_final(&order_id).await["status"], "confirmed");

    // Publish the very same order.placed again (same message_id), twice, as a relay that
    // crashed before marking it published would.
    let message_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM msgkit_outbox WHERE aggregate_id = $1")
            .bind(&order_id)
            .fetch_one(&saga.orders)
            .await
            .unwrap();
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM msgkit_outbox WHERE id = $1")
            .bind(message_id)
            .fetch_one(&saga.orders)
            .await
            .unwrap();
    let mut duplicate =
        OutgoingMessage::event("order.placed", &order_id, "order", &payload).unwrap();
    duplicate.message_id = message_id.to_string();
    let publisher = ConfirmedPublisher::open(
        &saga.broker.settings("dup"),
        &contracts::topology(),
        &Shutdown::new(),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        assert!(publisher.publish(&duplicate).await.unwrap().is_confirmed());
    }
    wait_until_async("both duplicates to be consumed", DEADLINE, || async {
        (saga.broker.queue_depth("inventory").await == Some(0)).then_some(())
    })
    .await;
    let handled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM msgkit_inbox WHERE message_id = $1")
            .bind(message_id.to_string())
            .fetch_one(&saga.inventory)
            .await
            .unwrap();
    assert_eq!(handled, 1);
    assert_eq!(saga.stock("SKU-2").await, before - 4, "stock taken once");
    assert_eq!(saga.charges(&order_id).await.len(), 1);
    assert_eq!(saga.notifications(&order_id).await.len(), 1);
    saga.stop().await;
}

#[tokio::test]
async fn the_run_completes_with_nothing_lost_when_the_broker_force_closes_every_connection() {
    let saga = Saga::start(&[]).await;
    let before = saga.stock("SKU-3").await;
    let mut orders = Vec::new();
    for n in 0..15 {
        orders.push(saga.place_order(&format!("c-{n}"), &[("SKU-3", 1)]).await);
    }
    // Every service has its relay and consumer connections open before the cut.
    wait_until_async(
        "the management API to list the services' connections",
        DEADLINE,
        || async { (saga.broker.connections().await.len() >= 10).then_some(()) },
    )
    .await;
    let closed = saga.broker.close_all_connections().await;
    assert!(closed >= 10, "closed {closed}");
    for n in 15..30 {
        orders.push(saga.place_order(&format!("c-{n}"), &[("SKU-3", 1)]).await);
    }
    for order_id in &orders {
        assert_eq!(saga.wait_final(order_id).await["status"], "confirmed");
    }
    assert_eq!(
        saga.stock("SKU-3").await,
        before - 30,
        "each order reserved exactly once"
    );
    for order_id in &orders {
        assert_eq!(saga.charges(order_id).await.len(), 1);
        saga.wait_notifications(order_id, 1).await;
    }
    for queue in [
        "order",
        "inventory",
        "payment",
        "notify",
        "inventory.dlq",
        "payment.dlq",
    ] {
        assert_eq!(
            saga.broker.queue_depth(queue).await,
            Some(0),
            "{queue} drained"
        );
    }
    saga.stop().await;
}

#[tokio::test]
async fn the_saga_completes_over_tls_to_the_broker_and_the_database() {
    let saga = Saga::start_over_tls(&[]).await;
    let order_id = saga.place_order("c-tls", &[("SKU-1", 1)]).await;
    let order = saga.wait_final(&order_id).await;
    assert_eq!(order["status"], "confirmed");
    assert_eq!(saga.wait_notifications(&order_id, 1).await, ["confirmed"]);

    // Every connection the services opened came over TLS: the broker's (two per service,
    // publishing and consuming; the management API lists a connection once its first
    // statistics are in, within seconds)...
    let connections = msgkit::testing::wait_until_async(
        "the services' connections in the management API",
        saga::DEADLINE,
        || async {
            let connections = saga.broker.connections_over_tls().await;
            (connections.len() >= 8).then_some(connections)
        },
    )
    .await;
    assert!(
        connections.iter().all(|(_, tls)| *tls),
        "a connection without TLS: {connections:?}"
    );
    // ... and the database's (the services' pools; the harness's own admin connection is
    // not in this database).
    let (with, without): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = current_database()",
    )
    .fetch_one(&saga.orders)
    .await
    .unwrap();
    assert!(with >= 4, "{with} connections over TLS");
    assert_eq!(without, 0, "connections to the database without TLS");
    saga.stop().await;
}
