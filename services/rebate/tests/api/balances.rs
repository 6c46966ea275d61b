//! Balances: payments and refunds against a sum computed independently.

use std::collections::HashMap;

use chrono::{Duration, TimeZone, Utc};

use crate::helpers::{payment, refund_of, spawn_app, sum_of_lines};

/// The seeded tiers, written out again: (threshold, rate).
const TIERS: [(i64, i64); 3] = [(0, 100), (100_000, 150), (500_000, 200)];

fn expected_rate(spend_before: i64) -> i64 {
    TIERS
        .iter()
        .rev()
        .find(|(threshold, _)| spend_before >= *threshold)
        .map(|(_, rate)| *rate)
        .unwrap()
}

#[tokio::test]
async fn balances_after_payments_and_refunds_equal_an_independent_sum() {
    let app = spawn_app().await;
    let customers = ["c-ada", "c-bob", "c-cyd"];
    let start = Utc.with_ymd_and_hms(2026, 10, 20, 9, 0, 0).unwrap();
    // Independent bookkeeping: (customer, month) spend, customer balance and line count.
    let mut spend: HashMap<(String, u32), i64> = HashMap::new();
    let mut balance: HashMap<String, i64> = HashMap::new();
    let mut lines: HashMap<String, i64> = HashMap::new();
    let mut paid: Vec<(contracts::PaymentSucceeded, i64, u32)> = Vec::new();
    for i in 0..45i64 {
        let customer = customers[(i % 3) as usize];
        // Amounts from 0.37 to a few thousand, crossing the tiers within October and again
        // from 0 in November (a day apart each, so some fall in each month).
        let amount = 37 + (i * 7919) % 350_000;
        let at = start + Duration::days(i / 2);
        let month = chrono::Datelike::month(&at);
        let before = *spend.get(&(customer.to_owned(), month)).unwrap_or(&0);
        let rebate = amount * expected_rate(before) / 10_000; // positive: division floors
        *spend.entry((customer.to_owned(), month)).or_default() += amount;
        *balance.entry(customer.to_owned()).or_default() += rebate;
        *lines.entry(customer.to_owned()).or_default() += 1;
        let payment = payment(customer, amount, at);
        app.events.paid(&payment).await;
        paid.push((payment, rebate, month));
        // Every fourth payment is refunded one payment later: later payments of its month
        // are tiered on the spend without it.
        if i % 4 == 1 {
            let (refunded, rebate, month) = paid[(i - 1) as usize].clone();
            let customer = refunded.customer_id.clone();
            *spend.get_mut(&(customer.clone(), month)).unwrap() -= refunded.amount_cents;
            *balance.get_mut(&customer).unwrap() -= rebate;
            *lines.get_mut(&customer).unwrap() += 1;
            app.events
                .refunded(&refund_of(&refunded, at + Duration::hours(1)))
                .await;
        }
    }
    for customer in customers {
        let body = app.rebates_at(customer, lines[customer]).await;
        assert_eq!(body["version"].as_i64(), Some(lines[customer]), "{body}");
        assert_eq!(
            body["balance_cents"].as_i64(),
            Some(balance[customer]),
            "{customer}: {body}"
        );
        assert_eq!(sum_of_lines(&body), balance[customer], "{customer}'s lines");
    }
}

