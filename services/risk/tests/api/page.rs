//! The page at `/`: served with a policy that lets only itself run, and used in headless
//! Chromium as an operator would (`scripts/ui-deps.sh` installs Chromium and playwright-core).

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use msgkit::auth::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{spawn_app, token, transaction};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn the_page_is_served_at_the_root_with_a_policy_that_allows_only_itself() {
    let app = spawn_app().await;
    let response = app.send(Method::GET, "/", None).await;
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("x-content-type-options"), "nosniff");
    let policy = header("content-security-policy");
    assert_eq!(
        policy,
        risk::http::content_security_policy(risk::http::PAGE)
    );
    assert!(
        policy.starts_with("default-src 'none'; script-src 'sha256-"),
        "{policy}"
    );
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
    let body = response.text().await.unwrap();
    assert!(body.contains("<title>Risk alerts"), "the page itself");
}

#[tokio::test]
async fn listed_rules_carry_the_alerts_raised_under_each_version() {
    let app = spawn_app().await;
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    let condition = json!({
        "key": "user_id",
        "kind": {"type": "condition", "when": "amount_cents > 500000"},
        "severity": "medium",
    });
    let created = app.send(Method::POST, "/rules", Some(&condition)).await;
    assert_eq!(created.status(), 201);
    for (id, amount) in [("t-1", "6000.00"), ("t-2", "7000.00")] {
        let body = transaction(id, amount, "Shanghai", at);
        assert_eq!(app.post_transaction(&body).await.status(), 202);
    }
    app.wait_until_handled(2).await;
    let edited = app.send(Method::PUT, "/rules/2", Some(&condition)).await;
    assert_eq!(edited.status(), 200);
    let body = transaction(
        "t-3",
        "8000.00",
        "Shanghai",
        at + chrono::Duration::minutes(1),
    );
    assert_eq!(app.post_transaction(&body).await.status(), 202);
    app.wait_until_handled(3).await;

    let rules: Vec<Value> = app
        .send(Method::GET, "/rules", None)
        .await
        .json()
        .await
        .unwrap();
    let counts: Vec<(i64, i64, i64)> = rules
        .iter()
        .map(|rule| {
            (
                rule["id"].as_i64().unwrap(),
                rule["version"].as_i64().unwrap(),
                rule["alerts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [(1, 1, 0), (2, 1, 2), (2, 2, 1)], "{rules:?}");
    assert_eq!(
        rules[1]["kind"]["when"], "amount_cents > 500000",
        "the rule itself"
    );
}

#[tokio::test]
async fn an_operator_writes_a_rule_in_the_page_and_sees_its_alerts_arrive_live() {
    let app = spawn_app().await;
    let token = token("operator", Role::Operator);

    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"));
    std::fs::create_dir_all(target.join("ui")).unwrap();
    let screenshot = target.join("ui/risk-page.png");
    let error_screenshot = target.join("ui/risk-page-rule-error.png");
    for file in [&screenshot, &error_screenshot] {
        let _ = std::fs::remove_file(file);
    }
    let output = tokio::process::Command::new("node")
        .arg(workspace().join("tools/ui-screenshot/risk-page.mjs"))
        .env("PAGE_URL", &app.address)
        .env("TOKEN", &token)
        .env("OUT", &screenshot)
        .env("ERROR_OUT", &error_screenshot)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run node ({e}); run scripts/ui-deps.sh"));
    if !output.status.success() {
        // Whether the service decided (stored alerts, consumer outcomes) tells a page bug
        // from an engine one.
        let exposition = msgkit::testing::scrape(&app.client, &app.address).await;
        let consumed: Vec<&str> = exposition
            .lines()
            .filter(|line| {
                line.starts_with("msgkit_consumed_total") || line.starts_with("msgkit_late_events")
            })
            .collect();
        let stored: Vec<Value> = app
            .send(Method::GET, "/alerts", None)
            .await
            .json()
            .await
            .unwrap_or_default();
        panic!(
            "the browser check failed (run scripts/ui-deps.sh if Chromium or playwright-core is missing; \
             the page as it was: {}):\n{}\n{}\nalerts stored: {stored:?}\nconsumed: {consumed:#?}",
            target.join("ui/risk-page.failed.png").display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    for file in [&screenshot, &error_screenshot] {
        let png = std::fs::read(file).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{file:?} is a PNG");
        assert!(
            png.len() > 10_000,
            "{file:?} has content ({} bytes)",
            png.len()
        );
    }

    // What the page showed is what the service stored: the rule it created, and the alerts.
    let rules: Vec<Value> = app
        .send(Method::GET, "/rules", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        rules.len(),
        3,
        "the default rule, and one created then edited (the invalid one refused): {rules:?}"
    );
    assert_eq!(rules[1]["kind"]["when"], "amount_cents > 500000");
    assert_eq!(rules[1]["severity"], "high");
    assert_eq!(
        (rules[2]["id"].as_i64(), rules[2]["version"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(rules[2]["kind"]["when"], "amount_cents > 700000");
    assert_eq!(rules[2]["enabled"], true, "disabled, then enabled again");
    assert_eq!(app.alerts_of("u-1").await.len(), 2);
    assert_eq!(app.alerts_of("u-2").await.len(), 1);
    assert_eq!(
        app.alerts_of("u-3").await.len(),
        1,
        "raised while the page was away"
    );

    if std::env::var("MSGKIT_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        for file in [&screenshot, &error_screenshot] {
            let name = file.file_name().unwrap();
            std::fs::copy(file, workspace().join("docs/images").join(name)).unwrap();
        }
    }
}
