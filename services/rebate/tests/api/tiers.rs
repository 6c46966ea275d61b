//! Tiers: the rate for the month's spend before a payment, under the version in force then.

use chrono::{Duration, TimeZone, Utc};

use crate::helpers::{payment, spawn_app};

/// The rate of each line, oldest first.
fn rates(body: &serde_json::Value) -> Vec<(i64, i64)> {
    let mut lines: Vec<(i64, i64)> = body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["rate_bp"].as_i64().unwrap(),
                l["rebate_cents"].as_i64().unwrap(),
            )
        })
        .collect();
    lines.reverse();
    lines
}

#[tokio::test]
async fn a_payment_gets_the_tier_its_months_spend_had_reached_before_it() {
    let app = spawn_app().await;
    let at = Utc.with_ymd_and_hms(2026, 10, 5, 12, 0, 0).unwrap();
    for (i, cents) in [60_000, 50_000, 1_000, 400_000, 100]
        .into_iter()
        .enumerate()
    {
        app.events
            .paid(&payment("c-tiers", cents, at + Duration::hours(i as i64)))
            .await;
    }
    // The next month starts from 0 again.
    app.events
        .paid(&payment(
            "c-tiers",
            10_000,
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        ))
        .await;
    let body = app.rebates_at("c-tiers", 6).await;
    assert_eq!(
        rates(&body),
        vec![
            (100, 600),   // spend before: 0
            (100, 500),   // 600.00: below 1,000.00
            (150, 15),    // 1,100.00: 1.5 %
            (150, 6_000), // 1,110.00: still 1.5 % (it is the spend *before* that counts)
            (200, 2),     // 5,110.00: 2 %
            (100, 100),   // November
        ]
    );
    assert_eq!(body["balance_cents"], 600 + 500 + 15 + 6_000 + 2 + 100);
}

#[tokio::test]
async fn a_new_version_of_the_tiers_applies_from_its_start_and_the_past_is_fixed() {
    let app = spawn_app().await;
    let starts = Utc::now() + Duration::hours(1);
    sqlx::query(
        "INSERT INTO rebate_tiers (effective_from, min_monthly_spend_cents, rate_bp)
         VALUES ($1, 0, 300), ($1, 1000000, 500)",
    )
    .bind(starts)
    .execute(&app.pool)
    .await
    .unwrap();
    let edit = sqlx::query("UPDATE rebate_tiers SET rate_bp = 999 WHERE rate_bp = 100")
        .execute(&app.pool)
        .await;
    assert!(edit.is_err(), "a version in force cannot be edited");
    let backdated = sqlx::query(
        "INSERT INTO rebate_tiers (effective_from, min_monthly_spend_cents, rate_bp)
         VALUES (now() - interval '1 day', 0, 700)",
    )
    .execute(&app.pool)
    .await;
    assert!(backdated.is_err(), "a version cannot start in the past");
    app.events
        .paid(&payment(
            "c-versions",
            10_000,
            starts - Duration::minutes(1),
        ))
        .await;
    app.events
        .paid(&payment("c-versions", 10_000, starts))
        .await;
    let body = app.rebates_at("c-versions", 2).await;
    assert_eq!(rates(&body), vec![(100, 100), (300, 300)]);
}
