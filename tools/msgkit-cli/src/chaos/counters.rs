//! Counters of the services' `/metrics`, added up across their restarts (a restarted process
//! starts from zero, as Prometheus' `increase()` assumes), with a sample of every service's
//! totals at each scrape: the timeline's throughput, and what happened around each fault.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Totals per (service, series) at one moment.
pub type Sample = BTreeMap<(String, String), f64>;

/// Totals per series, e.g. `msgkit_consumed_total{queue="inventory",outcome="retry"}`.
#[derive(Debug, Default)]
pub struct Counters {
    last: BTreeMap<(String, String), f64>,
    total: BTreeMap<String, f64>,
    /// Totals per (service, series), the service being the replica's name without `-<n>`.
    by_service: Sample,
    /// After each round of scrapes: seconds since the run started, and `by_service` then.
    pub samples: Vec<(f64, Sample)>,
}

const TRACKED: [&str; 3] = [
    "msgkit_consumed_total",
    "msgkit_redelivered_total",
    "msgkit_broker_reconnects_total",
];

/// The acknowledged-message series of `msgkit_consumed_total`.
pub const ACKED: [&str; 2] = ["msgkit_consumed_total", "outcome=\"ack\""];

impl Counters {
    fn observe(&mut self, replica: &str, service: &str, exposition: &str) {
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
            let key = (replica.to_owned(), series.to_owned());
            let previous = self.last.insert(key, value).unwrap_or(0.0);
            let increase = if value >= previous {
                value - previous
            } else {
                value
            };
            *self.total.entry(series.to_owned()).or_default() += increase;
            *self
                .by_service
                .entry((service.to_owned(), series.to_owned()))
                .or_default() += increase;
        }
    }

    /// `service`'s total of the series containing all of `parts`, in a sample.
    pub fn in_sample(sample: &Sample, service: Option<&str>, parts: &[&str]) -> f64 {
        sample
            .iter()
            .filter(|((s, series), _)| {
                service.is_none_or(|name| s == name) && parts.iter().all(|p| series.contains(p))
            })
            .map(|(_, v)| v)
            .sum()
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

/// Scrape `services` (replica name, metrics URL) every half second until `stop`.
pub async fn poll(
    services: Vec<(String, String)>,
    counters: Arc<Mutex<Counters>>,
    started: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    loop {
        scrape_all(&client, &services, &counters).await;
        if let Ok(mut counters) = counters.lock() {
            let sample = counters.by_service.clone();
            counters
                .samples
                .push((started.elapsed().as_secs_f64(), sample));
        }
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
    for (name, url) in services {
        let Ok(response) = client.get(url).send().await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        if let Ok(mut counters) = counters.lock() {
            counters.observe(name, service_of(name), &text);
        }
    }
}

/// The service of a replica's name (`inventory-1` is `inventory`, `order` is `order`).
pub fn service_of(replica: &str) -> &str {
    match replica.rsplit_once('-') {
        Some((service, index)) if index.parse::<u32>().is_ok() => service,
        _ => replica,
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
            "inventory",
            "msgkit_consumed_total{queue=\"inventory\",outcome=\"ack\"} 5",
        );
        counters.observe(
            "inventory",
            "inventory",
            "msgkit_consumed_total{queue=\"inventory\",outcome=\"ack\"} 8",
        );
        // The process restarted: its counter starts again from zero.
        counters.observe(
            "inventory",
            "inventory",
            "msgkit_consumed_total{queue=\"inventory\",outcome=\"ack\"} 2",
        );
        assert_eq!(counters.sum(&["outcome=\"ack\""]), 10.0);
    }
}
