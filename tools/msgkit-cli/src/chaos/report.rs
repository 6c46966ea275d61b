//! The run's report: per fault, how long the system took to recover and what it did meanwhile
//! (from the services' own counters), the loads, the scenario's figures, the kit's invariant,
//! the violations; as a table or JSON, and the timeline picture's data.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::checks::Captured;
use super::counters::{ACKED, Counters, service_of};
use super::generic::Verdict;
use super::inject::FaultRecord;
use super::scenario::Scenario;
use super::timeline::{FaultSpan, Series, Timeline};
use crate::table;

/// How long after its start a fault's effects are counted when the system never recovered.
const WITHOUT_RECOVERY_SECS: f64 = 10.0;
/// How long after recovery they are still counted.
const AFTER_RECOVERY_SECS: f64 = 3.0;

/// Fill each fault's recovery time and what the services did from its start until then:
/// recovered once every service that acknowledged messages in the five seconds before the
/// fault has acknowledged one more after the fault was lifted, counted from the lifting.
pub fn what_faults_did(faults: &mut [FaultRecord], counters: &Counters) {
    let samples = &counters.samples;
    let at = |t: f64| {
        samples
            .iter()
            .rev()
            .find(|(s, _)| *s <= t)
            .or_else(|| samples.first())
            .map(|(_, sample)| sample)
    };
    let starts: Vec<f64> = faults.iter().map(|f| f.start_secs).collect();
    for (index, fault) in faults.iter_mut().enumerate() {
        let next_start = starts.get(index + 1).copied().unwrap_or(f64::INFINITY);
        let (Some(before), Some(start), Some(healed)) = (
            at(fault.start_secs - 5.0),
            at(fault.start_secs),
            at(fault.healed_secs),
        ) else {
            continue;
        };
        let services: Vec<&String> = start
            .keys()
            .map(|(service, _)| service)
            .filter(|service| {
                Counters::in_sample(start, Some(service), &ACKED)
                    > Counters::in_sample(before, Some(service), &ACKED)
            })
            .collect();
        let recovered = samples.iter().find(|(t, sample)| {
            *t > fault.healed_secs
                && services.iter().all(|service| {
                    Counters::in_sample(sample, Some(service), &ACKED)
                        > Counters::in_sample(healed, Some(service), &ACKED)
                })
        });
        fault.recovery_secs = recovered.map(|(t, _)| t - fault.healed_secs);
        // What the services did: until a little after recovery (a reconnect is counted at the
        // next scrape), never into the next fault.
        let until = fault
            .recovery_secs
            .map_or(fault.start_secs + WITHOUT_RECOVERY_SECS, |r| {
                fault.healed_secs + r + AFTER_RECOVERY_SECS
            })
            .min(next_start);
        let Some(last) = at(until) else { continue };
        let delta = |parts: &[&str]| {
            (Counters::in_sample(last, None, parts) - Counters::in_sample(start, None, parts))
                .max(0.0) as u64
        };
        fault.redeliveries = delta(&["msgkit_redelivered_total"]);
        fault.retries = delta(&["msgkit_consumed_total", "outcome=\"retry\""]);
        fault.reconnects = delta(&["msgkit_broker_reconnects_total"]);
    }
}

/// The timeline picture's data: acknowledged messages per second per service, and the faults.
pub fn timeline(
    scenario: &Scenario,
    passed: bool,
    duration_secs: f64,
    load_ends_secs: f64,
    counters: &Counters,
    faults: &[FaultRecord],
) -> Timeline {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for pair in counters.samples.windows(2) {
        let [(t0, s0), (t1, s1)] = pair else { continue };
        let dt = t1 - t0;
        if dt <= 0.0 {
            continue;
        }
        for service in scenario.services.iter().map(|s| service_of(&s.name)) {
            let rate = (Counters::in_sample(s1, Some(service), &ACKED)
                - Counters::in_sample(s0, Some(service), &ACKED))
                / dt;
            series
                .entry(service.to_owned())
                .or_default()
                .push((*t1, rate.max(0.0)));
        }
    }
    Timeline {
        title: format!(
            "chaos: {} ({})",
            scenario.name,
            if passed { "PASSED" } else { "FAILED" }
        ),
        duration_secs,
        load_ends_secs,
        series: series
            .into_iter()
            .map(|(name, points)| Series { name, points })
            .collect(),
        faults: faults
            .iter()
            .map(|f| FaultSpan {
                label: f.fault.clone(),
                start_secs: f.start_secs,
                end_secs: f.healed_secs,
                recovered_secs: f.recovery_secs.map(|r| f.healed_secs - f.start_secs + r),
            })
            .collect(),
    }
}

/// Everything the report shows.
pub struct Report<'a> {
    pub scenario: &'a Scenario,
    pub captured: &'a Captured,
    pub figures: BTreeMap<String, String>,
    pub counters: &'a Counters,
    pub kit: Option<&'a Verdict>,
    pub drain_secs: f64,
    pub faults: &'a [FaultRecord],
    pub violations: &'a [String],
    pub logs: &'a Path,
    pub timeline: &'a Path,
}

