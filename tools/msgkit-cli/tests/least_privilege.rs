//! Least privilege, with the real services: the topology is applied as a step of its own
//! (`msgkit topology apply`), then every service runs as a broker user with exactly the
//! permissions `deploy/rabbitmq/definitions.json` gives its user, declaring only its own part
//! (`TOPOLOGY_DECLARE=own`). An order goes through the whole saga; then each user is shown to
//! be refused what lies outside its part: another service's queue, declaring what it does not
//! own.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use msgkit::testing::{Permissions, TestBroker, TestDatabase, TestUser, wait_until_async};
use serde_json::{Value, json};
use support::{Running, binary, free_port};

const DEADLINE: Duration = Duration::from_secs(90);

/// The services, each with the queue it consumes (rebate reads the archive only).
const SERVICES: [(&str, Option<&str>); 7] = [
    ("order", Some("order")),
    ("inventory", Some("inventory")),
    ("payment", Some("payment")),
    ("notify", Some("notify")),
    ("risk", Some("risk")),
    ("reconcile", Some("reconcile")),
    ("rebate", None),
];

/// Each service user's permissions as the deployment's definitions give them.
fn deployed_permissions() -> BTreeMap<String, Permissions> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/rabbitmq/definitions.json"
    );
    let definitions: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    definitions["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let field = |name: &str| p[name].as_str().unwrap().to_owned();
            (
                field("user"),
                Permissions {
                    configure: field("configure"),
                    write: field("write"),
                    read: field("read"),
                },
            )
        })
        .collect()
}

/// The broker's answer to `attempt` on a fresh channel of `connection`: `None` when allowed.
async fn refusal<F, Fut>(connection: &Connection, attempt: F) -> Option<String>
where
    F: FnOnce(lapin::Channel) -> Fut,
    Fut: std::future::Future<Output = Result<(), lapin::Error>>,
{
    let channel = connection.create_channel().await.unwrap();
    attempt(channel).await.err().map(|error| error.to_string())
}

#[tokio::test]
async fn every_service_runs_as_its_narrow_user_and_is_refused_outside_its_part() {
    let broker = TestBroker::create().await;
    let db = TestDatabase::create().await;
    let applied = Command::new(binary("msgkit"))
        .env("AMQP_URL", broker.amqp_url())
        .env("ARCHIVE_ENABLED", "true")
        .args(["topology", "apply"])
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let permissions = deployed_permissions();
    let mut users: Vec<(&str, Option<&str>, TestUser)> = Vec::new();
    for (service, queue) in SERVICES {
        let granted = permissions
            .get(service)
            .unwrap_or_else(|| panic!("definitions.json gives {service} no permissions"));
        users.push((service, queue, broker.add_user(service, granted).await));
    }

    let mut running = Vec::new();
    let mut urls = BTreeMap::new();
    for (service, _, user) in &users {
        let port = free_port();
        let mut command = Command::new(binary(service));
        command
            .env("DATABASE_URL", db.url())
            .env("AMQP_URL", &user.amqp_url)
            .env("TOPOLOGY_DECLARE", "own")
            .env("ARCHIVE_ENABLED", "true")
            .env("TOKEN_SECRET", "a local test secret, 32 bytes or more")
            .env("GATEWAY_LATENCY_MS", "0")
            .env("OUTBOX_POLL_INTERVAL_MS", "200")
            .env("AMQP_RECONNECT_MAX_MS", "500")
            .env("RUST_LOG", "warn")
            .env(
                format!("{}_HTTP_ADDR", service.to_ascii_uppercase()),
                format!("127.0.0.1:{port}"),
            );
        running.push((service.to_owned(), Running::start(&mut command)));
        urls.insert(service.to_owned(), format!("http://127.0.0.1:{port}"));
    }
    let client = reqwest::Client::new();
    for (service, url) in &urls {
        let ready = || async {
            let response = client.get(format!("{url}/readyz")).send().await.ok()?;
            (response.status() == 200).then_some(())
        };
        wait_until_async(
            &format!("{service} to be ready as its own user"),
            DEADLINE,
            ready,
        )
        .await;
    }

    // An order through the whole saga: every service publishes and consumes what it must.
    let placed: Value = client
        .post(format!("{}/orders", urls["order"]))
        .json(&json!({"customer_id": "c-narrow", "items": [{"sku": "SKU-1", "quantity": 1}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_id = placed["order_id"].as_str().unwrap().to_owned();
    let pool = db.pool().await;
    wait_until_async(
        "the order to be notified as confirmed",
        DEADLINE,
        || async {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM notify.notifications WHERE order_id = $1::uuid",
            )
            .bind(&order_id)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten();
            (status.as_deref() == Some("confirmed")).then_some(())
        },
    )
    .await;

    // Outside its part, each user is refused.
    for (service, queue, user) in &users {
        let connection = Connection::connect(&user.amqp_url, ConnectionProperties::default())
            .await
            .unwrap();
        let foreign = if *queue == Some("payment") {
            "inventory"
        } else {
            "payment"
        };
        let consumed = refusal(&connection, |channel| async move {
            channel
                .basic_consume(
                    foreign.into(),
                    "intruder".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map(|_| ())
        })
        .await;
        assert!(
            consumed
                .as_deref()
                .is_some_and(|e| e.contains("ACCESS_REFUSED")),
            "{service} consuming {foreign}: {consumed:?}"
        );
        let declared = refusal(&connection, |channel| async move {
            channel
                .queue_declare(
                    "intruder".into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map(|_| ())
        })
        .await;
        assert!(
            declared
                .as_deref()
                .is_some_and(|e| e.contains("ACCESS_REFUSED")),
            "{service} declaring a queue of its own making: {declared:?}"
        );
        let _ = connection.close(200, "done".into()).await;
    }
    pool.close().await;
    for (_, service) in running {
        service.stop();
    }
}
