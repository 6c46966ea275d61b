//! Several replicas: one applies the projection, every one serves reads and streams, and a
//! standby takes over when the active one stops.

use chrono::Utc;
use msgkit::auth::Role;
use msgkit::testing::wait_until_async;

use crate::helpers::{DEADLINE, payment, spawn_app, spawn_app_before_the_archive, token};
use crate::sse::SseClient;

#[tokio::test]
async fn one_of_two_replicas_applies_a_stream_on_the_other_follows_and_it_takes_over() {
    let mut app = spawn_app().await;
    let mut second = app.replica().await;
    let first_active = wait_until_async("exactly one active replica", DEADLINE, || async {
        let first = app.service.active(&app.client).await?;
        let other = second.active(&app.client).await?;
        (first + other == 1.0).then_some(first == 1.0)
    })
    .await;
    // A stream on the second replica sees what the active one applies.
    let bearer = token("c-replicas", Role::User);
    let response = app
        .client
        .get(format!("{}/rebates/c-replicas/stream", second.address))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::new(response);
    assert_eq!(stream.next(DEADLINE).await.unwrap().seq(), 0);
    app.events
        .paid(&payment("c-replicas", 10_000, Utc::now()))
        .await;
    let frame = stream
        .next(DEADLINE)
        .await
        .expect("the change, on the other replica");
    assert_eq!(frame.seq(), 1);
    assert_eq!(frame.json()["balance_cents"], 100);
    // The active one stops: the other takes over and applies what comes next, once.
    let survivor = if first_active {
        app.service.stop().await;
        second.address.clone()
    } else {
        second.stop().await;
        app.service.address.clone()
    };
    app.events
        .paid(&payment("c-replicas", 20_000, Utc::now()))
        .await;
    let body = wait_until_async("the survivor applied the payment", DEADLINE, || async {
        let (_, body) = app.get_rebates_from(&survivor, "c-replicas").await;
        (body["version"] == 2).then_some(body)
    })
    .await;
    assert_eq!(body["balance_cents"], 300, "{body}");
}

#[tokio::test]
async fn a_service_started_before_the_archive_exists_projects_it_once_it_does() {
    let app = spawn_app_before_the_archive().await;
    app.events
        .paid(&payment("c-late-archive", 10_000, Utc::now()))
        .await;
    let body = app.rebates_at("c-late-archive", 1).await;
    assert_eq!(body["balance_cents"], 100);
}
