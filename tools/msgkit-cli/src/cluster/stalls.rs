//! How long publishing and consuming stalled around the kill, from the timestamps the services
//! write anyway: `published_at` of each outbox row (the start of the relay's batch transaction,
//! set only once the batch was confirmed), `processed_at` of each inbox row (the start of the
//! consumer's transaction for a delivery) and `sent_at` of each notification.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::CliError;

/// The gaps of one stream of events around the kill. Seconds; `None` when there is no event on
/// that side of the kill.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stall {
    pub stream: String,
    pub events: usize,
    /// Longest gap between consecutive events before the kill (the steady state).
    pub baseline_max_gap_secs: Option<f64>,
    /// From the last event before the kill to the kill.
    pub last_before_kill_secs: Option<f64>,
    /// From the kill to the first event after it.
    pub resumed_after_kill_secs: Option<f64>,
    /// The gap that contains the kill: last event before it to first event after it.
    pub gap_across_kill_secs: Option<f64>,
    /// Longest gap between consecutive events from the last one before the kill until the
    /// load stopped, and where it began relative to the kill.
    pub longest_gap_after_kill_secs: Option<f64>,
    pub longest_gap_starts_at_secs: Option<f64>,
}

fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// The gaps of `times` around `kill`, looking no further than `until` (the end of the load;
/// the drain's trickle after it says nothing about the kill).
pub fn stall(
    stream: &str,
    times: &[DateTime<Utc>],
    kill: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Stall {
    let mut times: Vec<DateTime<Utc>> = times.iter().copied().filter(|t| *t <= until).collect();
    times.sort();
    times.dedup();
    let split = times.partition_point(|t| *t <= kill);
    let (before, after) = times.split_at(split);
    let max_gap = |list: &[DateTime<Utc>]| {
        list.windows(2)
            .map(|w| (secs(w[0], w[1]), w[0]))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let last_before = before.last().copied();
    let first_after = after.first().copied();
    // From the last event before the kill on (so the gap across the kill counts).
    let tail = &times[split.saturating_sub(1)..];
    let longest = if last_before.is_some() {
        max_gap(tail)
    } else {
        None
    };
    Stall {
        stream: stream.to_owned(),
        events: times.len(),
        baseline_max_gap_secs: max_gap(before).map(|(gap, _)| gap),
        last_before_kill_secs: last_before.map(|t| secs(t, kill)),
        resumed_after_kill_secs: first_after.map(|t| secs(kill, t)),
        gap_across_kill_secs: last_before.zip(first_after).map(|(a, b)| secs(a, b)),
        longest_gap_after_kill_secs: longest.map(|(gap, _)| gap),
        longest_gap_starts_at_secs: longest.map(|(_, start)| secs(kill, start)),
    }
}

/// The streams the report looks at: each relay's publishes and each consumer's deliveries.
const STREAMS: [(&str, &str); 8] = [
    (
        "publish: order outbox",
        "SELECT published_at FROM orders.msgkit_outbox WHERE published_at IS NOT NULL",
    ),
    (
        "publish: inventory outbox",
        "SELECT published_at FROM inventory.msgkit_outbox WHERE published_at IS NOT NULL",
    ),
    (
        "publish: payment outbox",
        "SELECT published_at FROM payment.msgkit_outbox WHERE published_at IS NOT NULL",
    ),
    (
        "consume: inventory inbox",
        "SELECT processed_at FROM inventory.msgkit_inbox",
    ),
    (
        "consume: payment inbox",
        "SELECT processed_at FROM payment.msgkit_inbox",
    ),
    (
        "consume: order inbox",
        "SELECT processed_at FROM orders.msgkit_inbox",
    ),
    (
        "consume: notify inbox",
        "SELECT processed_at FROM notify.msgkit_inbox",
    ),
    (
        "notifications sent",
        "SELECT sent_at FROM notify.notifications",
    ),
];

/// Every stream's stall around `kill`.
pub async fn measure(
    pool: &PgPool,
    kill: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<Stall>, CliError> {
    let mut stalls = Vec::new();
    for (stream, query) in STREAMS {
        let times: Vec<DateTime<Utc>> = sqlx::query_scalar(query)
            .fetch_all(pool)
            .await
            .map_err(|e| CliError::Other(anyhow::anyhow!("reading {stream}: {e}")))?;
        stalls.push(stall(stream, &times, kill, until));
    }
    Ok(stalls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + ms).unwrap_or_default()
    }

    #[test]
    fn the_gap_across_the_kill_and_the_steady_state_are_told_apart() {
        // Every 100 ms, a 300 ms hiccup before the kill at 1000, nothing until 3500, then a
        // second, shorter pause of 1.2 s later on; events after `until` are ignored.
        let mut times: Vec<DateTime<Utc>> = [0, 100, 200, 500, 600, 700, 800, 900, 950]
            .into_iter()
            .map(at)
            .collect();
        times.extend([3500, 3600, 3700, 4900, 5000, 9000].map(at));
        times.push(at(600)); // duplicates (one batch) count once
        let s = stall("x", &times, at(1000), at(6000));
        assert_eq!(s.events, 14);
        assert_eq!(s.baseline_max_gap_secs, Some(0.3));
        assert_eq!(s.last_before_kill_secs, Some(0.05));
        assert_eq!(s.resumed_after_kill_secs, Some(2.5));
        assert_eq!(s.gap_across_kill_secs, Some(2.55));
        assert_eq!(s.longest_gap_after_kill_secs, Some(2.55));
        assert_eq!(s.longest_gap_starts_at_secs, Some(-0.05));
    }

    #[test]
    fn a_later_longer_pause_is_reported_where_it_began() {
        let times: Vec<DateTime<Utc>> = [0, 100, 900, 1200, 5200, 5300].map(at).to_vec();
        let s = stall("x", &times, at(1000), at(10_000));
        assert_eq!(s.gap_across_kill_secs, Some(0.3));
        assert_eq!(s.longest_gap_after_kill_secs, Some(4.0));
        assert_eq!(s.longest_gap_starts_at_secs, Some(0.2));
    }

    #[test]
    fn no_events_on_one_side_gives_no_figure() {
        let s = stall("x", &[at(2000), at(2100)], at(1000), at(3000));
        assert_eq!(s.last_before_kill_secs, None);
        assert_eq!(s.gap_across_kill_secs, None);
        assert_eq!(s.resumed_after_kill_secs, Some(1.0));
        assert_eq!(s.longest_gap_after_kill_secs, None);
        let s = stall("x", &[at(0), at(100)], at(1000), at(3000));
        assert_eq!(s.resumed_after_kill_secs, None);
        assert_eq!(s.gap_across_kill_secs, None);
        assert_eq!(s.baseline_max_gap_secs, Some(0.1));
    }
}
