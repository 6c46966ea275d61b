//! Twenty enabled rules of every kind over one user's stream: each raises exactly the alerts
//! planted for it (and none of its planted near misses), none twice. Each rule looks at its
//! own places (or currency, or amount), so the expected alerts can be read off the stream; all
//! twenty still evaluate every event against the same user state.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, DurationRound, Utc};
use msgkit::testing::wait_until_async;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, spawn_app};

fn rule(severity: &str, kind: Value) -> Value {
    json!({"key": "user_id", "severity": severity, "kind": kind})
}

fn condition(when: &str, severity: &str) -> Value {
    rule(severity, json!({"type": "condition", "when": when}))
}

fn sequence(first: &str, then: &str, within_s: u64, strict: bool, severity: &str) -> Value {
    let kind = json!({"type": "sequence", "first": first, "then": then,
                      "within_ms": within_s * 1000, "strict": strict});
    rule(severity, kind)
}

fn threshold(when: &str, aggregate: &str, over_s: u64, above: i64, severity: &str) -> Value {
    let kind = json!({"type": "threshold", "when": when, "aggregate": aggregate,
                      "over_ms": over_s * 1000, "above": above});
    rule(severity, kind)
}

fn absence(first: &str, then: &str, within_s: u64, severity: &str) -> Value {
    let kind = json!({"type": "absence", "first": first, "then": then,
                      "within_ms": within_s * 1000});
    rule(severity, kind)
}

/// The twenty rules as `POST /rules` takes them, by a name the expectations use.
fn rules() -> Vec<(&'static str, Value)> {
    vec![
        (
            "lima",
            condition("location == 'Lima' && amount_cents > 100000", "low"),
        ),
        ("oslo", condition("location == 'Oslo'", "medium")),
        ("big", condition("amount_cents > 900000", "high")),
        (
            "rome",
            condition("currency == 'EUR' && location == 'Rome'", "low"),
        ),
        (
            "kyiv",
            condition("location == 'Kyiv' && amount_cents < 100", "low"),
        ),
        (
            "zurich",
            condition(
                "location == 'Zurich' && currency == 'CHF' && amount_cents >= 5000",
                "low",
            ),
        ),
        (
            "cairo",
            sequence(
                "location == 'Cairo' && amount_cents > 50000",
                "b.amount_cents > a.amount_cents",
                600,
                true,
                "medium",
            ),
        ),
        (
            "paris",
            sequence(
                "location == 'Paris'",
                "b.location == 'Berlin'",
                600,
                false,
                "medium",
            ),
        ),
        (
            "tokyo",
            sequence(
                "location == 'Tokyo'",
                "b.location == 'Osaka'",
                120,
                true,
                "high",
            ),
        ),
        (
            "delhi",
            sequence(
                "location == 'Delhi'",
                "b.location == 'Mumbai'",
                600,
                true,
                "high",
            ),
        ),
        (
            "seoul",
            sequence(
                "location == 'Seoul' && amount_cents > 200000",
                "b.location == a.location && b.amount_cents > a.amount_cents",
                300,
                false,
                "low",
            ),
        ),
        (
            "accra",
            sequence(
                "location == 'Accra'",
                "b.location == 'Lagos'",
                180,
                false,
                "low",
            ),
        ),
        (
            "bern",
            threshold("location == 'Bern'", "count", 600, 2, "medium"),
        ),
        (
            "doha",
            threshold(
                "location == 'Doha'",
                "sum_amount_cents",
                600,
                100_000,
                "high",
            ),
        ),
        (
            "riga",
            threshold("location == 'Riga'", "count", 120, 1, "low"),
        ),
        (
            "usd",
            threshold(
                "currency == 'USD'",
                "sum_amount_cents",
                3600,
                50_000,
                "medium",
            ),
        ),
        (
            "4242",
            threshold("amount_cents == 4242", "count", 3600, 0, "low"),
        ),
        (
            "baku",
            threshold("location == 'Baku'", "sum_amount_cents", 300, 1000, "low"),
        ),
        (
            "hanoi",
            absence("location == 'Hanoi'", "b.location == 'Hue'", 120, "medium"),
        ),
        (
            "minsk",
            absence(
                "amount_cents > 700000 && location == 'Minsk'",
                "b.location == 'Minsk'",
                60,
                "high",
            ),
        ),
    ]
}

