//! The integration-test harness every crate of the workspace uses: a fresh PostgreSQL database
//! and a fresh RabbitMQ vhost per test (both removed when the test ends, pass or fail), a TCP
//! proxy that can cut the broker away, probes that see what reached the broker, and a wait
//! for a condition with a deadline (never a sleep).
//!
//! Environment (defaults match `scripts/stack.sh`):
//! `TEST_DATABASE_ADMIN_URL` (`postgres://postgres@127.0.0.1:5432/postgres`),
//! `TEST_AMQP_ADDR` (`127.0.0.1:5672`), `TEST_RABBITMQ_API` (`http://127.0.0.1:15672`),
//! `TEST_RABBITMQ_USER` / `TEST_RABBITMQ_PASSWORD` (`guest` / `guest`).

mod broker;
mod database;
mod message;
mod probe;
mod process;
mod proxy;
mod scrape;
pub mod sse;
pub mod tls;
mod users;
mod wait;

pub use broker::TestBroker;
pub use database::TestDatabase;
pub use message::TestMessage;
pub use probe::Probe;
pub use process::Running;
pub use proxy::{Connectivity, Faults, ProxyControl, ProxyCounters, TcpProxy};
pub use scrape::{metric_value, scrape};
pub use users::{Permissions, TestUser};
pub use wait::{try_wait_until, wait_until, wait_until_async};

use std::time::{SystemTime, UNIX_EPOCH};

use crate::broker::BrokerSettings;
use crate::config::ConfigSource;
use crate::service::ServiceSettings;

/// Settings for service `name` in this test's database (schema `schema`) and broker, its HTTP
/// endpoints on a free port, read from [`test_config`]: fast retries and a fast relay, no
/// faults. Add to `settings.source` (e.g. `INVENTORY_FAULT_FAIL_FIRST_ATTEMPTS`) before
/// building the service to configure it as an operator would.
pub fn service_settings(
    name: &str,
    schema: &str,
    db: &TestDatabase,
    broker: BrokerSettings,
) -> ServiceSettings {
    let mut settings = ServiceSettings::from_source(test_config([]), name, 0, schema)
        .expect("the test settings are valid");
    settings.database = db.settings(schema);
    settings.broker = broker;
    settings
}

/// The settings every test service starts from, plus `extra` (which wins): retries after
/// 50 ms doubling to 500 ms, 4 attempts; the relay polling every 200 ms and retrying a refused
/// row after 100 ms up to 500 ms. Tests never read the process environment, so a developer's
/// `CONSUMER_*` or `FAULT_*` variables cannot change what a test means.
pub fn test_config<'a>(extra: impl IntoIterator<Item = (&'a str, &'a str)>) -> ConfigSource {
    let mut pairs: Vec<(String, String)> = [
        ("RETRY_INITIAL_DELAY_MS", "50"),
        ("RETRY_MULTIPLIER", "2"),
        ("RETRY_MAX_DELAY_MS", "500"),
        ("RETRY_MAX_ATTEMPTS", "4"),
        ("RETRY_JITTER", "0.1"),
        ("OUTBOX_POLL_INTERVAL_MS", "200"),
        ("OUTBOX_RETRY_INITIAL_MS", "100"),
        ("OUTBOX_RETRY_MAX_MS", "500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    pairs.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
    ConfigSource::from_pairs(pairs)
}

/// Test resources older than this are leftovers of killed runs and are swept.
const LEFTOVER_AGE_SECS: u64 = 3600;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A unique name `<prefix><unix seconds>_<random>`; the timestamp lets later runs sweep
/// leftovers of runs that were killed before they could clean up.
fn unique_name(prefix: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}_{}", now_secs(), &random[..12])
}

/// Whether a name made by [`unique_name`] is older than [`LEFTOVER_AGE_SECS`].
fn is_leftover(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split('_').next())
        .and_then(|ts| ts.parse::<u64>().ok())
        .is_some_and(|ts| now_secs().saturating_sub(ts) > LEFTOVER_AGE_SECS)
}

/// Run async clean-up from a `Drop` impl, even while a failed test unwinds: on its own thread
/// with its own runtime, because the test's runtime may be shutting down.
fn block_on_cleanup<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let handle = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(cleanup),
            Err(error) => eprintln!("test clean-up could not start a runtime: {error}"),
        }
    });
    let _ = handle.join();
}
