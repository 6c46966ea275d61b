use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msgkit::testing::{TestBroker, TestDatabase, wait_until_async};
use serde_json::Value;

use crate::helpers::{DEADLINE, correlation_ids, valid_order};

/// The real `order` binary, configured for this test's database and vhost.
fn start_order_process(db: &TestDatabase, broker: &TestBroker, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_order"))
        .env("DATABASE_URL", db.url())
        .env("AMQP_URL", broker.amqp_url())
        .env("ORDER_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("OUTBOX_POLL_INTERVAL_MS", "200")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the order binary")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    wait_until_async("the order process to answer /healthz", DEADLINE, || async {
        let response = client.get(format!("{base}/healthz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_accepted_order_is_published_after_the_process_is_killed_mid_burst() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let mut probe = broker.probe("events", "order.placed").await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let mut process = start_order_process(&db, &broker, port);
    wait_healthy(&client, &base).await;

    // A burst from 8 concurrent clients; each remembers the orders that got a 202.
    let accepted = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (client, base, accepted) = (client.clone(), base.clone(), Arc::clone(&accepted));
        clients.push(tokio::spawn(async move {
            for _ in 0..200 {
                let Ok(response) = client
                    .post(format!("{base}/orders"))
                    .json(&valid_order())
                    .send()
                    .await
                else {
                    return; // the process is gone
                };
                if response.status() == 202
                    && let Ok(body) = response.json::<Value>().await
                    && let Some(id) = body["order_id"].as_str()
                {
                    accepted.lock().unwrap().insert(id.to_owned());
                }
            }
        }));
    }
    // Kill it in the middle of the burst: once some orders are in, long before all 1,600.
    wait_until_async(
        "a first part of the burst to be accepted",
        DEADLINE,
        || async { (accepted.lock().unwrap().len() >= 100).then_some(()) },
    )
    .await;
    process.kill().expect("SIGKILL the order process");
    process.wait().expect("reap");
    for client in clients {
        client.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() < 1600, "the kill landed mid-burst");
    eprintln!("{} orders accepted before SIGKILL", accepted.len());

    let mut restarted = start_order_process(&db, &broker, port);
    wait_healthy(&client, &base).await;
    let received = probe
        .collect_until(
            "an order.placed for every order that got a 202",
            Duration::from_secs(60),
            |r| correlation_ids(r).is_superset(&accepted),
        )
        .await;
    assert!(correlation_ids(&received).is_superset(&accepted));

    let _ = restarted.kill();
    let _ = restarted.wait();
}
