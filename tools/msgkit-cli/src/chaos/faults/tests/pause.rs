//! A paused service loses its broker connections through the AMQP heartbeat, and after it is
//! continued it reconnects and handles messages again.

use std::collections::BTreeMap;
use std::time::Duration;

use contracts::OrderConcluded;
use contracts::event_type::ORDER_CONFIRMED;
use msgkit::OutgoingMessage;
use msgkit::testing::{TestBroker, TestDatabase, wait_until_async};

use crate::chaos::faults::pause::{pause, pause_for, process_state};
use crate::chaos::services::{ServiceProcess, free_port};

/// The `notify` binary built beside this test binary (`target/debug/deps/..`).
fn notify_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("notify");
    assert!(
        binary.is_file(),
        "no {}: build it first (cargo build -p notify)",
        binary.display()
    );
    binary
}

/// The sum of every series of `name` in a Prometheus exposition.
fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series.split('{').next()? == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[tokio::test]
async fn a_paused_service_loses_its_connections_and_reconnects_after_it_continues() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let port = free_port().unwrap();
    let env: BTreeMap<String, String> = [
        ("DATABASE_URL", db.url()),
        ("AMQP_URL", broker.amqp_url()),
        ("AMQP_HEARTBEAT_SECS", "2".to_owned()),
        ("AMQP_RECONNECT_INITIAL_MS", "100".to_owned()),
        ("AMQP_RECONNECT_MAX_MS", "1000".to_owned()),
        ("NOTIFY_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("RUST_LOG", "info,sqlx=warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let log = std::env::temp_dir().join(format!("msgkit-faults-notify-{}.log", broker.vhost()));
    let mut notify = ServiceProcess::new("notify", notify_binary(), env, log.clone(), port);
    notify.start().unwrap();
    let http = reqwest::Client::new();
    let base = notify.base_url();
    let reconnects = || async {
        let text = msgkit::testing::scrape(&http, &base).await;
        metric_sum(&text, "msgkit_broker_reconnects_total")
    };
    wait_until_async("notify ready", Duration::from_secs(60), || async {
        let ready = http.get(format!("{base}/readyz")).send().await.ok()?;
        ready.status().is_success().then_some(())
    })
    .await;
    let before = reconnects().await;
    // The management API lists connections a moment after they open.
    wait_until_async(
        "notify's connections listed",
        Duration::from_secs(30),
        || async { (!broker.connections().await.is_empty()).then_some(()) },
    )
    .await;

    let paused = pause(notify.pid().unwrap()).await.unwrap();
    // Two missed heartbeats of 2 s: the broker closes every connection of the paused process.
    wait_until_async(
        "the broker to close the paused service's connections",
        Duration::from_secs(20),
        || async { broker.connections().await.is_empty().then_some(()) },
    )
    .await;
    assert_eq!(process_state(paused.pid()), Some('T'), "still paused");
    paused.resume().await.unwrap();

    wait_until_async(
        "notify to re-open its broker sessions",
        Duration::from_secs(30),
        || async { (reconnects().await > before).then_some(()) },
    )
    .await;
    let order_id = uuid::Uuid::now_v7();
    let payload = OrderConcluded {
        order_id,
        customer_id: "c-paused".into(),
        status: "confirmed".into(),
        reason: None,
    };
    let message =
        OutgoingMessage::event(ORDER_CONFIRMED.name(), "pause-test", "test", &payload).unwrap();
    let publisher = broker.publisher(&contracts::topology()).await;
    let outcome = publisher.publish(&message).await.unwrap();
    assert!(outcome.is_confirmed(), "{outcome:?}");
    let pool = db.pool().await;
    wait_until_async(
        "notify to handle an order confirmed after the pause",
        Duration::from_secs(30),
        || async {
            let rows: i64 =
                sqlx::query_scalar("SELECT count(*) FROM notify.notifications WHERE order_id = $1")
                    .bind(order_id)
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (rows == 1).then_some(())
        },
    )
    .await;
    assert_eq!(notify.stop(Duration::from_secs(10)).await, Some(0));
    let _ = std::fs::remove_file(log);
}

/// A process that does nothing for a minute, killed when dropped.
fn sleeper() -> tokio::process::Child {
    tokio::process::Command::new("sleep")
        .arg("60")
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_process_is_stopped_for_the_pause_and_runs_again_after_it() {
    let child = sleeper();
    let pid = child.id().unwrap();
    let fault = tokio::spawn(pause_for(pid, Duration::from_secs(2)));
    wait_until_async("the process stopped", Duration::from_secs(10), || async {
        (process_state(pid) == Some('T')).then_some(())
    })
    .await;
    fault.await.unwrap().unwrap();
    let state = process_state(pid);
    assert!(matches!(state, Some('S' | 'R')), "running again: {state:?}");
}

#[tokio::test]
async fn a_pause_cancelled_half_way_continues_the_process() {
    let child = sleeper();
    let pid = child.id().unwrap();
    let fault = tokio::spawn(pause_for(pid, Duration::from_secs(600)));
    wait_until_async("the process stopped", Duration::from_secs(10), || async {
        (process_state(pid) == Some('T')).then_some(())
    })
    .await;
    fault.abort();
    assert!(fault.await.unwrap_err().is_cancelled());
    // The guard sent SIGCONT; the process acts on it when next scheduled.
    wait_until_async(
        "the guard to continue the process",
        Duration::from_secs(10),
        || async { (process_state(pid) != Some('T')).then_some(()) },
    )
    .await;
    assert!(process_state(pid).is_some(), "still there");
}
