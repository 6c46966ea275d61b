//! The default rule and sequences: strict and relaxed, windows exclusive.

use std::time::Duration;

use super::{Stream, active, ids, mins, secs, sequence, t0, tx};
use crate::engine::{Severity, default_rule};

#[test]
fn a_large_amount_then_the_next_transaction_elsewhere_within_5_minutes_raises_one_high_alert() {
    let mut stream = Stream::default_rule();
    assert!(
        stream
            .send(&tx("a", 1_200_000, "Shanghai", t0()))
            .alerts
            .is_empty()
    );
    let decisions = stream.send(&tx("b", 5_000, "Beijing", t0() + mins(3)));
    assert_eq!(decisions.alerts.len(), 1);
    let alert = &decisions.alerts[0];
    assert_eq!(
        (alert.rule_id, alert.rule_version, alert.severity),
        (1, 1, Severity::High)
    );
    assert_eq!(alert.events, ids(&["a", "b"]));
    assert_eq!(alert.at, t0() + mins(3));
}

#[test]
fn the_second_transaction_after_6_minutes_raises_nothing() {
    let mut stream = Stream::default_rule();
    let alerts = stream.alerts_for(&[
        tx("a", 1_200_000, "Shanghai", t0()),
        tx("b", 5_000, "Beijing", t0() + mins(6)),
    ]);
    assert!(alerts.is_empty());
}

#[test]
fn the_second_transaction_at_exactly_5_minutes_raises_nothing_because_the_window_is_exclusive() {
    let mut stream = Stream::default_rule();
    let alerts = stream.alerts_for(&[
        tx("a", 1_200_000, "Shanghai", t0()),
        tx("b", 5_000, "Beijing", t0() + mins(5)),
    ]);
    assert!(alerts.is_empty());
}

#[test]
fn the_second_transaction_one_millisecond_inside_the_window_matches() {
    let mut stream = Stream::default_rule();
    let alerts = stream.alerts_for(&[
        tx("a", 1_200_000, "Shanghai", t0()),
        tx(
            "b",
            5_000,
            "Beijing",
            t0() + mins(5) - chrono::TimeDelta::milliseconds(1),
        ),
    ]);
    assert_eq!(alerts.len(), 1);
}

#[test]
fn a_first_amount_of_exactly_10_000_00_raises_nothing() {
    let mut stream = Stream::default_rule();
    let alerts = stream.alerts_for(&[
        tx("a", 1_000_000, "Shanghai", t0()),
        tx("b", 5_000, "Beijing", t0() + mins(3)),
    ]);
    assert!(alerts.is_empty());
}

#[test]
fn the_next_transaction_from_the_same_location_raises_nothing() {
    let mut stream = Stream::default_rule();
    let alerts = stream.alerts_for(&[
        tx("a", 1_200_000, "Shanghai", t0()),
        tx("b", 5_000, "Shanghai", t0() + mins(1)),
    ]);
    assert!(alerts.is_empty());
}

#[test]
fn a_strict_sequence_does_not_skip_an_event_in_between() {
    let mut stream = Stream::default_rule();
    let alerts = stream.alerts_for(&[
        tx("a", 1_200_000, "Shanghai", t0()),
        tx("between", 100, "Shanghai", t0() + mins(1)),
        tx("b", 5_000, "Beijing", t0() + mins(2)),
    ]);
    assert!(alerts.is_empty());
}

#[test]
fn a_relaxed_sequence_skips_events_in_between() {
    let relaxed = sequence(
        "amount_cents > 1000000",
        "b.location != a.location",
        Duration::from_secs(300),
        false,
    );
    let mut stream = Stream::new(vec![active(7, 1, &relaxed)]);
    let alerts = stream.alerts_for(&[
        tx("a", 1_200_000, "Shanghai", t0()),
        tx("between", 100, "Shanghai", t0() + mins(1)),
        tx("b", 5_000, "Beijing", t0() + mins(2)),
    ]);
    assert_eq!(alerts, vec![(7, ids(&["a", "b"]))]);
}

#[test]
fn a_first_event_completes_at_most_once() {
    let relaxed = sequence(
        "amount_cents > 1000000",
        "b.location != a.location",
        Duration::from_secs(300),
        false,
    );
    let mut stream = Stream::new(vec![active(7, 1, &relaxed)]);
    let alerts = stream.alerts_for(&[
        tx("a", 1_200_000, "Shanghai", t0()),
        tx("b", 5_000, "Beijing", t0() + mins(1)),
        tx("c", 5_000, "Hangzhou", t0() + mins(2)),
    ]);
    assert_eq!(alerts, vec![(7, ids(&["a", "b"]))]);
}

#[test]
fn an_event_can_complete_one_match_and_start_the_next() {
    let mut stream = Stream::default_rule();
    let alerts = stream.alerts_for(&[
        tx("a", 1_200_000, "Shanghai", t0()),
        tx("b", 1_300_000, "Beijing", t0() + mins(1)),
        tx("c", 5_000, "Hangzhou", t0() + mins(2)),
    ]);
    assert_eq!(alerts, vec![(1, ids(&["a", "b"])), (1, ids(&["b", "c"]))]);
}

#[test]
fn the_second_condition_sees_bare_fields_as_the_second_event() {
    let rule = sequence(
        "amount_cents > 100",
        "amount_cents < a.amount_cents && b.currency == currency",
        Duration::from_secs(60),
        true,
    );
    let mut stream = Stream::new(vec![active(3, 1, &rule)]);
    let alerts = stream.alerts_for(&[tx("a", 500, "X", t0()), tx("b", 200, "X", t0() + secs(10))]);
    assert_eq!(alerts, vec![(3, ids(&["a", "b"]))]);
}

#[test]
fn expressions_can_compare_event_times_as_cel_timestamps() {
    let rule = sequence(
        "occurred_at > timestamp('2026-01-01T00:00:00Z')",
        "b.occurred_at - a.occurred_at < duration('30s')",
        Duration::from_secs(60),
        true,
    );
    let mut stream = Stream::new(vec![active(4, 1, &rule)]);
    let alerts = stream.alerts_for(&[
        tx("a", 1, "X", t0()),
        tx("b", 1, "X", t0() + secs(40)),
        tx("c", 1, "X", t0() + secs(50)),
    ]);
    assert_eq!(alerts, vec![(4, ids(&["b", "c"]))]);
}

#[test]
fn the_default_rule_is_the_strict_five_minute_rule_of_the_issue() {
    let spec = default_rule();
    assert_eq!(spec.severity, Severity::High);
    let json = serde_json::to_value(&spec).expect("serialises");
    assert_eq!(json["kind"]["type"], "sequence");
    assert_eq!(json["kind"]["within_ms"], 300_000);
    assert_eq!(json["kind"]["strict"], true);
}
