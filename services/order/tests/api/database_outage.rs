use msgkit::testing::{TcpProxy, TestBroker, TestDatabase, wait_until_async};
use order::startup::build;
use serde_json::Value;
use sqlx::ConnectOptions;

use crate::helpers::{DEADLINE, test_settings, valid_order};

/// A database that cannot be reached is a temporary condition for the client, not a bug of
/// ours: 503 with Retry-After (nothing was stored, so a retry with the same Idempotency-Key is
/// safe), and orders are accepted again once it is back, without a restart.
#[tokio::test]
async fn an_unreachable_database_answers_503_with_retry_after_and_recovers() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let options = db.options();
    let proxy = TcpProxy::start(&format!("{}:{}", options.get_host(), options.get_port()))
        .await
        .unwrap();
    let port: u16 = proxy.addr().rsplit(':').next().unwrap().parse().unwrap();
    let mut settings = test_settings(&db, broker.settings("order/outbox-relay"));
    settings.database.url = options
        .host("127.0.0.1")
        .port(port)
        .to_url_lossy()
        .to_string()
        .into();
    let service = build(settings).await.unwrap();
    let address = format!("http://{}", service.local_addr().unwrap());
    let shutdown = msgkit::Shutdown::new();
    tokio::spawn(service.run_until_stopped(shutdown.clone()));
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(format!("{address}/orders"))
            .json(&valid_order())
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 202);

    proxy.cut();
    let response = post().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");

    proxy.restore();
    wait_until_async("orders to be accepted again", DEADLINE, || async {
        (post().await.ok()?.status() == 202).then_some(())
    })
    .await;
    shutdown.trigger();
    shutdown.wait_for_tasks().await;
}
