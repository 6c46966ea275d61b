//! A consumer whose broker goes silent (packets dropped, or the process frozen and its
//! connections closed by the broker meanwhile) notices through its heartbeat and consumes
//! again once the broker is reachable: ending a session on a dead connection must not wait
//! for an answer that never comes. Found by the quick chaos run (a paused payment service
//! never consumed again).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use msgkit::consume::{Consumer, ConsumerConfig, Context, HandlerError, Routes};
use msgkit::message::OutgoingMessage;
use msgkit::testing::{TcpProxy, TestBroker, TestDatabase, wait_until};
use msgkit::{EventType, Shutdown, Topology, WorkQueue};
use serde::{Deserialize, Serialize};

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u32,
}

const PING: EventType<Ping> = EventType::new("heartbeat.ping");

async fn pong(_ctx: Context<'_>, _ping: Ping) -> Result<(), HandlerError> {
    Ok(())
}

fn topology() -> Topology {
    Topology::default().with_queue(WorkQueue::new("heartbeat").bind(PING))
}

#[tokio::test]
async fn a_consumer_cut_off_silently_consumes_again_once_the_broker_is_back() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let proxy = TcpProxy::start(broker.amqp_addr()).await.unwrap();
    let mut settings = broker.settings_via(&proxy.addr(), "heartbeat");
    settings.heartbeat_secs = Some(1);
    let consumer = Consumer::new(
        db.kit_pool().await,
        settings,
        topology(),
        ConsumerConfig::new("heartbeat", "heartbeat"),
        Routes::new().route(PING, pong),
    );
    let stats = consumer.stats();
    let shutdown = Shutdown::new();
    shutdown.spawn(consumer.run(shutdown.child()));
    let publisher = broker.publisher(&topology()).await;
    let ping = |n| OutgoingMessage::event(PING.name(), "k", "test", &Ping { n }).unwrap();
    assert!(publisher.publish(&ping(1)).await.unwrap().is_confirmed());
    wait_until("the first ping handled", DEADLINE, || stats.handled() == 1).await;

    // Silence: connections stay open, no byte moves. The heartbeat notices.
    let accepted = proxy.control().counters().accepted;
    proxy.blackhole();
    wait_until("the consumer to notice", DEADLINE, || !stats.connected()).await;
    // Still silent while it ends the session and tries a new connection; then the broker is
    // back.
    wait_until("a new connection attempt", DEADLINE, || {
        proxy.control().counters().accepted > accepted
    })
    .await;
    proxy.restore();

    assert!(publisher.publish(&ping(2)).await.unwrap().is_confirmed());
    wait_until("the second ping handled", DEADLINE, || stats.handled() >= 2).await;
    assert!(stats.reconnects() >= 1);
    shutdown.trigger();
    tokio::time::timeout(DEADLINE, shutdown.wait_for_tasks())
        .await
        .unwrap();
    publisher.close().await;
}
