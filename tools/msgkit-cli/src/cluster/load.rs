//! A steady open-loop stream of orders (the rate does not drop when the system slows down),
//! each request's answer and latency recorded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::task::JoinSet;

/// One order sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: DateTime<Utc>,
    /// The HTTP status, 0 when the request failed.
    pub status: u16,
    /// The order id, for a 202.
    pub order_id: Option<uuid::Uuid>,
    pub latency: Duration,
}

/// The n-th order: mostly payable (confirmed), every 20th out of stock (rejected), every 10th
/// above the gateway's limit (cancelled, stock put back), so every path of the saga runs.
fn order_body(n: u64) -> serde_json::Value {
    let items = if n % 20 == 7 {
        json!([{"sku": "SKU-GONE", "quantity": 1}])
    } else if n % 10 == 3 {
        json!([{"sku": "SKU-LUX", "quantity": 1}])
    } else {
        let sku = ["SKU-1", "SKU-2", "SKU-3"][(n % 3) as usize];
        json!([{"sku": sku, "quantity": 1 + n % 2}])
    };
    json!({"customer_id": format!("cluster-{n}"), "items": items})
}

/// Send orders to `api` at `rate` per second for `duration`.
pub async fn run(api: String, rate: f64, duration: Duration) -> Vec<Sent> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut requests = JoinSet::new();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        pace.tick().await;
        let body = order_body(n);
        n += 1;
        let (client, api, sent) = (client.clone(), api.clone(), Arc::clone(&sent));
        requests.spawn(async move {
            let at = Utc::now();
            let began = Instant::now();
            let (status, order_id) = match client
                .post(format!("{api}/orders"))
                .json(&body)
                .send()
                .await
            {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let id = if status == 202 {
                        response
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["order_id"].as_str().and_then(|s| s.parse().ok()))
                    } else {
                        None
                    };
                    (status, id)
                }
                Err(_) => (0, None),
            };
            let record = Sent {
                at,
                status,
                order_id,
                latency: began.elapsed(),
            };
            if let Ok(mut sent) = sent.lock() {
                sent.push(record);
            }
        });
    }
    while requests.join_next().await.is_some() {}
    sent.lock().map(|s| s.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_covers_every_outcome() {
        let skus: Vec<String> = (0..40)
            .map(|n| {
                order_body(n)["items"][0]["sku"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        for sku in ["SKU-GONE", "SKU-LUX", "SKU-1", "SKU-2", "SKU-3"] {
            assert!(skus.iter().any(|s| s == sku), "{sku} in {skus:?}");
        }
    }
}
