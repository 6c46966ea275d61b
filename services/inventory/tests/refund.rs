//! A refunded order (`payment.refunded`: the customer cancelled it) gets its reserved stock
//! back, once, however often the refund arrives.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use contracts::event_type::{ORDER_PLACED, PAYMENT_REFUNDED};
use contracts::{OrderLine, OrderPlaced, PaymentRefunded};
use msgkit::message::OutgoingMessage;
use msgkit::testing::{TestBroker, TestDatabase, service_settings, wait_until_async};
use msgkit::{ConfirmedPublisher, Shutdown};
use sqlx::PgPool;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

struct App {
    pool: PgPool,
    publisher: ConfirmedPublisher,
    _db: TestDatabase,
    broker: TestBroker,
    shutdown: Shutdown,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn spawn_app() -> App {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let settings = service_settings("inventory", "inventory", &db, broker.settings("inventory"));
    let service = inventory::startup::build(settings).await.unwrap();
    let pool = service.pool().clone();
    let shutdown = Shutdown::new();
    tokio::spawn(service.run_until_stopped(shutdown.clone()));
    let publisher = broker.publisher(&contracts::topology()).await;
    App {
        pool,
        publisher,
        _db: db,
        broker,
        shutdown,
    }
}

impl App {
    async fn publish(&self, message: &OutgoingMessage) {
        assert!(
            self.publisher
                .publish(message)
                .await
                .unwrap()
                .is_confirmed()
        );
    }

    async fn available(&self, sku: &str) -> i32 {
        sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The order's reservation lines' statuses.
    async fn reservations(&self, order_id: Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1 ORDER BY sku")
            .bind(order_id)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn handled(&self, message_id: &str) -> bool {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM msgkit_inbox WHERE message_id = $1)")
            .bind(message_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_refunded_order_gets_its_reserved_stock_back_exactly_once() {
    let app = spawn_app().await;
    let before = (app.available("SKU-1").await, app.available("SKU-2").await);
    let order_id = Uuid::new_v4();
    let placed = OrderPlaced {
        order_id,
        customer_id: "c-1".into(),
        items: vec![
            OrderLine {
                sku: "SKU-1".into(),
                quantity: 3,
            },
            OrderLine {
                sku: "SKU-2".into(),
                quantity: 1,
            },
        ],
        placed_at: chrono::Utc::now(),
        location: None,
    };
    let id = order_id.to_string();
    app.publish(&OutgoingMessage::event(ORDER_PLACED.name(), &id, "order", &placed).unwrap())
        .await;
    wait_until_async("the order reserved", DEADLINE, || async {
        (app.reservations(order_id).await == ["reserved", "reserved"]).then_some(())
    })
    .await;
    assert_eq!(
        (app.available("SKU-1").await, app.available("SKU-2").await),
        (before.0 - 3, before.1 - 1)
    );

    let refunded = PaymentRefunded {
        order_id,
        customer_id: "c-1".into(),
        charge_id: "ch_1".into(),
        refund_id: "re_1".into(),
        amount_cents: 3 * 1000 + 2500,
        occurred_at: chrono::Utc::now(),
    };
    let refund =
        OutgoingMessage::event(PAYMENT_REFUNDED.name(), &id, "payment", &refunded).unwrap();
    // Redelivered (the same message id) and replayed (a new one): each puts nothing back again.
    let mut replay = refund.clone();
    replay.message_id = Uuid::now_v7().to_string();
    for copy in [&refund, &refund, &replay] {
        app.publish(copy).await;
    }
    wait_until_async("the refund and its replay handled", DEADLINE, || async {
        (app.handled(&refund.message_id).await && app.handled(&replay.message_id).await)
            .then_some(())
    })
    .await;
    wait_until_async("the queue drained", DEADLINE, || async {
        (app.broker.queue_depth("inventory").await == Some(0)).then_some(())
    })
    .await;

    assert_eq!(
        (app.available("SKU-1").await, app.available("SKU-2").await),
        before,
        "stock back to what it was, once"
    );
    assert_eq!(app.reservations(order_id).await, ["released", "released"]);
    let replies: Vec<String> =
        sqlx::query_scalar("SELECT message_type FROM msgkit_outbox WHERE aggregate_id = $1")
            .bind(&id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(replies, ["inventory.reserved"], "a refund answers nothing");
}