#[tokio::test]
async fn a_refund_reverses_its_payments_line_exactly() {
    let app = spawn_app().await;
    let at = Utc.with_ymd_and_hms(2026, 11, 3, 10, 0, 0).unwrap();
    let payment = payment("c-refunded", 12_345, at);
    app.events.paid(&payment).await;
    app.events
        .refunded(&refund_of(&payment, at + Duration::days(2)))
        .await;
    let body = app.rebates_at("c-refunded", 2).await;
    assert_eq!(body["balance_cents"], 0, "{body}");
    let lines = body["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    // Newest first: the refund, then the payment.
    let (refund, paid) = (&lines[0], &lines[1]);
    assert_eq!(paid["kind"], "payment");
    assert_eq!(paid["rebate_cents"], 123, "1 % of 123.45, rounded down");
    assert_eq!(paid["rate_bp"], 100);
    assert_eq!(paid["amount_cents"], 12_345);
    assert_eq!(refund["kind"], "refund");
    assert_eq!(refund["rebate_cents"], -123);
    assert_eq!(refund["rate_bp"], 100);
    assert_eq!(refund["amount_cents"], -12_345);
    assert_eq!(refund["order_id"], paid["order_id"]);
}

#[tokio::test]
async fn a_duplicated_event_changes_nothing() {
    let app = spawn_app().await;
    let at = Utc.with_ymd_and_hms(2026, 11, 3, 10, 0, 0).unwrap();
    let first = payment("c-dup", 50_000, at);
    let message = app.events.paid(&first).await;
    let body = app.rebates_at("c-dup", 1).await;
    assert_eq!(body["balance_cents"], 500);
    // The same message again (the relay republishing a row it could not mark), and another
    // message about the same payment.
    app.events.publish_message(&message).await;
    app.events.paid(&first).await;
    let refund = refund_of(&first, at + Duration::hours(1));
    let refund_message = app.events.refunded(&refund).await;
    app.events.publish_message(&refund_message).await;
    app.events.refunded(&refund).await;
    app.barrier().await;
    let (_, body) = app.get_rebates("c-dup").await;
    assert_eq!(
        body["version"], 2,
        "one payment line and one refund line: {body}"
    );
    assert_eq!(body["balance_cents"], 0, "{body}");
    // Nor the month's spend: the next payment is tiered on 0 again.
    let next = payment("c-dup", 100_000, at + Duration::hours(2));
    app.events.paid(&next).await;
    let body = app.rebates_at("c-dup", 3).await;
    assert_eq!(body["lines"][0]["rate_bp"], 100, "{body}");
    assert_eq!(body["balance_cents"], 1_000, "{body}");
}

#[tokio::test]
async fn a_refund_before_its_payment_leaves_the_order_earning_nothing() {
    let app = spawn_app().await;
    let at = Utc.with_ymd_and_hms(2026, 11, 3, 10, 0, 0).unwrap();
    let payment = payment("c-early-refund", 80_000, at);
    app.events
        .refunded(&refund_of(&payment, at + Duration::hours(1)))
        .await;
    let body = app.rebates_at("c-early-refund", 1).await;
    assert_eq!(body["balance_cents"], 0, "{body}");
    assert_eq!(body["lines"][0]["rebate_cents"], 0, "{body}");
    app.events.paid(&payment).await;
    let body = app.rebates_at("c-early-refund", 2).await;
    assert_eq!(body["balance_cents"], 0, "{body}");
    let payment_line = &body["lines"].as_array().unwrap()[1];
    assert_eq!(payment_line["kind"], "payment", "{body}");
    assert_eq!(payment_line["rebate_cents"], 0, "{body}");
    // And it did not count as spend: a next payment that month is at the base rate.
    app.events
        .paid(&crate::helpers::payment(
            "c-early-refund",
            60_000,
            at + Duration::hours(2),
        ))
        .await;
    let body = app.rebates_at("c-early-refund", 3).await;
    assert_eq!(body["balance_cents"], 600, "{body}");
}

#[tokio::test]
async fn a_customer_with_nothing_has_a_zero_balance_and_a_bad_id_is_refused() {
    let app = spawn_app().await;
    let (status, body) = app.get_rebates("c-nobody").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["customer"], "c-nobody");
    assert_eq!(body["balance_cents"], 0);
    assert_eq!(body["version"], 0);
    assert_eq!(body["lines"].as_array().map(Vec::len), Some(0));
    let (status, body) = app.get_rebates(&"x".repeat(65)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "customer", "{body}");
}

#[tokio::test]
async fn a_customer_reads_only_their_own_rebates_and_an_operator_anyones() {
    use msgkit::auth::Role;

    use crate::helpers::token;

    let app = spawn_app().await;
    let get = |bearer: Option<String>, customer: &'static str| {
        let app = &app;
        async move {
            let mut request = app
                .client
                .get(format!("{}/rebates/{customer}", app.address));
            if let Some(bearer) = bearer {
                request = request.bearer_auth(bearer);
            }
            request.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(get(Some(token("c-1", Role::User)), "c-1").await, 200);
    assert_eq!(get(Some(token("c-1", Role::User)), "c-2").await, 403);
    assert_eq!(get(Some(token("ops", Role::Operator)), "c-2").await, 200);
    assert_eq!(get(None, "c-1").await, 401);
}
