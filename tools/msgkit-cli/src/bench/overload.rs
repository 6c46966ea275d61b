//! The end-to-end stage's overload step: offer twice the measured maximum, open loop, and see
//! the order API shed the excess (503 + `Retry-After`) instead of queueing it; every accepted
//! order must still finish, within a latency the admission limit bounds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinSet;

use super::stats::{Latency, percentile};
use crate::CliError;

/// The order service's admission limit in the bench: shed once the oldest pending order is
/// this old (ORDER_ADMISSION_MAX_PENDING_AGE_MS), which bounds an accepted order's wait.
pub const MAX_PENDING_AGE_MS: u64 = 1_000;

/// The bound an accepted order's accepted-to-notified p99 must stay under (issue 20).
pub const P99_BOUND_MS: f64 = 2_000.0;

/// How long accepted orders get to finish after the last request before they count as lost.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// What the overload step measured.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadStep {
    /// Twice the closed-loop maximum.
    pub offered_per_sec: f64,
    pub seconds: u64,
    pub offered: usize,
    pub accepted: usize,
    /// Answered 503 with `Retry-After`.
    pub shed: usize,
    /// Answered 503 without `Retry-After`, another status, or not at all.
    pub errors: usize,
    /// The median `Retry-After` advised to shed requests, in seconds.
    pub retry_after_p50_secs: f64,
    /// From the 202 to the notification's commit, accepted orders only.
    pub accepted_to_notified: Latency,
    /// Accepted orders not final (still pending in the order service) after the drain
    /// deadline: must be 0.
    pub lost: usize,
}

impl OverloadStep {
    pub fn markdown(&self) -> String {
        format!(
            "\nOverload: {:.0} orders/s offered (twice the maximum) for {} s, open loop; the order \
             service sheds once the oldest pending order is {} ms old.\n\n\
             | offered | accepted | shed (503) | errors | Retry-After p50 s | accepted-to-notified p50 ms | p99 ms | max ms | lost |\n\
             | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
             | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} |\n\n\
             Accepted-to-notified p99 under {:.0} ms: {}; nothing lost: {}.\n",
            self.offered_per_sec,
            self.seconds,
            MAX_PENDING_AGE_MS,
            self.offered,
            self.accepted,
            self.shed,
            self.errors,
            self.retry_after_p50_secs,
            self.accepted_to_notified.p50_ms,
            self.accepted_to_notified.p99_ms,
            self.accepted_to_notified.max_ms,
            self.lost,
            P99_BOUND_MS,
            met(self.accepted_to_notified.p99_ms < P99_BOUND_MS),
            met(self.lost == 0),
        )
    }
}

fn met(holds: bool) -> &'static str {
    if holds { "met" } else { "**NOT met**" }
}

/// One request's answer.
enum Answer {
    Accepted(String, DateTime<Utc>),
    Shed(u64),
    Error,
}

