//! Every series the kit knows for a component is on `/metrics` at 0 from the moment the
//! component starts, before its first message: a counter that appears only at its first
//! increment leaves a dashboard panel empty in steady state, and `increase()` never shows that
//! first increment (Prometheus has no earlier sample to subtract).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use msgkit::consume::{Consumer, ConsumerConfig, Context, HandlerError, Routes};
use msgkit::service::Service;
use msgkit::testing::{
    TestBroker, TestDatabase, metric_value, scrape, service_settings, wait_until_async,
};
use msgkit::timer::{Fired, TimerType};
use msgkit::{EventType, OutboxRelay, RelayConfig, Shutdown, Topology, WorkQueue};
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;

const DEADLINE: Duration = Duration::from_secs(30);
const SERVICE: &str = "gauges";

#[derive(Debug, Serialize, Deserialize)]
struct Reading {
    value: i64,
}

const STEP: EventType<Reading> = EventType::new("gauges.step").in_sequence("gauges");
const READ: EventType<Reading> = EventType::new("gauges.read");
const CHECK: TimerType<Reading> = TimerType::new("check");

async fn ignore(_ctx: Context<'_>, _reading: Reading) -> Result<(), HandlerError> {
    Ok(())
}

async fn ignore_timer(_ctx: Context<'_>, _fired: Fired<Reading>) -> Result<(), HandlerError> {
    Ok(())
}

/// A consumer with everything that has series of its own: key order (gaps), a route with
/// allowed lateness (late events of its type) and a timer.
fn routes() -> Routes {
    Routes::new()
        .in_key_order()
        .route(STEP, ignore)
        .route_with_lateness(READ, Duration::from_secs(60), ignore, ignore)
        .on_timer(CHECK, ignore_timer)
}

fn topology() -> Topology {
    Topology::default().with_queue(WorkQueue::new(SERVICE).bind("gauges.#"))
}

