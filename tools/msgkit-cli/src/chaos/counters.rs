//! Counters of the services' `/metrics`, added up across their restarts (a restarted process
//! starts from zero, as Prometheus' `increase()` assumes).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Totals per series, e.g. `msgkit_consumed_total{queue="inventory",outcome="retry"}`.
#[derive(Debug, Default)]
pub struct Counters {
    last: BTreeMap<(String, String), f64>,
    total: BTreeMap<String, f64>,
}

const TRACKED: [&str; 2] = ["msgkit_consumed_total", "msgkit_redelivered_total"];

impl Counters {
    fn observe(&mut self, service: &str, exposition: &str) {
        for line in exposition.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if !TRACKED.iter().any(|name| series.starts_with(name)) {
                continue;
            }
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let key = (service.to_owned(), series.to_owned());
            let previous = self.last.insert(key, value).unwrap_or(0.0);
            let increase = if value >= previous {
                value - previous
            } else {
                value
            };
            *self.total.entry(series.to_owned()).or_default() += increase;
        }
    }

    /// The total of every series whose text contains all of `parts`.
    pub fn sum(&self, parts: &[&str]) -> f64 {
        self.total
            .iter()
            .filter(|(series, _)| parts.iter().all(|p| series.contains(p)))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Scrape `services` (name, base URL) every half second until `stop`.
pub async fn poll(
    services: Vec<(String, String)>,
    counters: Arc<Mutex<Counters>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    loop {
        scrape_all(&client, &services, &counters).await;
        let stopped = tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => false,
            changed = stop.changed() => changed.is_err() || *stop.borrow(),
        };
        if stopped {
            scrape_all(&client, &services, &counters).await;
            return;
        }
    }
}

async fn scrape_all(
    client: &reqwest::Client,
    services: &[(String, String)],
    counters: &Mutex<Counters>,
) {
    for (name, base) in services {
        let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        if let Ok(mut counters) = counters.lock() {
            counters.observe(name, &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_does_not_lose_or_double_count() {
        let mut counters = Counters::default();
        counters.observe(
            "inventory",
            "msgkit_consumed_total{queue=\"inventory\",outcome=\"ack\"} 5",
        );
        counters.observe(
            "inventory",
            "msgkit_consumed_total{queue=\"inventory\",outcome=\"ack\"} 8",
        );
        // The process restarted: its counter starts again from zero.
        counters.observe(
            "inventory",
            "msgkit_consumed_total{queue=\"inventory\",outcome=\"ack\"} 2",
        );
        assert_eq!(counters.sum(&["outcome=\"ack\""]), 10.0);
    }
}