/// The planted stream, in event-time order: (transaction id, seconds after t0, amount,
/// currency, location), and what each near miss is for.
const STREAM: &[(&str, i64, &str, &str, &str)] = &[
    ("lima-1", 0, "1000.00", "CNY", "Lima"), // not above 1,000.00
    ("lima-2", 60, "1000.01", "CNY", "Lima"),
    ("cairo-1", 120, "600.00", "CNY", "Cairo"),
    ("dakar-1", 180, "700.00", "CNY", "Dakar"),
    ("cairo-2", 240, "600.00", "CNY", "Cairo"),
    ("dakar-2", 300, "500.00", "CNY", "Dakar"), // not more than cairo-2: ends its strict match
    ("dakar-3", 360, "900.00", "CNY", "Dakar"), // more, but not cairo-2's next event
    ("paris-1", 420, "10.00", "CNY", "Paris"),
    ("oslo-1", 480, "10.00", "CNY", "Oslo"),
    ("berlin-1", 540, "10.00", "CNY", "Berlin"), // relaxed: oslo-1 in between is fine
    ("tokyo-1", 600, "10.00", "CNY", "Tokyo"),
    ("osaka-1", 660, "10.00", "CNY", "Osaka"),
    ("tokyo-2", 720, "10.00", "CNY", "Tokyo"),
    ("osaka-2", 960, "10.00", "CNY", "Osaka"), // next, but 4 minutes on: outside 2
    ("delhi-1", 1020, "10.00", "CNY", "Delhi"),
    ("oslo-2", 1080, "10.00", "CNY", "Oslo"),
    ("mumbai-1", 1140, "10.00", "CNY", "Mumbai"), // strict: oslo-2 came in between
    ("delhi-2", 1200, "10.00", "CNY", "Delhi"),
    ("mumbai-2", 1260, "10.00", "CNY", "Mumbai"),
    ("seoul-1", 1320, "2500.00", "CNY", "Seoul"),
    ("kyiv-1", 1380, "1.00", "CNY", "Kyiv"), // not below 1.00
    ("kyiv-2", 1440, "0.99", "CNY", "Kyiv"),
    ("seoul-2", 1500, "3000.00", "CNY", "Seoul"),
    ("accra-1", 1560, "10.00", "CNY", "Accra"),
    ("lagos-1", 1800, "10.00", "CNY", "Lagos"), // 4 minutes after accra-1: outside 3
    ("accra-2", 1860, "10.00", "CNY", "Accra"),
    ("lagos-2", 1920, "10.00", "CNY", "Lagos"),
    ("bern-1", 1980, "10.00", "CNY", "Bern"),
    ("bern-2", 2040, "10.00", "CNY", "Bern"),
    ("bern-3", 2100, "10.00", "CNY", "Bern"),
    ("bern-4", 2160, "10.00", "CNY", "Bern"), // still above: one alert per crossing
    ("doha-1", 2220, "600.00", "CNY", "Doha"),
    ("doha-2", 2280, "500.00", "CNY", "Doha"),
    ("riga-1", 2340, "10.00", "CNY", "Riga"),
    ("riga-2", 2520, "10.00", "CNY", "Riga"), // riga-1 has left the 2-minute window
    ("riga-3", 2550, "10.00", "CNY", "Riga"),
    ("lyon-1", 2610, "300.00", "USD", "Lyon"),
    ("nice-1", 2670, "300.00", "USD", "Nice"),
    ("quito-1", 2730, "9500.00", "CNY", "Quito"),
    ("quito-2", 2790, "9000.00", "CNY", "Quito"), // not above 9,000.00
    ("rome-1", 2850, "50.00", "CNY", "Rome"),     // not in euros
    ("rome-2", 2910, "50.00", "EUR", "Rome"),
    ("pisa-1", 2970, "42.42", "CNY", "Pisa"),
    ("baku-1", 3030, "5.00", "CNY", "Baku"),
    ("baku-2", 3400, "6.00", "CNY", "Baku"), // baku-1 has left the 5-minute window
    ("baku-3", 3430, "5.00", "CNY", "Baku"),
    ("hanoi-1", 3490, "10.00", "CNY", "Hanoi"), // never followed from Hue
    ("minsk-1", 3550, "6000.00", "CNY", "Minsk"), // not above 7,000.00: no wait starts
    ("minsk-2", 3610, "7500.00", "CNY", "Minsk"), // not followed from Minsk within 1 minute
    ("zurich-1", 3700, "50.00", "CHF", "Zurich"),
    ("zurich-2", 3760, "49.99", "CHF", "Zurich"), // below 50.00
    ("zurich-3", 3820, "60.00", "EUR", "Zurich"), // not in francs
];

