//! Latency percentiles and the machine's load, shared by the stages that measure latencies
//! of single events (risk, reconcile).

use serde::Serialize;

/// Percentiles of one latency, in milliseconds, over `count` events.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// From latencies sorted ascending.
    pub fn of(sorted_ms: &[f64]) -> Self {
        Self {
            count: sorted_ms.len(),
            p50_ms: percentile(sorted_ms, 0.5),
            p99_ms: percentile(sorted_ms, 0.99),
            max_ms: sorted_ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The 1-minute load average (/proc/loadavg): how much else was running on the same cores.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Nearest-rank percentile of sorted values (NaN when there are none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values[..1], 0.99), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn a_latency_of_no_events_has_no_percentiles() {
        let none = Latency::of(&[]);
        assert_eq!(none.count, 0);
        assert!(none.p99_ms.is_nan() && none.max_ms.is_nan());
    }
}
