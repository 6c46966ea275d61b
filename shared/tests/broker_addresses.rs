//! Several broker addresses (one per cluster node) against the real RabbitMQ: each "node" is a
//! TCP proxy to the test's vhost that the test can cut, beside an address nothing listens on.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use msgkit::testing::{TcpProxy, TestBroker};
use msgkit::{BrokerError, BrokerSettings, Shutdown};

/// A loopback address nothing listens on: connections are refused at once, like a dead node's.
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn settings(broker: &TestBroker, addrs: &[&str]) -> BrokerSettings {
    let list = addrs
        .iter()
        .map(|addr| broker.amqp_url_via(addr))
        .collect::<Vec<_>>()
        .join(",");
    let mut settings = BrokerSettings::new(list, "test/addresses");
    settings.reconnect_initial = Duration::from_millis(50);
    settings.reconnect_max = Duration::from_millis(200);
    settings.connect_timeout = Duration::from_secs(5);
    settings
}

fn redacted(broker: &TestBroker, addr: &str) -> String {
    msgkit::config::redact_url(&broker.amqp_url_via(addr))
}

#[tokio::test]
async fn a_dead_address_is_skipped_and_the_next_attempt_starts_after_the_last_failure() {
    let broker = TestBroker::create().await;
    let (a, b) = (
        TcpProxy::start(broker.amqp_addr()).await.unwrap(),
        TcpProxy::start(broker.amqp_addr()).await.unwrap(),
    );
    let dead = dead_addr();
    let settings = settings(&broker, &[&dead, &a.addr(), &b.addr()]);
    assert_eq!(settings.address_count(), 3);

    // The first address is dead: the round goes on to the second.
    let connection = settings.connect().await.expect("connect through a");
    assert!(connection.status().connected());
    assert_eq!(
        settings.current_url_redacted(),
        redacted(&broker, &a.addr())
    );
    // A working address keeps its place: the next connection starts there again.
    let again = settings.for_role("test/again").connect().await.unwrap();
    assert_eq!(
        settings.current_url_redacted(),
        redacted(&broker, &a.addr())
    );

    // a dies: the next round starts at a, fails, and lands on b.
    a.cut();
    let on_b = settings.connect().await.expect("connect through b");
    assert!(on_b.status().connected());
    assert_eq!(
        settings.current_url_redacted(),
        redacted(&broker, &b.addr())
    );

    // a is back, but b did not fail: b stays first.
    a.restore();
    settings.connect().await.expect("connect through b again");
    assert_eq!(
        settings.current_url_redacted(),
        redacted(&broker, &b.addr())
    );

    // b dies: b, then the dead one, then a.
    b.cut();
    settings.connect().await.expect("connect through a again");
    assert_eq!(
        settings.current_url_redacted(),
        redacted(&broker, &a.addr())
    );

    for connection in [connection, again, on_b] {
        let _ = connection.close(200, "done".into()).await;
    }
}

#[tokio::test]
async fn connect_with_backoff_retries_whole_rounds_until_a_node_is_back() {
    let broker = TestBroker::create().await;
    let node = TcpProxy::start(broker.amqp_addr()).await.unwrap();
    node.cut();
    let settings = settings(&broker, &[&dead_addr(), &node.addr()]);
    let shutdown = Shutdown::new();

    let connecting = tokio::spawn({
        let (settings, shutdown) = (settings.clone(), shutdown.clone());
        async move { settings.connect_with_backoff(&shutdown).await }
    });
    msgkit::testing::wait_until(
        "several rounds of refused attempts",
        Duration::from_secs(10),
        || node.refused() >= 3,
    )
    .await;
    assert!(!connecting.is_finished(), "no node is up yet");
    node.restore();
    let connection = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .expect("connects once the node is back")
        .unwrap()
        .expect("a connection");
    assert!(connection.status().connected());
    let _ = connection.close(200, "done".into()).await;

    // With every node down, shutdown still ends the loop.
    node.cut();
    let stuck = tokio::spawn({
        let (settings, shutdown) = (settings.clone(), shutdown.clone());
        async move { settings.connect_with_backoff(&shutdown).await }
    });
    let before = node.refused();
    msgkit::testing::wait_until("another refused attempt", Duration::from_secs(10), || {
        node.refused() > before
    })
    .await;
    shutdown.trigger();
    let ended = tokio::time::timeout(Duration::from_secs(5), stuck)
        .await
        .expect("stops on shutdown")
        .unwrap();
    assert!(matches!(ended, Err(BrokerError::ShuttingDown)), "{ended:?}");
}

#[tokio::test]
async fn a_round_where_every_node_refuses_reports_each_address_without_the_password() {
    let broker = TestBroker::create().await;
    let node = TcpProxy::start(broker.amqp_addr()).await.unwrap();
    node.cut();
    let (dead, cut) = (dead_addr(), node.addr());
    let settings = settings(&broker, &[&dead, &cut]);
    let error = settings.connect().await.expect_err("no node is up");
    let text = error.to_string();
    assert!(text.contains(&redacted(&broker, &dead)), "{text}");
    assert!(text.contains(&redacted(&broker, &cut)), "{text}");
    assert!(!text.contains(":guest@"), "password in {text}");
}

#[tokio::test]
async fn amqp_heartbeat_secs_is_the_interval_negotiated_with_the_broker() {
    let broker = TestBroker::create().await;
    // The harness's URL asks for 5 s itself.
    assert!(
        broker.amqp_url().ends_with("?heartbeat=5"),
        "{}",
        broker.amqp_url()
    );
    let config = msgkit::config::ConfigSource::from_pairs([
        ("AMQP_URL", broker.amqp_url()),
        ("AMQP_HEARTBEAT_SECS", "3".to_owned()),
    ]);
    let settings = BrokerSettings::from_config(&config, "test/heartbeat").unwrap();
    assert_eq!(settings.heartbeat_secs, Some(3));
    let connection = settings.connect().await.unwrap();
    // The setting wins over the URL's parameter; the broker (60 s) accepts the lower one.
    assert_eq!(connection.configuration().heartbeat(), 3);

    let unset = BrokerSettings::new(broker.amqp_url(), "test/default");
    assert_eq!(unset.heartbeat_secs, None);
    let connection = unset.connect().await.unwrap();
    assert_eq!(
        connection.configuration().heartbeat(),
        5,
        "the URL's parameter"
    );
}
