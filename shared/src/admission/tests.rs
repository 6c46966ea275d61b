#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};

use super::*;
use crate::config::ConfigSource;
use crate::metrics::Metrics;

fn small() -> AdmissionConfig {
    AdmissionConfig {
        max_pending: 10,
        max_pending_age: Duration::from_secs(60),
        ..AdmissionConfig::default()
    }
}

#[test]
fn settings_override_the_defaults_under_the_service_prefix_first_and_nonsense_is_refused() {
    let source = ConfigSource::from_pairs([
        ("ADMISSION_MAX_PENDING", "500"),
        ("ORDER_ADMISSION_MAX_PENDING", "50"),
        ("ADMISSION_MAX_PENDING_AGE_MS", "2000"),
        ("ADMISSION_INTERVAL_MS", "20"),
    ]);
    let config = AdmissionConfig::default()
        .configured(&source.scoped("order"))
        .unwrap();
    assert_eq!(config.max_pending, 50);
    assert_eq!(config.max_pending_age, Duration::from_secs(2));
    assert_eq!(config.interval, Duration::from_millis(20));
    assert_eq!(config.resume_percent, 90, "unset keeps the default");

    for (name, value) in [
        ("ADMISSION_MAX_PENDING", "0"),
        ("ADMISSION_RESUME_PERCENT", "0"),
        ("ADMISSION_RESUME_PERCENT", "101"),
        ("ADMISSION_INTERVAL_MS", "0"),
        ("ADMISSION_MAX_PENDING_AGE_MS", "soon"),
    ] {
        let error = AdmissionConfig::default()
            .configured(&ConfigSource::from_pairs([(name, value)]))
            .unwrap_err();
        assert_eq!(error.name, name, "{value}");
    }
}

/// The guard in front of one route, served on a free port, beside an unguarded one.
async fn serve(admission: Admission) -> String {
    let app = Router::new()
        .route("/work", post(|| async { "accepted" }))
        .route_layer(axum::middleware::from_fn_with_state(admission, guard))
        .route("/status", get(|| async { "fine" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[tokio::test]
async fn the_guard_sheds_guarded_routes_with_503_retry_after_and_the_reason_until_drained() {
    let metrics = Metrics::new();
    let admission = Admission::new(small(), metrics.register_admission("api"));
    let address = serve(admission.clone()).await;
    let client = reqwest::Client::new();
    let post = || client.post(format!("{address}/work")).send();
    let shed = |text: &str| {
        crate::testing::metric_value(text, "msgkit_admission_shed_total", &[("service", "api")])
    };
    assert_eq!(
        shed(&metrics.render(&[])),
        Some(0.0),
        "a series from the start"
    );

    assert_eq!(
        post().await.unwrap().status(),
        200,
        "admits before any reading"
    );
    let t0 = Instant::now();
    admission.observe(t0, Backlog::new(12, Duration::from_secs(3)));
    let response = post().await.unwrap();
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "overloaded");
    assert_eq!(body["reason"], "pending");
    assert_eq!(body["pending"], 12);
    let status = client
        .get(format!("{address}/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status.status(),
        200,
        "routes outside the guard are not shed"
    );
    assert_eq!(admission.status()["reason"], "pending");

    // Below the limit, above the resume point (9): still shedding.
    admission.observe(t0 + Duration::from_secs(1), Backlog::new(9, Duration::ZERO));
    assert_eq!(post().await.unwrap().status(), 503);
    admission.observe(t0 + Duration::from_secs(2), Backlog::new(8, Duration::ZERO));
    assert_eq!(post().await.unwrap().status(), 200);
    assert_eq!(admission.status()["admitting"], true);

    let text = metrics.render(&[]);
    assert_eq!(shed(&text), Some(2.0));
    let gauge = |name: &str| crate::testing::metric_value(&text, name, &[("service", "api")]);
    assert_eq!(gauge("msgkit_admission_backlog"), Some(8.0));
    assert_eq!(gauge("msgkit_admission_shedding"), Some(0.0));
}

#[tokio::test]
async fn the_age_limit_trips_alone_and_names_itself() {
    let admission = Admission::new(small(), Metrics::new().register_admission("api"));
    admission.observe(Instant::now(), Backlog::new(1, Duration::from_secs(61)));
    let response = admission.admit().unwrap_err().into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["reason"], "pending_age");
    assert_eq!(body["oldest_pending_age_ms"], 61_000);
}

/// The database going away mid-overload must not reopen the gate: a failing probe keeps the
/// last decision (shedding) and is counted, and the first answer after it decides again.
#[tokio::test]
async fn a_failing_probe_keeps_the_last_decision_and_is_counted() {
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    let metrics = Metrics::new();
    let config = AdmissionConfig {
        interval: Duration::from_millis(10),
        ..small()
    };
    let admission = Admission::new(config, metrics.register_admission("api"));
    let calls = Arc::new(AtomicUsize::new(0));
    let recovered = Arc::new(AtomicBool::new(false));
    let probe = {
        let (calls, recovered) = (calls.clone(), recovered.clone());
        move |_pool: PgPool| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            let recovered = recovered.load(Ordering::SeqCst);
            async move {
                match (call, recovered) {
                    (_, true) => Ok(Backlog::new(0, Duration::ZERO)),
                    (0, false) => Ok(Backlog::new(50, Duration::ZERO)),
                    _ => Err(sqlx::Error::PoolTimedOut),
                }
            }
        }
    };
    // Never connects: the probe above does not use it.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    let shutdown = Shutdown::new();
    shutdown.spawn(admission.clone().run(pool, probe, shutdown.clone()));

    let errors = || {
        crate::testing::metric_value(
            &metrics.render(&[]),
            "msgkit_admission_probe_errors_total",
            &[("service", "api")],
        )
        .unwrap_or_default()
    };
    crate::testing::wait_until("three failed probes", Duration::from_secs(10), || {
        errors() >= 3.0
    })
    .await;
    assert!(
        admission.admit().is_err(),
        "still shedding on the last reading while the probe fails"
    );

    recovered.store(true, Ordering::SeqCst);
    crate::testing::wait_until("admitting again", Duration::from_secs(10), || {
        admission.admit().is_ok()
    })
    .await;
    shutdown.trigger();
    shutdown.wait_for_tasks().await;
}