/// Offer `rate` orders/s for `duration` without waiting for answers (a shed client does not
/// back off here: the point is what the service does with load it cannot take), then wait for
/// the accepted ones to finish.
pub async fn run(
    client: &reqwest::Client,
    api: &str,
    pool: &sqlx::PgPool,
    rate: f64,
    duration: Duration,
) -> Result<OverloadStep, CliError> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let count = (duration.as_secs_f64() * rate) as usize;
    let start = Instant::now() + Duration::from_millis(50);
    let answers = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until((start + interval * u32::try_from(i).unwrap_or(u32::MAX)).into())
            .await;
        let (client, api, answers) = (client.clone(), api.to_owned(), Arc::clone(&answers));
        tasks.spawn(async move {
            let answer = place(&client, &api).await;
            if let Ok(mut answers) = answers.lock() {
                answers.push(answer);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let answers: Vec<Answer> = answers
        .lock()
        .map(|mut a| std::mem::take(&mut *a))
        .unwrap_or_default();
    let mut accepted = Vec::new();
    let mut retry_after = Vec::new();
    let mut errors = 0;
    for answer in answers {
        match answer {
            Answer::Accepted(id, at) => accepted.push((id, at)),
            Answer::Shed(secs) => retry_after.push(secs as f64),
            Answer::Error => errors += 1,
        }
    }
    retry_after.sort_by(f64::total_cmp);
    let lost = drain(pool, &accepted).await?;
    let latencies = accepted_to_notified(pool, &accepted).await?;
    Ok(OverloadStep {
        offered_per_sec: rate,
        seconds: duration.as_secs(),
        offered: count,
        accepted: accepted.len(),
        shed: retry_after.len(),
        errors,
        retry_after_p50_secs: percentile(&retry_after, 0.5),
        accepted_to_notified: Latency::of(&latencies),
        lost,
    })
}

async fn place(client: &reqwest::Client, api: &str) -> Answer {
    let Ok(response) = client
        .post(format!("{api}/orders"))
        .header("content-type", "application/json")
        .body(super::e2e::ORDER)
        .send()
        .await
    else {
        return Answer::Error;
    };
    match response.status().as_u16() {
        202 => {
            let at = Utc::now();
            match response.json::<serde_json::Value>().await {
                Ok(body) => match body["order_id"].as_str() {
                    Some(id) => Answer::Accepted(id.to_owned(), at),
                    None => Answer::Error,
                },
                Err(_) => Answer::Error,
            }
        }
        503 => response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .map_or(Answer::Error, Answer::Shed),
        _ => Answer::Error,
    }
}

fn ids(accepted: &[(String, DateTime<Utc>)]) -> Vec<uuid::Uuid> {
    accepted
        .iter()
        .filter_map(|(id, _)| id.parse().ok())
        .collect()
}

/// Wait until every accepted order is final, at most [`DRAIN_DEADLINE`]; how many are not.
async fn drain(
    pool: &sqlx::PgPool,
    accepted: &[(String, DateTime<Utc>)],
) -> Result<usize, CliError> {
    let ids = ids(accepted);
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let final_count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders.orders WHERE id = ANY($1) AND status <> 'pending'",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
        let lost = ids.len().saturating_sub(final_count as usize);
        if lost == 0 || Instant::now() > deadline {
            return Ok(lost);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Milliseconds from each accepted order's 202 to its notification's commit, sorted.
async fn accepted_to_notified(
    pool: &sqlx::PgPool,
    accepted: &[(String, DateTime<Utc>)],
) -> Result<Vec<f64>, CliError> {
    let done: Vec<(uuid::Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT order_id, sent_at FROM notify.notifications WHERE order_id = ANY($1)",
    )
    .bind(ids(accepted))
    .fetch_all(pool)
    .await
    .map_err(|e| CliError::Other(e.into()))?;
    let at: std::collections::HashMap<&str, DateTime<Utc>> =
        accepted.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    let mut latencies: Vec<f64> = done
        .iter()
        .filter_map(|(id, sent)| {
            let accepted = at.get(id.to_string().as_str())?;
            Some((*sent - *accepted).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(p99_ms: f64, lost: usize) -> OverloadStep {
        OverloadStep {
            offered_per_sec: 600.0,
            seconds: 10,
            offered: 6000,
            accepted: 3000,
            shed: 3000,
            errors: 0,
            retry_after_p50_secs: 1.0,
            accepted_to_notified: Latency {
                count: 3000,
                p50_ms: 500.0,
                p99_ms,
                max_ms: p99_ms,
            },
            lost,
        }
    }

    #[test]
    fn the_report_says_whether_the_latency_bound_held_and_nothing_was_lost() {
        let fine = step(1_500.0, 0).markdown();
        assert!(fine.contains("| 6000 | 3000 | 3000 | 0 |"), "{fine}");
        assert!(fine.contains("2000 ms: met; nothing lost: met"), "{fine}");
        let bad = step(2_500.0, 3).markdown();
        assert!(
            bad.contains("2000 ms: **NOT met**; nothing lost: **NOT met**"),
            "{bad}"
        );
    }
}
