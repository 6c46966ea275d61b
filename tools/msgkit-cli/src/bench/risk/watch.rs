//! Watching planted alerts arrive: committed (polling the alerts table) and pushed (on
//! `GET /alerts/stream`), each noted when first seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;

use super::sse::FrameReader;
use super::traffic;

/// How often the alerts table is polled: the resolution of the decision latency.
pub const POLL_EVERY: Duration = Duration::from_millis(5);

/// The default rule's id (installed by risk's migration): the planted pairs' rule.
const DEFAULT_RULE: i64 = 1;

/// Per planted user: when its second transaction's POST returned, when its alert was seen
/// committed, when it came on the stream.
#[derive(Debug, Default)]
pub struct Sightings {
    pub returned: Mutex<HashMap<String, Instant>>,
    pub committed: Mutex<HashMap<String, Instant>>,
    pub pushed: Mutex<HashMap<String, Instant>>,
    /// The wall-clock time of each arrival on the stream, to compare with the alert's
    /// `committed_at` (the database's clock: this machine's).
    pub pushed_at: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl Sightings {
    pub fn returned(&self, user: String, at: Instant) {
        if let Ok(mut map) = self.returned.lock() {
            map.insert(user, at);
        }
    }

    /// Planted users whose second POST returned and whose alert is not seen committed yet.
    pub fn undecided(&self) -> Vec<String> {
        let (Ok(returned), Ok(committed)) = (self.returned.lock(), self.committed.lock()) else {
            return Vec::new();
        };
        returned
            .keys()
            .filter(|user| !committed.contains_key(*user))
            .cloned()
            .collect()
    }

    /// Planted users whose alert is committed but not seen on the stream yet.
    pub fn unpushed(&self) -> usize {
        let (Ok(committed), Ok(pushed)) = (self.committed.lock(), self.pushed.lock()) else {
            return 0;
        };
        committed
            .keys()
            .filter(|u| !pushed.contains_key(*u))
            .count()
    }

    /// Milliseconds from each planted alert's commit (`committed_at`, which risk records as
    /// the last statement of the deciding transaction) to its arrival on the stream, sorted;
    /// empty when the alerts table has no such column.
    pub async fn commit_to_push_ms(&self, pool: &PgPool) -> Vec<f64> {
        let pushed_at = self.pushed_at.lock().map(|p| p.clone()).unwrap_or_default();
        let users: Vec<&String> = pushed_at.keys().collect();
        let committed: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT user_id, committed_at FROM risk.alerts \
             WHERE rule_id = $1 AND user_id = ANY($2) AND committed_at IS NOT NULL",
        )
        .bind(DEFAULT_RULE)
        .bind(&users)
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        let mut ms: Vec<f64> = committed
            .iter()
            .filter_map(|(user, committed)| {
                let waited = pushed_at.get(user)?.signed_duration_since(*committed);
                Some(waited.num_microseconds()? as f64 / 1000.0)
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    }

    /// Milliseconds from each second POST's return to `seen`, sorted.
    pub fn latencies_ms(&self, seen: &Mutex<HashMap<String, Instant>>) -> Vec<f64> {
        let (Ok(returned), Ok(seen)) = (self.returned.lock(), seen.lock()) else {
            return Vec::new();
        };
        let mut ms: Vec<f64> = seen
            .iter()
            .filter_map(|(user, at)| {
                let from = returned.get(user)?;
                Some(at.saturating_duration_since(*from).as_secs_f64() * 1000.0)
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    }
}

/// Poll risk's alerts for the undecided planted users until `stop`; a user's alert is noted
/// at the start of the poll that found it (it was committed before that query's snapshot).
pub async fn poll_committed(
    pool: PgPool,
    sightings: std::sync::Arc<Sightings>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let pending = sightings.undecided();
        if !pending.is_empty() {
            let started = Instant::now();
            let found: Vec<String> = sqlx::query_scalar(
                "SELECT user_id FROM risk.alerts WHERE rule_id = $1 AND user_id = ANY($2)",
            )
            .bind(DEFAULT_RULE)
            .bind(&pending)
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            if let Ok(mut committed) = sightings.committed.lock() {
                for user in found {
                    committed.entry(user).or_insert(started);
                }
            }
        }
        let _ = tokio::time::timeout(POLL_EVERY, stop.changed()).await;
    }
}

/// Read `url` (the alert stream, with an operator's token) until `stop`, noting planted
/// users' default-rule alerts; `Err` when the stream does not answer 200 or breaks.
/// `connected` is told once the stream answered.
pub async fn listen(
    client: reqwest::Client,
    url: String,
    sightings: std::sync::Arc<Sightings>,
    connected: tokio::sync::oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let response = match client
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
    {
        Ok(response) if response.status() == 200 => response,
        Ok(response) => {
            let why = format!("GET /alerts/stream answered {}", response.status());
            let _ = connected.send(Err(why.clone()));
            return Err(why);
        }
        Err(error) => {
            let why = format!("GET /alerts/stream failed: {error}");
            let _ = connected.send(Err(why.clone()));
            return Err(why);
        }
    };
    let _ = connected.send(Ok(()));
    let mut response = response;
    let mut reader = FrameReader::default();
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk,
            _ = stop.changed() => return Ok(()),
        };
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Err("the stream ended".to_owned()),
            Err(error) => return Err(format!("the stream broke: {error}")),
        };
        let (received, received_wall) = (Instant::now(), Utc::now());
        for frame in reader.push(&chunk) {
            if frame.event != "alert" {
                continue;
            }
            let Ok(alert) = serde_json::from_str::<serde_json::Value>(&frame.data) else {
                continue;
            };
            let user = alert["user_id"].as_str().unwrap_or_default();
            if alert["rule_id"] == DEFAULT_RULE
                && user.starts_with(traffic::PLANTED_PREFIX)
                && let Ok(mut pushed) = sightings.pushed.lock()
                && !pushed.contains_key(user)
            {
                pushed.insert(user.to_owned(), received);
                if let Ok(mut pushed_at) = sightings.pushed_at.lock() {
                    pushed_at.insert(user.to_owned(), received_wall);
                }
            }
        }
    }
}
