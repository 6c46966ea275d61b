//! The examples in `shared/examples/` run as a newcomer runs them: the compiled binaries as
//! child processes, their settings from the environment only, against this test's own vhost
//! and database. Each test proves one path end to end and that SIGTERM stops every example
//! cleanly (exit status 0).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

#[path = "../examples/contracts/mod.rs"]
mod contracts;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use contracts::{TICKET_CLOSED, TICKET_OPENED, TicketClosed, TicketOpened, TicketResolved};
use msgkit::config::env_prefix;
use msgkit::message::OutgoingMessage;
use msgkit::testing::{TestBroker, TestDatabase, metric_value, scrape, wait_until_async};
use serde_json::json;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(60);

/// One example binary running; killed (SIGKILL) if the test ends without stopping it.
struct Example {
    name: &'static str,
    child: Child,
    url: String,
}

impl Example {
    /// Start example `name` as service `service` with settings from the environment only.
    async fn start(name: &'static str, service: &str, env: &Env<'_>) -> Self {
        let port = free_port();
        let mut command = Command::new(binary(name));
        // Nothing from the developer's environment (a `RETRY_*`, a `FAULT_*`) changes the test.
        command
            .env_clear()
            .env("AMQP_URL", env.broker.amqp_url())
            .env("DATABASE_URL", env.db.url())
            .env(
                format!("{}_HTTP_ADDR", env_prefix(service)),
                format!("127.0.0.1:{port}"),
            )
            .env("RUST_LOG", "info")
            .envs(FAST.iter().copied())
            .envs(env.extra.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let example = Self {
            name,
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        example.wait_ready().await;
        example
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let what = format!("{} to answer /readyz with 200", self.name);
        wait_until_async(&what, DEADLINE, || async {
            let response = client.get(format!("{}/readyz", self.url)).send().await;
            response
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
                .then_some(())
        })
        .await;
    }

    /// SIGTERM, then the exit status, which must be 0 (a graceful stop).
    async fn stop(mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop on SIGTERM", self.name))
            .unwrap();
        assert!(status.success(), "{} exited with {status:?}", self.name);
    }
}

/// The test's broker and database, and settings of its own for every example.
struct Env<'a> {
    broker: &'a TestBroker,
    db: &'a TestDatabase,
    extra: &'a [(&'a str, &'a str)],
}

/// Fast retries and relay, as the kit's own tests use (`msgkit::testing::test_config`).
const FAST: &[(&str, &str)] = &[
    ("RETRY_INITIAL_DELAY_MS", "50"),
    ("RETRY_MAX_DELAY_MS", "500"),
    ("RETRY_MAX_ATTEMPTS", "10"),
    ("OUTBOX_POLL_INTERVAL_MS", "200"),
];

/// A port nobody listens on now, for an example's `<NAME>_HTTP_ADDR`.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The example's binary in this test's target directory (`target/<profile>/examples/`), built
/// first when missing or older than the examples' sources: `cargo test` and
/// `cargo nextest run --workspace` build examples, `--test examples` alone does not.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/examples-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples").join(name);
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let built = path.metadata().and_then(|m| m.modified()).ok();
    if built.is_none_or(|built| newest(&sources) > built) {
        build(name, profile_dir);
    }
    path
}

fn build(name: &str, profile_dir: &Path) {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let target_dir = profile_dir.parent().unwrap();
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "msgkit",
            "--example",
            name,
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --example {name}: {status}");
}

/// The newest modification time of any file under `dir`.
fn newest(dir: &Path) -> SystemTime {
    let entries = std::fs::read_dir(dir).unwrap().flatten();
    let times = entries.map(|entry| match entry.path() {
        path if path.is_dir() => newest(&path),
        _ => entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH),
    });
    times.max().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A pool on an example's schema, once it exists.