/// The planted alerts: rule name and the transactions it matched, in event-time order.
const EXPECTED: &[(&str, &[&str])] = &[
    ("lima", &["lima-2"]),
    ("cairo", &["cairo-1", "dakar-1"]),
    ("oslo", &["oslo-1"]),
    ("paris", &["paris-1", "berlin-1"]),
    ("tokyo", &["tokyo-1", "osaka-1"]),
    ("oslo", &["oslo-2"]),
    ("delhi", &["delhi-2", "mumbai-2"]),
    ("kyiv", &["kyiv-2"]),
    ("seoul", &["seoul-1", "seoul-2"]),
    ("accra", &["accra-2", "lagos-2"]),
    ("bern", &["bern-1", "bern-2", "bern-3"]),
    ("doha", &["doha-1", "doha-2"]),
    ("riga", &["riga-2", "riga-3"]),
    ("usd", &["lyon-1", "nice-1"]),
    ("big", &["quito-1"]),
    ("rome", &["rome-2"]),
    ("4242", &["pisa-1"]),
    ("baku", &["baku-2", "baku-3"]),
    ("hanoi", &["hanoi-1"]),
    ("minsk", &["minsk-2"]),
    ("zurich", &["zurich-1"]),
];

#[tokio::test]
async fn twenty_enabled_rules_over_one_stream_each_raise_exactly_their_own_alerts() {
    let app = spawn_app().await;
    // Exactly these twenty rules are enabled: the default one is disabled first.
    assert_eq!(
        app.send(Method::DELETE, "/rules/1", None).await.status(),
        200
    );
    let mut ids: BTreeMap<i64, &str> = BTreeMap::new();
    for (name, body) in rules() {
        let created = app.send(Method::POST, "/rules", Some(&body)).await;
        assert_eq!(created.status(), 201, "{name}");
        let created: Value = created.json().await.unwrap();
        ids.insert(created["id"].as_i64().unwrap(), name);
    }
    assert_eq!(ids.len(), 20);

    // A day ago: the absence rules' timers are due as soon as they are set. Events are posted
    // one at a time, each handled before the next, so that none arrives out of order (the
    // consumer handles several deliveries at once).
    let t0: DateTime<Utc> = (Utc::now() - Duration::days(1))
        .duration_trunc(Duration::seconds(1))
        .unwrap();
    for (count, (id, offset, amount, currency, location)) in (1..).zip(STREAM) {
        let body = json!({
            "transaction_id": id, "user_id": "u-1", "amount": amount, "currency": currency,
            "location": location, "occurred_at": (t0 + Duration::seconds(*offset)).to_rfc3339(),
        });
        assert_eq!(app.post_transaction(&body).await.status(), 202, "{id}");
        app.wait_until_handled(count).await;
    }

    let expected: BTreeSet<(String, Vec<String>)> = EXPECTED
        .iter()
        .map(|(rule, events)| {
            let events = events.iter().map(|&id| id.to_owned()).collect();
            ((*rule).to_owned(), events)
        })
        .collect();
    assert_eq!(
        expected.len(),
        EXPECTED.len(),
        "the expectations are distinct"
    );
    // The absence alerts come from timers, after the last event: wait for the full count.
    let alerts = wait_until_async("every planted alert", DEADLINE, || async {
        let alerts = app.alerts_of("u-1").await;
        (alerts.len() >= EXPECTED.len()).then_some(alerts)
    })
    .await;
    let raised: Vec<(String, Vec<String>)> = alerts
        .iter()
        .map(|alert| {
            let rule = ids[&alert["rule_id"].as_i64().unwrap()].to_owned();
            let events = serde_json::from_value(alert["transaction_ids"].clone()).unwrap();
            (rule, events)
        })
        .collect();
    let distinct: BTreeSet<(String, Vec<String>)> = raised.iter().cloned().collect();
    assert_eq!(distinct.len(), raised.len(), "none twice: {raised:?}");
    assert_eq!(distinct, expected);
    let rules_alerting: BTreeSet<&String> = distinct.iter().map(|(rule, _)| rule).collect();
    assert_eq!(rules_alerting.len(), 20, "every rule raised its own");

    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM msgkit_timers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(pending, 0, "every absence wait has been decided");
    let count = i64::try_from(EXPECTED.len()).unwrap();
    assert_eq!(
        app.outbox_count("risk.alert").await,
        count,
        "each published once"
    );
    assert_eq!(app.alerts_of("u-1").await.len(), EXPECTED.len());
}
