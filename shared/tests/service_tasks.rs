//! A service's own background tasks (`Service::with_task`) and responses that end on its
//! stop (`Service::shutdown_signal`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use msgkit::Shutdown;
use msgkit::service::Service;
use msgkit::testing::{TestBroker, TestDatabase, service_settings, wait_until};
use sqlx::migrate::Migrator;

#[tokio::test]
async fn a_task_runs_with_the_service_and_a_waiting_response_ends_on_its_stop() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let settings = service_settings("tasks", "tasks", &db, broker.settings("tasks"));
    let service = Service::start(settings, msgkit::Topology::default(), Migrator::DEFAULT)
        .await
        .unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let ended = Arc::new(AtomicBool::new(false));
    let (task_started, task_ended) = (started.clone(), ended.clone());
    // A response that only ends when the service stops, as a Server-Sent Events stream does.
    let stopping = service.shutdown_signal();
    let waiting_now = Arc::new(AtomicBool::new(false));
    let in_handler = waiting_now.clone();
    let routes = Router::new().route(
        "/wait",
        get(move || async move {
            in_handler.store(true, Ordering::SeqCst);
            stopping.triggered().await;
            "stopping"
        }),
    );
    let url = format!("http://{}/wait", service.local_addr().unwrap());
    let service = service
        .with_http(routes)
        .with_task("test task", move |shutdown| async move {
            task_started.store(true, Ordering::SeqCst);
            shutdown.triggered().await;
            task_ended.store(true, Ordering::SeqCst);
        });
    let shutdown = Shutdown::new();
    let running = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    wait_until("the task started", Duration::from_secs(10), || {
        started.load(Ordering::SeqCst)
    })
    .await;
    let waiting = tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await });
    // The request is in the handler before the stop: its connection is one the graceful
    // shutdown waits for.
    wait_until("the request is waiting", Duration::from_secs(10), || {
        waiting_now.load(Ordering::SeqCst)
    })
    .await;
    assert!(!ended.load(Ordering::SeqCst));

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the service stops although a response was waiting")
        .unwrap()
        .unwrap();
    assert!(ended.load(Ordering::SeqCst), "the stop waited for the task");
    assert_eq!(waiting.await.unwrap().unwrap(), "stopping");
}
