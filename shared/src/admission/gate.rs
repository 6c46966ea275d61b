//! The decision, apart from any clock, database or HTTP: from successive backlog readings,
//! whether to shed, why, and how long a shed client should wait.

use std::time::{Duration, Instant};

use super::{AdmissionConfig, Backlog};

/// Why new work is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// Too many units of work not yet final.
    Pending,
    /// The oldest unit of work not yet final is too old.
    PendingAge,
}

impl ShedReason {
    /// The machine-readable name, in the 503's body and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::PendingAge => "pending_age",
        }
    }
}

/// What the gate decided on the last reading.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Decision {
    /// The reading it was taken on.
    pub(crate) backlog: Backlog,
    /// `Some` while shedding.
    pub(crate) shed: Option<Shed>,
}

/// Shedding, with the reason and the advice.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Shed {
    pub(crate) reason: ShedReason,
    /// Whole seconds, at least 1, at most the configured cap.
    pub(crate) retry_after_secs: u64,
}

/// The smoothing of the drain-rate estimate: a new interval counts for this much.
const SMOOTHING: f64 = 0.3;

/// The state kept between readings.
#[derive(Debug)]
pub(crate) struct Gate {
    config: AdmissionConfig,
    shedding: Option<ShedReason>,
    /// The previous reading: when, the backlog, and how many requests had been admitted.
    last: Option<(Instant, u64, u64)>,
    /// Units of work finished per second, smoothed; `None` before two readings.
    drain_per_sec: Option<f64>,
}

impl Gate {
    pub(crate) fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            shedding: None,
            last: None,
            drain_per_sec: None,
        }
    }

    /// Take a reading made `at`, when this process had admitted `admitted` requests in all.
    ///
    /// The drain rate is what the backlog lost plus what was admitted meanwhile: each admitted
    /// request is taken to add one unit. Other replicas' admissions are not seen, so with
    /// several replicas the estimate is low and the advice errs on waiting longer.
    pub(crate) fn observe(&mut self, at: Instant, backlog: Backlog, admitted: u64) -> Decision {
        if let Some((then, pending, admitted_then)) = self.last {
            let elapsed = at.saturating_duration_since(then).as_secs_f64();
            if elapsed > 0.0 {
                let arrived = admitted.saturating_sub(admitted_then) as f64;
                let drained = (arrived + pending as f64 - backlog.pending as f64).max(0.0);
                let rate = drained / elapsed;
                self.drain_per_sec = Some(match self.drain_per_sec {
                    Some(smoothed) => smoothed + SMOOTHING * (rate - smoothed),
                    None => rate,
                });
            }
        }
        self.last = Some((at, backlog.pending, admitted));
        self.shedding = self.next_state(&backlog);
        Decision {
            shed: self.shedding.map(|reason| Shed {
                reason,
                retry_after_secs: self.retry_after(reason, &backlog),
            }),
            backlog,
        }
    }

    /// Trip on either limit; once shedding, resume only when both are below their resume
    /// points, so that a backlog hovering at a limit does not flap.
    fn next_state(&self, backlog: &Backlog) -> Option<ShedReason> {
        let config = &self.config;
        let over = if backlog.pending >= config.max_pending {
            Some(ShedReason::Pending)
        } else if backlog.oldest_age >= config.max_pending_age {
            Some(ShedReason::PendingAge)
        } else {
            None
        };
        match (over, self.shedding) {
            (Some(reason), _) => Some(reason),
            (None, None) => None,
            (None, Some(reason)) => {
                let fraction = config.resume_fraction();
                let below = (backlog.pending as f64) < config.max_pending as f64 * fraction
                    && backlog.oldest_age < config.max_pending_age.mul_f64(fraction);
                (!below).then_some(reason)
            }
        }
    }

    /// The time to drain what stands above the resume point, at the observed drain rate,
    /// whole seconds in [1, cap]; the cap when nothing drains (the consumers or the broker
    /// are away). For the age limit, the units above it are taken as the backlog's share
    /// older than the resume age (arrivals spread evenly over the oldest one's age).
    fn retry_after(&self, reason: ShedReason, backlog: &Backlog) -> u64 {
        let cap = self.config.max_retry_after.as_secs().max(1);
        let resume = self.config.resume_fraction();
        let pending = backlog.pending as f64;
        let excess = match reason {
            ShedReason::Pending => pending - self.config.max_pending as f64 * resume,
            ShedReason::PendingAge => {
                let age = backlog.oldest_age.as_secs_f64();
                let resume_age = self.config.max_pending_age.as_secs_f64() * resume;
                if age > 0.0 {
                    pending * (1.0 - resume_age / age).max(0.0)
                } else {
                    0.0
                }
            }
        };
        match self.drain_per_sec {
            Some(rate) if rate > 0.01 => {
                let secs = (excess.max(0.0) / rate).ceil();
                (secs as u64).clamp(1, cap)
            }
            _ => cap,
        }
    }
}

