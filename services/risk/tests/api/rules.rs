//! `GET /rules`: the rules as stored.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_default_rule_is_installed_and_listed() {
    let app = spawn_app().await;
    let rules: Vec<Value> = app
        .client
        .get(format!("{}/rules", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    assert_eq!(
        (rule["id"].as_i64(), rule["version"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["severity"], "high");
    assert_eq!(rule["kind"]["type"], "sequence");
    assert_eq!(rule["kind"]["within_ms"], 300_000);
}
