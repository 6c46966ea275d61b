//! Who may do what: changing and reading rules, issuing tokens and the reconciliation section
//! need an operator's token; alerts need a token and show a user only their own; recording a
//! transaction needs none, and is limited per client when configured.

use chrono::{TimeDelta, Utc};
use msgkit::auth::{Role, TokenKey};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    TEST_SECRET, default_rule_json, spawn_app, spawn_app_with_config, token, transaction,
};

#[tokio::test]
async fn rules_tokens_and_reconciliation_need_an_operators_token() {
    let app = spawn_app().await;
    let user = token("u-1", Role::User);
    let rule = default_rule_json();
    let requests: [(Method, &str, Option<&Value>); 8] = [
        (Method::GET, "/rules", None),
        (Method::POST, "/rules", Some(&rule)),
        (Method::PUT, "/rules/1", Some(&rule)),
        (Method::DELETE, "/rules/1", None),
        (Method::POST, "/rules/1/enable", None),
        (Method::POST, "/rules/1/disable", None),
        (Method::GET, "/reconciliation/summary", None),
        (Method::POST, "/tokens", None),
    ];
    for (method, path, body) in requests {
        let anonymous = app.send_as(None, method.clone(), path, body).await;
        assert_eq!(anonymous.status(), 401, "{method} {path} without a token");
        assert_eq!(
            anonymous.headers()["www-authenticate"],
            "Bearer realm=\"risk\"",
            "{method} {path}"
        );
        let as_user = app.send_as(Some(&user), method.clone(), path, body).await;
        assert_eq!(as_user.status(), 403, "{method} {path} with a user's token");
        let problem: Value = as_user.json().await.unwrap();
        assert_eq!(problem["error"], "forbidden");
    }
    // Nothing changed: the default rule is still the only one, enabled, version 1.
    let rules: Value = app
        .send(Method::GET, "/rules", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules}");
    assert_eq!(rules[0]["enabled"], true);
    // An operator may.
    let created = app.send(Method::POST, "/rules", Some(&rule)).await;
    assert_eq!(created.status(), 201);
}

#[tokio::test]
async fn a_user_reads_only_their_own_alerts_and_an_operator_everyones() {
    let app = spawn_app().await;
    let at = Utc::now() - TimeDelta::minutes(10);
    // The default rule: a large amount, then another city within five minutes, for two users.
    for (user, prefix) in [("u-1", "a"), ("u-2", "b")] {
        let mut first = transaction(&format!("{prefix}-1"), "12000.00", "Shanghai", at);
        let mut second = transaction(
            &format!("{prefix}-2"),
            "50.00",
            "Beijing",
            at + TimeDelta::minutes(3),
        );
        first["user_id"] = json!(user);
        second["user_id"] = json!(user);
        app.post_all(&[&first, &second]).await;
        app.wait_for_alerts(user).await;
    }
    let alerts_as = |token: Option<String>, query: &'static str| {
        let app = &app;
        async move {
            app.send_as(
                token.as_deref(),
                Method::GET,
                &format!("/alerts{query}"),
                None,
            )
            .await
        }
    };
    let users_of = |alerts: &Value| -> Vec<String> {
        let mut users: Vec<String> = alerts
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["user_id"].as_str().unwrap().to_owned())
            .collect();
        users.sort();
        users.dedup();
        users
    };

    let own = alerts_as(Some(token("u-1", Role::User)), "").await;
    assert_eq!(own.status(), 200);
    assert_eq!(users_of(&own.json().await.unwrap()), ["u-1"]);
    let another = alerts_as(Some(token("u-1", Role::User)), "?user=u-2").await;
    assert_eq!(another.status(), 403);
    let everyone = alerts_as(Some(token("ops", Role::Operator)), "").await;
    assert_eq!(users_of(&everyone.json().await.unwrap()), ["u-1", "u-2"]);
    let chosen = alerts_as(Some(token("ops", Role::Operator)), "?user=u-2").await;
    assert_eq!(users_of(&chosen.json().await.unwrap()), ["u-2"]);
    assert_eq!(alerts_as(None, "").await.status(), 401);
}

#[tokio::test]
async fn an_operator_issues_a_users_token_which_opens_only_that_users_alerts() {
    let app = spawn_app().await;
    let issued = app
        .send(
            Method::POST,
            "/tokens",
            Some(&json!({"subject": "u-7", "ttl_secs": 600})),
        )
        .await;
    assert_eq!(issued.status(), 201);
    assert_eq!(issued.headers()["cache-control"], "no-store");
    let body: Value = issued.json().await.unwrap();
    assert_eq!(body["subject"], "u-7");
    assert_eq!(body["role"], "user");
    let token = body["token"].as_str().unwrap().to_owned();
    // It is a token of the service's secret, for that user, valid about ten minutes.
    let claims = TokenKey::new(TEST_SECRET)
        .unwrap()
        .verify(&token, Utc::now())
        .unwrap();
    assert_eq!((claims.sub.as_str(), claims.role), ("u-7", Role::User));
    let left = claims.exp - Utc::now().timestamp();
    assert!((590..=600).contains(&left), "{left} s left");
    let own = app
        .send_as(Some(&token), Method::GET, "/alerts?user=u-7", None)
        .await;
    assert_eq!(own.status(), 200);
    let other = app
        .send_as(Some(&token), Method::GET, "/alerts?user=u-1", None)
        .await;
    assert_eq!(other.status(), 403);

    for (body, field) in [
        (json!({"subject": "u-7", "ttl_secs": 7200}), "ttl_secs"),
        (json!({"subject": " "}), "subject"),
        (json!({"subject": "u-7", "role": "root"}), "role"),
    ] {
        let refused = app.send(Method::POST, "/tokens", Some(&body)).await;
        assert_eq!(refused.status(), 422, "{body}");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["field"], field, "{problem}");
    }
}

#[tokio::test]
async fn recording_transactions_is_limited_per_client_when_configured() {
    let app = spawn_app_with_config(&[
        ("RISK_RATE_LIMIT_PER_SEC", "0.1"),
        ("RISK_RATE_LIMIT_BURST", "1"),
    ])
    .await;
    let at = Utc::now();
    let first = app
        .post_transaction(&transaction("r-1", "10.00", "Shanghai", at))
        .await;
    assert_eq!(first.status(), 202);
    let second = app
        .post_transaction(&transaction("r-2", "10.00", "Shanghai", at))
        .await;
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let problem: Value = second.json().await.unwrap();
    assert_eq!(problem["error"], "rate_limited");
}