/// The series a consumer of `queue` (named `consumer`) owns, each at 0.
fn consumer_series(queue: &str, consumer: &str) -> Vec<(String, Vec<(&'static str, String)>)> {
    let q = || vec![("queue", queue.to_owned())];
    let mut series: Vec<(String, Vec<(&'static str, String)>)> = [
        "ack",
        "retry",
        "dead_letter",
        "duplicate",
        "poison",
        "deferred",
        "parked",
    ]
    .into_iter()
    .map(|outcome| {
        let mut labels = q();
        labels.push(("outcome", outcome.to_owned()));
        ("msgkit_consumed_total".to_owned(), labels)
    })
    .collect();
    for name in [
        "msgkit_redelivered_total",
        "msgkit_handler_duration_seconds_count",
        "msgkit_consumer_batch_size_count",
        "msgkit_consumer_batch_rollbacks_total",
        "msgkit_end_to_end_latency_seconds_count",
        "msgkit_timers_fired_total",
        "msgkit_timer_firing_lag_seconds_count",
        "msgkit_timers_overdue_total",
    ] {
        series.push((name.to_owned(), q()));
    }
    let mut late = q();
    late.push(("type", READ.name().to_owned()));
    series.push(("msgkit_late_events_total".to_owned(), late));
    for publisher in ["retry", "dead_letter"] {
        series.push((
            "msgkit_publish_confirm_seconds_count".to_owned(),
            vec![("publisher", publisher.to_owned())],
        ));
    }
    series.push((
        "msgkit_key_order_gaps_total".to_owned(),
        vec![("consumer", consumer.to_owned())],
    ));
    series.push((
        "msgkit_broker_reconnects_total".to_owned(),
        vec![("component", format!("{consumer}/consumer"))],
    ));
    series
}

/// The series the relay of `app_id` owns, each at 0.
fn relay_series(app_id: &str) -> Vec<(String, Vec<(&'static str, String)>)> {
    let mut series: Vec<(String, Vec<(&'static str, String)>)> = [
        "msgkit_relay_published_total",
        "msgkit_relay_refused_total",
        "msgkit_relay_broker_errors_total",
    ]
    .into_iter()
    .map(|name| (name.to_owned(), vec![("service", app_id.to_owned())]))
    .collect();
    series.push((
        "msgkit_publish_confirm_seconds_count".to_owned(),
        vec![("publisher", "relay".to_owned())],
    ));
    series.push((
        "msgkit_broker_reconnects_total".to_owned(),
        vec![("component", format!("{app_id}/relay"))],
    ));
    series
}

/// The series of `expected` that `exposition` lacks or shows at anything but 0.
fn not_at_zero(
    exposition: &str,
    expected: &[(String, Vec<(&'static str, String)>)],
) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(name, labels)| {
            let wanted: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            match metric_value(exposition, name, &wanted) {
                Some(0.0) => None,
                found => Some(format!("{name}{labels:?} = {found:?}")),
            }
        })
        .collect()
}

#[tokio::test]
async fn a_services_series_are_at_zero_on_its_first_scrape() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let settings = service_settings(SERVICE, SERVICE, &db, broker.settings(SERVICE));
    let service = Service::start(settings, topology(), Migrator::DEFAULT)
        .await
        .unwrap()
        .with_relay()
        .consume(routes())
        .unwrap();
    let base = format!("http://{}", service.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let running = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    let client = reqwest::Client::new();
    // The first scrape that answers: no message has been published or consumed.
    let exposition = wait_until_async("the service's /metrics", DEADLINE, || async {
        let response = client.get(format!("{base}/metrics")).send().await.ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    })
    .await;

    let mut expected = consumer_series(SERVICE, SERVICE);
    expected.extend(relay_series(SERVICE));
    // Read from the database at scrape time.
    for name in [
        "msgkit_outbox_pending",
        "msgkit_outbox_failing",
        "msgkit_outbox_oldest_pending_age_seconds",
    ] {
        expected.push((name.to_owned(), vec![("service", SERVICE.to_owned())]));
    }
    for name in [
        "msgkit_state_entries",
        "msgkit_timers_pending",
        "msgkit_timers_pending_overdue",
        "msgkit_key_order_parked",
    ] {
        expected.push((name.to_owned(), vec![("consumer", SERVICE.to_owned())]));
    }
    let missing = not_at_zero(&exposition, &expected);
    assert!(
        missing.is_empty(),
        "series missing or not 0 on the first scrape:\n{}\n\n{exposition}",
        missing.join("\n")
    );
    for component in ["consumer", "relay"] {
        let connected = metric_value(
            &exposition,
            "msgkit_broker_connected",
            &[("component", &format!("{SERVICE}/{component}"))],
        );
        assert!(
            matches!(connected, Some(v) if v == 0.0 || v == 1.0),
            "{component}: msgkit_broker_connected = {connected:?}"
        );
    }
    // Still there, still 0, on the next scrape (nothing replaced them).
    let again = scrape(&client, &base).await;
    assert_eq!(not_at_zero(&again, &expected), Vec::<String>::new());

    shutdown.trigger();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_lone_consumers_and_relays_series_are_at_zero_as_they_start() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.kit_pool().await;
    let shutdown = Shutdown::new();

    let consumer = Consumer::new(
        pool.clone(),
        broker.settings("lone-consumer"),
        topology(),
        ConsumerConfig::new("lone", SERVICE),
        routes(),
    );
    let consumer_stats = consumer.stats();
    let relay = OutboxRelay::new(
        pool,
        broker.settings("lone-relay"),
        topology(),
        RelayConfig::new("lone"),
    );
    let relay_stats = relay.stats();
    shutdown.spawn(consumer.run(shutdown.child()));
    shutdown.spawn(relay.run(shutdown.child()));

    // Each has a registry of its own: the consumer's series in the consumer's, the relay's
    // in the relay's.
    let consumer_missing = not_at_zero(
        &consumer_stats.render_metrics(),
        &consumer_series(SERVICE, "lone"),
    );
    let relay_missing = not_at_zero(&relay_stats.render_metrics(), &relay_series("lone"));
    assert!(
        consumer_missing.is_empty() && relay_missing.is_empty(),
        "consumer: {consumer_missing:#?}\nrelay: {relay_missing:#?}"
    );

    shutdown.trigger();
    shutdown.wait_for_tasks().await;
}
