//! The open-loop half of the risk stage: transactions on a fixed schedule (a slow service
//! cannot slow the sender down), every tenth slot a planted pair, and when each planted alert
//! is seen committed and on the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use super::Latency;
use super::traffic::{self, Variety};
use super::watch::{self, Sightings};
use crate::CliError;

/// Every n-th open-loop slot posts a planted pair instead of one background transaction.
const PLANT_EVERY: usize = 10;

/// The open-loop half of the stage.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    /// Transactions per second sent, planted pairs included.
    pub offered_per_sec: f64,
    pub planted_pairs: usize,
    /// POST returned -> alert committed (polled every 5 ms).
    pub decision: Latency,
    /// POST returned -> alert received on the stream; `None` with the reason when the stream
    /// could not be measured.
    pub push: Option<Latency>,
    /// Alert committed (its `committed_at`) -> received on the stream.
    pub commit_to_push: Option<Latency>,
    pub push_unavailable: Option<String>,
}

pub(super) async fn open_loop(
    client: &reqwest::Client,
    api: &str,
    pool: &sqlx::PgPool,
    rate: f64,
    duration: Duration,
) -> Result<OpenLoop, CliError> {
    let sightings = Arc::new(Sightings::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(watch::poll_committed(
        pool.clone(),
        Arc::clone(&sightings),
        stopped.clone(),
    ));
    let token = super::operator_token()?;
    let (connected, answered) = tokio::sync::oneshot::channel();
    // The stream stays open for the whole step: no client-wide timeout.
    let stream_client = reqwest::Client::new();
    let listener = tokio::spawn(watch::listen(
        stream_client,
        format!("{api}/alerts/stream?access_token={token}"),
        Arc::clone(&sightings),
        connected,
        stopped,
    ));
    let mut push_unavailable = answered
        .await
        .unwrap_or_else(|_| Err("the listener ended".to_owned()))
        .err();

    // A planted slot posts two transactions, so slots come a little slower than `rate`.
    let slot_rate = rate * PLANT_EVERY as f64 / (PLANT_EVERY + 1) as f64;
    let interval = Duration::from_secs_f64(1.0 / slot_rate);
    let slots = (duration.as_secs_f64() * slot_rate) as usize;
    let variety = Arc::new(Variety::default());
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = JoinSet::new();
    let mut planted = 0;
    for slot in 0..slots {
        tokio::time::sleep_until((start + interval.mul_f64(slot as f64)).into()).await;
        let (client, api) = (client.clone(), api.to_owned());
        if slot % PLANT_EVERY == 0 {
            let (k, sightings) = (planted, Arc::clone(&sightings));
            planted += 1;
            tasks.spawn(async move {
                if traffic::post(&client, &api, &traffic::planted(k, false))
                    .await
                    .is_some()
                    && let Some(returned) =
                        traffic::post(&client, &api, &traffic::planted(k, true)).await
                {
                    sightings.returned(traffic::planted_user(k), returned);
                }
            });
        } else {
            let variety = Arc::clone(&variety);
            tasks.spawn(async move {
                traffic::post(&client, &api, &traffic::background(&variety)).await;
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let sent = start.elapsed().as_secs_f64();
    let offered = (slots + planted) as f64 / sent.max(f64::EPSILON);
    let _ = msgkit::testing::try_wait_until(
        "every planted alert committed",
        Duration::from_secs(120),
        watch::POLL_EVERY,
        || sightings.undecided().is_empty(),
    )
    .await;
    if push_unavailable.is_none() {
        let _ = msgkit::testing::try_wait_until(
            "every planted alert pushed",
            Duration::from_secs(30),
            watch::POLL_EVERY,
            || sightings.unpushed() == 0 || listener.is_finished(),
        )
        .await;
    }
    let _ = stop.send(true);
    let _ = poller.await;
    if let Ok(Err(why)) = listener.await {
        push_unavailable.get_or_insert(why);
    }
    let returned = sightings
        .returned
        .lock()
        .map(|r| r.len())
        .unwrap_or_default();
    let decision = Latency::of(&sightings.latencies_ms(&sightings.committed));
    if decision.count < returned {
        return Err(CliError::Other(anyhow::anyhow!(
            "risk stage: {} of {returned} planted pairs raised no alert within 2 minutes",
            returned - decision.count
        )));
    }
    let pushed = sightings.latencies_ms(&sightings.pushed);
    if push_unavailable.is_none() && pushed.len() < returned {
        push_unavailable = Some(format!(
            "{} of {returned} planted alerts never came on the stream",
            returned - pushed.len()
        ));
    }
    let commit_to_push = sightings.commit_to_push_ms(pool).await;
    Ok(OpenLoop {
        offered_per_sec: offered,
        planted_pairs: returned,
        decision,
        push: (!pushed.is_empty()).then(|| Latency::of(&pushed)),
        commit_to_push: (!commit_to_push.is_empty()).then(|| Latency::of(&commit_to_push)),
        push_unavailable,
    })
}
