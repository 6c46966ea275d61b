//! Open-loop order load: a fixed rate for a fixed time, whatever the system does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

/// One order the load sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The order id when it got a 202.
    pub order_id: Option<String>,
    /// The HTTP status, or 0 when the request failed.
    pub status: u16,
    pub poison: bool,
}

/// A small deterministic generator: the same scenario sends the same mix.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What the n-th order contains: mostly payable orders, some out of stock (rejected), some
/// declined (cancelled), and every `poison_every`-th one poison for inventory.
fn order_body(n: u64, poison_every: u64, mix: &mut Mix) -> (serde_json::Value, bool) {
    let poison = poison_every > 0 && n % poison_every == poison_every - 1;
    let customer = if poison {
        format!("chaos-poison-{n}")
    } else {
        format!("chaos-{n}")
    };
    let roll = mix.next() % 100;
    let items = match roll {
        0..=4 => json!([{"sku": "SKU-GONE", "quantity": 1}]),
        5..=12 => json!([{"sku": "SKU-LUX", "quantity": 1}]),
        _ => {
            let skus = ["SKU-1", "SKU-2", "SKU-3"];
            let sku = skus[(mix.next() % 3) as usize];
            json!([{"sku": sku, "quantity": 1 + mix.next() % 3}])
        }
    };
    (json!({"customer_id": customer, "items": items}), poison)
}

/// Send orders to `api` at `rate` per second for `duration`.
pub async fn run(api: String, rate: f64, duration: Duration, poison_every: u64) -> Vec<Sent> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut requests = JoinSet::new();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut mix = Mix(0x9E37_79B9_7F4A_7C15);
    let mut n = 0u64;
    while started.elapsed() < duration {
        pace.tick().await;
        let (body, poison) = order_body(n, poison_every, &mut mix);
        n += 1;
        let (client, api, sent) = (client.clone(), api.clone(), Arc::clone(&sent));
        requests.spawn(async move {
            let result = client
                .post(format!("{api}/orders"))
                .json(&body)
                .send()
                .await;
            let record = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let order_id = if status == 202 {
                        response
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["order_id"].as_str().map(str::to_owned))
                    } else {
                        None
                    };
                    Sent {
                        order_id,
                        status,
                        poison,
                    }
                }
                Err(_) => Sent {
                    order_id: None,
                    status: 0,
                    poison,
                },
            };
            if let Ok(mut sent) = sent.lock() {
                sent.push(record);
            }
        });
    }
    while requests.join_next().await.is_some() {}
    sent.lock().map(|s| s.clone()).unwrap_or_default()
}
