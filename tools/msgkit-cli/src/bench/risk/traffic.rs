//! What the risk stage sends: background transactions that rarely match a rule, and planted
//! pairs (over 10,000.00 in Shanghai, then 50.00 in Beijing) that the default rule must alert
//! on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::Utc;
use serde_json::json;

/// Users the background traffic spreads over.
const USERS: u64 = 5_000;
const CITIES: [&str; 5] = ["Shanghai", "Beijing", "Shenzhen", "Hangzhou", "Chengdu"];

/// A cheap source of variety (xorshift): which user, amount and city.
#[derive(Debug)]
pub struct Variety(AtomicU64);

impl Default for Variety {
    fn default() -> Self {
        Self(AtomicU64::new(0x9E37_79B9_7F4A_7C15))
    }
}

impl Variety {
    fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Racing clients may draw the same number: variety, not uniqueness, is what counts.
        self.0.store(x, Ordering::Relaxed);
        x
    }
}

/// A background transaction: up to 900.00, one of five cities, occurring now.
pub fn background(variety: &Variety) -> serde_json::Value {
    let draw = variety.next();
    let cents = draw % 90_000;
    json!({
        "transaction_id": uuid::Uuid::new_v4().to_string(),
        "user_id": format!("user-{}", (draw >> 20) % USERS),
        "amount": format!("{}.{:02}", cents / 100, cents % 100),
        "currency": "CNY",
        "location": CITIES[usize::try_from((draw >> 40) % 5).unwrap_or(0)],
        "occurred_at": Utc::now().to_rfc3339(),
    })
}

/// What every planted user's id starts with.
pub const PLANTED_PREFIX: &str = "plant-";

/// The planted pair's user.
pub fn planted_user(k: usize) -> String {
    format!("{PLANTED_PREFIX}{k}")
}

/// One transaction of a planted pair: the first (12,000.00 in Shanghai) or the second
/// (50.00 in Beijing), occurring now.
pub fn planted(k: usize, second: bool) -> serde_json::Value {
    let user = planted_user(k);
    let (suffix, amount, city) = if second {
        ("b", "50.00", "Beijing")
    } else {
        ("a", "12000.00", "Shanghai")
    };
    json!({
        "transaction_id": format!("{user}-{suffix}"),
        "user_id": user,
        "amount": amount,
        "currency": "CNY",
        "location": city,
        "occurred_at": Utc::now().to_rfc3339(),
    })
}

/// `POST /transactions`; whether it was recorded (202) and when the answer came.
pub async fn post(
    client: &reqwest::Client,
    api: &str,
    body: &serde_json::Value,
) -> Option<Instant> {
    let response = client
        .post(format!("{api}/transactions"))
        .json(body)
        .send()
        .await
        .ok()?;
    let returned = Instant::now();
    (response.status() == 202).then_some(returned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_amounts_stay_below_the_default_rules_threshold() {
        let variety = Variety::default();
        for _ in 0..1_000 {
            let body = background(&variety);
            let amount = body["amount"].as_str().unwrap_or_default();
            let (units, cents) = amount.split_once('.').unwrap_or_default();
            assert_eq!(cents.len(), 2, "{amount}");
            assert!(units.parse::<u64>().unwrap_or(u64::MAX) < 1_000, "{amount}");
        }
    }
}
