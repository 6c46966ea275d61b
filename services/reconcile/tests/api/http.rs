//! `GET /reconciliation`, `GET /reconciliation/summary` and the metrics.

use contracts::GatewayOutcome::Success;
use reconcile::http::{ReconciliationView, Summary};
use uuid::Uuid;

use crate::helpers::{DEADLINE, callback, spawn_app};

#[tokio::test]
async fn the_summary_counts_outcomes_and_the_list_filters_by_status() {
    let app = spawn_app().await;
    let (matched, missing) = (Uuid::new_v4(), Uuid::new_v4());
    app.paid(matched, 100).await;
    app.at(1.5);
    app.called_back(&callback("cb-1", matched, Success, 100))
        .await;
    app.paid(missing, 200).await;
    app.at(10.0);
    app.wait_for_outcome(missing, "third-party-missing").await;

    let summary: Summary = app.get_json("/reconciliation/summary").await;
    assert_eq!(summary.total, 2);
    assert_eq!(summary.by_outcome["matched"], 1);
    assert_eq!(summary.by_outcome["third-party-missing"], 1);
    assert_eq!(summary.by_outcome["late-match"], 0);
    assert_eq!(summary.open_mismatches, 1);
    assert_eq!(summary.match_rate, Some(0.5));
    let p50 = summary.time_to_match_p50_ms.unwrap();
    assert!((1_000.0..2_500.0).contains(&p50), "{p50}");

    let open: Vec<ReconciliationView> = app.get_json("/reconciliation?status=open").await;
    assert_eq!(
        open.iter().map(|r| r.order_id).collect::<Vec<_>>(),
        [missing]
    );
    let by_outcome: Vec<ReconciliationView> = app.get_json("/reconciliation?status=matched").await;
    assert_eq!(
        by_outcome.iter().map(|r| r.order_id).collect::<Vec<_>>(),
        [matched]
    );
    let since = (app.clock.now() + chrono::Duration::hours(1)).to_rfc3339();
    let url = reqwest::Url::parse_with_params(
        &format!("{}/reconciliation", app.address),
        &[("since", since.as_str())],
    )
    .unwrap();
    let later: Vec<ReconciliationView> = app
        .client
        .get(url)
        .bearer_auth(crate::helpers::token("ops", msgkit::auth::Role::Operator))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(later.is_empty());

    assert_eq!(app.get("/reconciliation?status=nope").await.status(), 422);
    assert_eq!(
        app.get("/reconciliation?since=yesterday").await.status(),
        422
    );

    assert_eq!(
        app.metric("reconcile_outcomes_total", &[("outcome", "matched")])
            .await,
        Some(1.0)
    );
    assert_eq!(
        app.metric("reconcile_time_to_match_seconds_count", &[])
            .await,
        Some(1.0)
    );
    msgkit::testing::wait_until_async("the open-mismatch gauge", DEADLINE, || async {
        (app.metric("reconcile_open_mismatches", &[]).await == Some(1.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_api_is_for_operators_only() {
    use msgkit::auth::Role;

    use crate::helpers::token;

    let app = spawn_app().await;
    for path in ["/reconciliation", "/reconciliation/summary"] {
        let anonymous = app.get_as(None, path).await;
        assert_eq!(anonymous.status(), 401, "{path}");
        assert_eq!(
            anonymous.headers()["www-authenticate"],
            "Bearer realm=\"reconcile\""
        );
        let user = app.get_as(Some(&token("u-1", Role::User)), path).await;
        assert_eq!(user.status(), 403, "{path}");
        let operator = app.get_as(Some(&token("ops", Role::Operator)), path).await;
        assert_eq!(operator.status(), 200, "{path}");
    }
}
