//! The real `inventory` binary, killed and stopped under load.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use contracts::{OrderLine, OrderPlaced, event_type};
use msgkit::message::OutgoingMessage;
use msgkit::testing::{TestBroker, TestDatabase, wait_until_async};
use msgkit::{ConfirmedPublisher, Shutdown};
use sqlx::PgPool;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(60);

struct Setup {
    db: TestDatabase,
    broker: TestBroker,
    publisher: ConfirmedPublisher,
}

async fn setup() -> Setup {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let publisher = ConfirmedPublisher::open(
        &broker.settings("test"),
        &contracts::topology(),
        &Shutdown::new(),
    )
    .await
    .unwrap();
    Setup {
        db,
        broker,
        publisher,
    }
}

impl Setup {
    fn start(&self, extra_env: &[(&str, &str)]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_inventory"));
        command
            .env("DATABASE_URL", self.db.url())
            .env("AMQP_URL", self.broker.amqp_url())
            .env("INVENTORY_HTTP_ADDR", "127.0.0.1:0")
            .env("OUTBOX_POLL_INTERVAL_MS", "200")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        for (name, value) in extra_env {
            command.env(name, value);
        }
        command.spawn().expect("start the inventory binary")
    }

    async fn place(&self, quantity: u32) -> Uuid {
        self.place_lines(&[("SKU-1", quantity)]).await
    }

    async fn place_lines(&self, lines: &[(&str, u32)]) -> Uuid {
        let order_id = Uuid::new_v4();
        let event = OrderPlaced {
            order_id,
            customer_id: "c-1".into(),
            items: lines
                .iter()
                .map(|&(sku, quantity)| OrderLine {
                    sku: sku.into(),
                    quantity,
                })
                .collect(),
            placed_at: chrono::Utc::now(),
            location: None,
        };
        let message = OutgoingMessage::event(
            event_type::ORDER_PLACED.name(),
            &order_id.to_string(),
            "test",
            &event,
        )
        .unwrap();
        assert!(
            self.publisher
                .publish(&message)
                .await
                .unwrap()
                .is_confirmed()
        );
        order_id
    }

    /// The inventory schema, once the service has created it.
    async fn pool(&self) -> PgPool {
        let options = self.db.options().options([("search_path", "inventory")]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        wait_until_async("the inventory schema to be migrated", DEADLINE, || async {
            sqlx::query("SELECT 1 FROM stock LIMIT 1")
                .execute(&pool)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        pool
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn a_consumer_killed_in_the_middle_of_handling_applies_the_message_once_after_restart() {
    let setup = setup().await;
    // Slow handling, so that the kill lands inside it.
    let mut first = setup.start(&[("FAULT_DELAY_MS", "3000")]);
    let pool = setup.pool().await;
    let before = count(
        &pool,
        "SELECT available::bigint FROM stock WHERE sku = 'SKU-1'",
    )
    .await;
    let order_id = setup.place(7).await;

    // Delivered (no longer ready in the queue) but not yet committed: mid-handling.
    wait_until_async(
        "the message to be taken by the consumer",
        DEADLINE,
        || async { (setup.broker.queue_depth("inventory").await == Some(0)).then_some(()) },
    )
    .await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM reservations").await,
        0,
        "still in flight"
    );
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let mut second = setup.start(&[]);
    wait_until_async(
        "the redelivered message to be applied",
        DEADLINE,
        || async { (count(&pool, "SELECT count(*) FROM reservations").await == 1).then_some(()) },
    )
    .await;
    wait_until_async("the queue to be empty (acked)", DEADLINE, || async {
        (setup.broker.queue_depth("inventory").await == Some(0)).then_some(())
    })
    .await;
    let after = count(
        &pool,
        "SELECT available::bigint FROM stock WHERE sku = 'SKU-1'",
    )
    .await;
    assert_eq!(after, before - 7, "stock taken once");
    let replies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox WHERE aggregate_id = $1")
            .bind(order_id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(replies, 1, "one inventory.reserved");
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test]
async fn sigterm_during_load_finishes_and_acks_in_flight_messages_and_exits_zero() {
    let setup = setup().await;
    let mut process = setup.start(&[("FAULT_DELAY_MS", "200"), ("CONSUMER_CONCURRENCY", "3")]);
    let pool = setup.pool().await;
    // More orders than can be in flight (prefetch 32, however they are batched), so that the
    // SIGTERM lands mid-load.
    const ORDERS: i64 = 100;
    for _ in 0..ORDERS {
        setup.place(1).await;
    }
    wait_until_async("some orders to be handled", DEADLINE, || async {
        (count(&pool, "SELECT count(*) FROM msgkit_inbox").await >= 3).then_some(())
    })
    .await;

    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &process.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || process.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // Everything handled was acked, everything else is back in the queue: nothing lost,
    // nothing handled twice.
    let handled = count(&pool, "SELECT count(*) FROM msgkit_inbox").await;
    assert!(handled < ORDERS, "stopped mid-load");
    let reserved = count(&pool, "SELECT count(DISTINCT order_id) FROM reservations").await;
    assert_eq!(reserved, handled);
    let waiting = i64::from(setup.broker.queue_depth("inventory").await.unwrap());
    assert_eq!(
        handled + waiting,
        ORDERS,
        "{handled} handled + {waiting} waiting"
    );
}

#[tokio::test]
async fn batches_of_orders_over_different_products_never_deadlock() {
    let setup = setup().await;
    // A backlog of orders over two pairs of products, so that batches form and mix them.
    // Each order locks its own pair in SKU order; without `before_batch` taking a batch's
    // stock locks first, two batches holding one pair each and wanting the other deadlock.
    const ORDERS: i64 = 96;
    for n in 0..ORDERS {
        let lines: &[(&str, u32)] = if n % 2 == 0 {
            &[("SKU-1", 1), ("SKU-2", 1)]
        } else {
            &[("SKU-3", 1), ("SKU-LUX", 1)]
        };
        setup.place_lines(lines).await;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    // Handling slowed down (after the batch's locks are taken), so that batches overlap.
    let _process = KillOnDrop(setup.start(&[
        ("INVENTORY_HTTP_ADDR", address.as_str()),
        ("CONSUMER_CONCURRENCY", "4"),
        ("FAULT_DELAY_MS", "10"),
    ]));
    let pool = setup.pool().await;
    wait_until_async("every order reserved", DEADLINE, || async {
        (count(&pool, "SELECT count(DISTINCT order_id) FROM reservations").await == ORDERS)
            .then_some(())
    })
    .await;
    let client = reqwest::Client::new();
    let exposition = msgkit::testing::scrape(&client, &format!("http://{address}")).await;
    let inventory = [("queue", "inventory")];
    let metric = |name| msgkit::testing::metric_value(&exposition, name, &inventory);
    assert_eq!(
        metric("msgkit_consumer_batch_rollbacks_total"),
        Some(0.0),
        "no batch rolled back (a deadlock would): {exposition}"
    );
    let batches = metric("msgkit_consumer_batch_size_count").unwrap_or_default();
    assert!(
        batches > 0.0 && batches < ORDERS as f64,
        "{batches} transactions for {ORDERS} orders: batches formed"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM reservations").await,
        2 * ORDERS,
        "every line reserved once"
    );
}

/// The service process, killed when the test ends, failed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