async fn schema_pool(db: &TestDatabase, schema: &str) -> PgPool {
    let options = db.options().options([("search_path", schema)]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap()
}

async fn open_ticket(client: &reqwest::Client, publisher: &Example, title: &str) -> Uuid {
    let response = client
        .post(format!("{}/tickets", publisher.url))
        .json(&json!({ "title": title }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let body: serde_json::Value = response.json().await.unwrap();
    body["ticket_id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_ticket_opened_and_closed_over_http_is_resolved_by_the_consumer() {
    let (broker, db) = (TestBroker::create().await, TestDatabase::create().await);
    let env = Env {
        broker: &broker,
        db: &db,
        extra: &[],
    };
    let mut resolved = broker.probe("events", TICKET_RESOLVED_KEY).await;
    let publisher = Example::start("publisher", "example_publisher", &env).await;
    let consumer = Example::start("consumer", contracts::CONSUMER, &env).await;

    let client = reqwest::Client::new();
    let ticket_id = open_ticket(&client, &publisher, "printer on fire").await;
    let close = client
        .post(format!("{}/tickets/{ticket_id}/close", publisher.url))
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), reqwest::StatusCode::ACCEPTED);

    // Both routes ran (the log has the open and the close) and the follow-up was published.
    let delivery = resolved
        .next(DEADLINE)
        .await
        .expect("example.ticket.resolved published by the consumer");
    let event: TicketResolved = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event.ticket_id, ticket_id);
    assert!(event.open_for_ms >= 0, "{}", event.open_for_ms);
    let log = schema_pool(&db, contracts::CONSUMER).await;
    let (title, closed): (String, bool) =
        sqlx::query_as("SELECT title, closed_at IS NOT NULL FROM ticket_log WHERE ticket_id = $1")
            .bind(ticket_id)
            .fetch_one(&log)
            .await
            .unwrap();
    assert_eq!((title.as_str(), closed), ("printer on fire", true));
    assert!(
        resolved.next(Duration::from_millis(500)).await.is_none(),
        "resolved once"
    );

    publisher.stop().await;
    consumer.stop().await;
}

const TICKET_RESOLVED_KEY: &str = "example.ticket.resolved";

#[tokio::test]
async fn a_close_handled_before_its_open_is_retried_until_the_open_arrives() {
    let (broker, db) = (TestBroker::create().await, TestDatabase::create().await);
    let env = Env {
        broker: &broker,
        db: &db,
        extra: &[],
    };
    let mut resolved = broker.probe("events", TICKET_RESOLVED_KEY).await;
    let consumer = Example::start("consumer", contracts::CONSUMER, &env).await;
    let publish = broker.publisher(&contracts::topology()).await;
    let ticket_id = Uuid::new_v4();
    let id = ticket_id.to_string();
    let closed = OutgoingMessage::event(
        TICKET_CLOSED.name(),
        &id,
        "test",
        &TicketClosed { ticket_id },
    );
    assert!(
        publish
            .publish(&closed.unwrap())
            .await
            .unwrap()
            .is_confirmed()
    );
    // The close fails as transient (not seen opened) and is retried with backoff ...
    let client = reqwest::Client::new();
    wait_until_async("the close to be retried", DEADLINE, || async {
        let exposition = scrape(&client, &consumer.url).await;
        let labels = [("queue", contracts::CONSUMER), ("outcome", "retry")];
        (metric_value(&exposition, "msgkit_consumed_total", &labels) >= Some(1.0)).then_some(())
    })
    .await;
    // ... until the open is there.
    let title = "late open".to_owned();
    let opened = OutgoingMessage::event(
        TICKET_OPENED.name(),
        &id,
        "test",
        &TicketOpened { ticket_id, title },
    );
    assert!(
        publish
            .publish(&opened.unwrap())
            .await
            .unwrap()
            .is_confirmed()
    );

    let delivery = resolved
        .next(DEADLINE)
        .await
        .expect("resolved after the retry");
    let event: TicketResolved = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event.ticket_id, ticket_id);
    consumer.stop().await;
}

#[tokio::test]
async fn a_ticket_left_open_is_reminded_when_the_stateful_timer_fires() {
    let (broker, db) = (TestBroker::create().await, TestDatabase::create().await);
    // The example's own setting: a ticket may stay open 1 s before its reminder.
    let env = Env {
        broker: &broker,
        db: &db,
        extra: &[("EXAMPLE_STATEFUL_REMIND_AFTER_MS", "1000")],
    };
    let publisher = Example::start("publisher", "example_publisher", &env).await;
    let stateful = Example::start("stateful", contracts::STATEFUL, &env).await;

    let client = reqwest::Client::new();
    let ticket_id = open_ticket(&client, &publisher, "left open").await;
    let reminders = schema_pool(&db, contracts::STATEFUL).await;
    let title: String = wait_until_async("the reminder of the open ticket", DEADLINE, || async {
        sqlx::query_scalar("SELECT title FROM reminders WHERE ticket_id = $1")
            .bind(ticket_id)
            .fetch_optional(&reminders)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(title, "left open");

    publisher.stop().await;
    stateful.stop().await;
}

#[tokio::test]
async fn a_ticket_resolved_through_the_consumer_cancels_its_reminder() {
    let (broker, db) = (TestBroker::create().await, TestDatabase::create().await);
    // The default delay (10 minutes): the reminder cannot fire during the test.
    let env = Env {
        broker: &broker,
        db: &db,
        extra: &[],
    };
    let publisher = Example::start("publisher", "example_publisher", &env).await;
    let consumer = Example::start("consumer", contracts::CONSUMER, &env).await;
    let stateful = Example::start("stateful", contracts::STATEFUL, &env).await;

    let client = reqwest::Client::new();
    let ticket_id = open_ticket(&client, &publisher, "resolve me").await;
    let timers = schema_pool(&db, contracts::STATEFUL).await;
    let pending = |ticket_id: Uuid| {
        let timers = &timers;
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM msgkit_timers WHERE name = 'remind' AND key = $1",
            )
            .bind(ticket_id.to_string())
            .fetch_one(timers)
            .await
            .unwrap()
        }
    };
    wait_until_async("the reminder to be set", DEADLINE, || async {
        (pending(ticket_id).await == 1).then_some(())
    })
    .await;
    let close = client
        .post(format!("{}/tickets/{ticket_id}/close", publisher.url))
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), reqwest::StatusCode::ACCEPTED);
    // publisher -> example.ticket.closed -> consumer -> example.ticket.resolved -> stateful
    wait_until_async("the reminder to be cancelled", DEADLINE, || async {
        (pending(ticket_id).await == 0).then_some(())
    })
    .await;
    let reminded: i64 = sqlx::query_scalar("SELECT count(*) FROM reminders")
        .fetch_one(&timers)
        .await
        .unwrap();
    assert_eq!(reminded, 0);

    publisher.stop().await;
    consumer.stop().await;
    stateful.stop().await;
}