impl Backlog {
    /// `pending` units of work not yet final, the oldest of them `oldest_age` old.
    pub fn new(pending: u64, oldest_age: Duration) -> Self {
        Self {
            pending,
            oldest_age,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            max_pending: 100,
            max_pending_age: Duration::from_secs(10),
            resume_percent: 90,
            interval: Duration::from_millis(250),
            max_retry_after: Duration::from_secs(30),
        }
    }

    fn reading(pending: u64, age_secs: u64) -> Backlog {
        Backlog::new(pending, Duration::from_secs(age_secs))
    }

    #[test]
    fn either_limit_trips_and_shedding_stops_only_below_ninety_percent_of_both() {
        let mut gate = Gate::new(config());
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(gate.observe(at(0), reading(99, 9), 0).shed, None);
        let shed = gate.observe(at(1), reading(100, 1), 0).shed.unwrap();
        assert_eq!(shed.reason, ShedReason::Pending);
        assert!(
            gate.observe(at(2), reading(95, 1), 0).shed.is_some(),
            "under the limit but above the resume point: still shedding"
        );
        assert_eq!(gate.observe(at(3), reading(89, 1), 0).shed, None);

        let shed = gate.observe(at(4), reading(10, 10), 0).shed.unwrap();
        assert_eq!(shed.reason, ShedReason::PendingAge);
        assert!(gate.observe(at(5), reading(10, 9), 0).shed.is_some());
        assert!(
            gate.observe(at(6), reading(95, 8), 0).shed.is_some(),
            "the age fell below its resume point, the count did not"
        );
        assert_eq!(gate.observe(at(7), reading(10, 8), 0).shed, None);
    }

    #[test]
    fn retry_after_is_the_time_to_drain_to_the_resume_point_at_the_observed_rate() {
        let mut gate = Gate::new(config());
        let t0 = Instant::now();
        // Nothing has drained yet (a broker outage): the cap.
        let shed = gate.observe(t0, reading(150, 1), 0).shed.unwrap();
        assert_eq!(shed.retry_after_secs, 30);
        // 40 admitted and the backlog fell by 10 in one second: 50 finished per second.
        let shed = gate
            .observe(t0 + Duration::from_secs(1), reading(140, 1), 40)
            .shed
            .unwrap();
        // (140 - 90) / 50 = 1 s.
        assert_eq!(shed.retry_after_secs, 1);
        // Nothing drains for a while: the smoothed rate falls, the advice grows, capped.
        let mut last = 1;
        for s in 2..40 {
            let shed = gate
                .observe(t0 + Duration::from_secs(s), reading(140, 1), 40)
                .shed
                .unwrap();
            assert!(shed.retry_after_secs >= last);
            last = shed.retry_after_secs;
        }
        assert_eq!(last, 30);
    }

    #[test]
    fn retry_after_for_the_age_limit_counts_the_share_of_the_backlog_above_the_resume_age() {
        let mut gate = Gate::new(config());
        let t0 = Instant::now();
        gate.observe(t0, reading(60, 1), 0);
        // 20 finished in one second; 60 pending, the oldest 18 s: older than 9 s is half of
        // them, 30, so 2 s.
        let shed = gate
            .observe(t0 + Duration::from_secs(1), reading(60, 18), 20)
            .shed
            .unwrap();
        assert_eq!(shed.reason, ShedReason::PendingAge);
        assert_eq!(shed.retry_after_secs, 2);
    }
}