impl Report<'_> {
    pub fn to_json(&self) -> Value {
        let c = self.counters;
        let kit = self.kit.map(|v| {
            json!({
                "events": v.events,
                "deliveries_checked": v.deliveries_checked,
                "violations": v.total(),
                "unchecked_queues": v.unchecked_queues,
                "recording_gaps": v.recording_gaps.iter().map(|g| json!({"from": g.from, "to": g.to, "reason": g.reason})).collect::<Vec<_>>(),
                "recording_interrupted": v.recording_interrupted,
            })
        });
        json!({
            "scenario": self.scenario.name,
            "passed": self.violations.is_empty(),
            "loads": super::load_summary(self.captured),
            "figures": self.figures,
            "consumer_counts": {
                "acked": c.sum(&ACKED) as u64,
                "redeliveries": c.sum(&["msgkit_redelivered_total"]) as u64,
                "duplicates_suppressed": c.sum(&["msgkit_consumed_total", "outcome=\"duplicate\""]) as u64,
                "retries": c.sum(&["msgkit_consumed_total", "outcome=\"retry\""]) as u64,
                "dead_letters": c.sum(&["msgkit_consumed_total", "outcome=\"dead_letter\""]) as u64,
                "poison": c.sum(&["msgkit_consumed_total", "outcome=\"poison\""]) as u64,
                "parked": c.sum(&["msgkit_consumed_total", "outcome=\"parked\""]) as u64,
                "reconnects": c.sum(&["msgkit_broker_reconnects_total"]) as u64,
            },
            "kit_invariant": kit,
            "drain_secs": self.drain_secs,
            "faults": self.faults,
            "violations": self.violations,
            "logs": self.logs.display().to_string(),
            "timeline": self.timeline.display().to_string(),
        })
    }
}

/// The report as tables, for a person.
pub fn print(report: &Value) {
    let mut rows = vec![
        vec!["scenario".to_owned(), text(&report["scenario"])],
        vec![
            "result".to_owned(),
            if report["passed"] == true {
                "PASSED"
            } else {
                "FAILED"
            }
            .to_owned(),
        ],
    ];
    for (name, load) in report["loads"].as_object().into_iter().flatten() {
        rows.push(vec![
            format!("load {name}: sent / statuses / captured"),
            format!(
                "{} / {} / {}",
                load["sent"], load["statuses"], load["captured"]
            ),
        ]);
        if load["follow_ups"]
            .as_object()
            .is_some_and(|f| !f.is_empty())
        {
            rows.push(vec![
                format!("load {name}: follow-ups by final status"),
                load["follow_ups"].to_string(),
            ]);
        }
    }
    for (name, value) in report["figures"].as_object().into_iter().flatten() {
        rows.push(vec![name.clone(), text(value)]);
    }
    rows.push(vec![
        "consumer counts".to_owned(),
        report["consumer_counts"].to_string(),
    ]);
    if !report["kit_invariant"].is_null() {
        let kit = &report["kit_invariant"];
        rows.push(vec![
            "kit invariant: events / deliveries checked / gaps".to_owned(),
            format!(
                "{} / {} / {}",
                kit["events"],
                kit["deliveries_checked"],
                kit["recording_gaps"].as_array().map_or(0, Vec::len)
            ),
        ]);
    }
    rows.push(vec![
        "drain (s)".to_owned(),
        format!("{:.1}", report["drain_secs"].as_f64().unwrap_or(0.0)),
    ]);
    println!("{}", table::render(&["CHAOS", ""], &rows));
    let faults: Vec<Vec<String>> = report["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let secs = |v: &Value| {
                v.as_f64()
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"))
            };
            vec![
                format!(
                    "t+{:.0}s {}",
                    f["start_secs"].as_f64().unwrap_or(0.0),
                    text(&f["fault"])
                ),
                text(&f["outcome"]),
                secs(&f["recovery_secs"]),
                secs(&f["restart_secs"]),
                format!(
                    "{} / {} / {}",
                    f["redeliveries"], f["retries"], f["reconnects"]
                ),
            ]
        })
        .collect();
    println!(
        "\n{}",
        table::render(
            &[
                "FAULT",
                "WHAT IT DID",
                "RECOVERY (s)",
                "RESTART (s)",
                "REDELIVERED / RETRIED / RECONNECTS"
            ],
            &faults
        )
    );
    let violations = report["violations"].as_array().cloned().unwrap_or_default();
    if violations.is_empty() {
        println!("\nno invariant violated: nothing lost, nothing applied twice");
    } else {
        println!("\nVIOLATIONS ({}):", violations.len());
        for violation in violations.iter().take(50) {
            println!("  - {}", violation.as_str().unwrap_or_default());
        }
    }
    println!("timeline: {}", text(&report["timeline"]));
    println!("logs: {}", text(&report["logs"]));
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}
