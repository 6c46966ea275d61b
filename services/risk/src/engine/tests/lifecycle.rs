//! Rules changing, disappearing, failing and deciding independently.

use std::time::Duration;

use super::{Stream, active, condition, ids, mins, secs, sequence, t0, tx};
use crate::engine::{Outcome, default_rule};

fn large_then_elsewhere(threshold: i64) -> crate::engine::RuleSpec {
    sequence(
        &format!("amount_cents > {threshold}"),
        "b.location != a.location",
        Duration::from_secs(300),
        true,
    )
}

#[test]
fn a_new_version_applies_to_events_after_the_change() {
    let mut stream = Stream::new(vec![active(1, 1, &large_then_elsewhere(1_000_000))]);
    stream.send(&tx("a", 600_000, "Shanghai", t0()));
    stream.rules = vec![active(1, 2, &large_then_elsewhere(500_000))];
    assert!(
        stream
            .send(&tx("b", 100, "Beijing", t0() + mins(1)))
            .alerts
            .is_empty()
    );
    stream.send(&tx("c", 600_000, "Shanghai", t0() + mins(2)));
    let decisions = stream.send(&tx("d", 100, "Beijing", t0() + mins(3)));
    assert_eq!(decisions.alerts.len(), 1);
    assert_eq!(
        (
            decisions.alerts[0].rule_version,
            decisions.alerts[0].events.clone()
        ),
        (2, ids(&["c", "d"]))
    );
}

#[test]
fn a_partial_match_started_under_the_old_version_finishes_under_it() {
    let old_then = sequence(
        "amount_cents > 1000000",
        "b.location == 'Beijing'",
        Duration::from_secs(300),
        true,
    );
    let new_then = sequence(
        "amount_cents > 1000000",
        "b.location == 'Tokyo'",
        Duration::from_secs(300),
        true,
    );
    let mut stream = Stream::new(vec![active(1, 1, &old_then)]);
    stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    stream.rules = vec![active(1, 1, &old_then), active(1, 2, &new_then)];
    let decisions = stream.send(&tx("b", 100, "Beijing", t0() + mins(1)));
    assert_eq!(decisions.alerts.len(), 1);
    assert_eq!(decisions.alerts[0].rule_version, 1);
}

#[test]
fn an_old_version_kept_in_the_list_starts_no_new_match() {
    let mut stream = Stream::new(vec![
        active(1, 1, &large_then_elsewhere(1_000_000)),
        active(1, 2, &large_then_elsewhere(5_000_000)),
    ]);
    let alerts = stream.alerts_for(&[
        tx("a", 1_200_000, "Shanghai", t0()),
        tx("b", 1, "Beijing", t0() + mins(1)),
    ]);
    assert!(alerts.is_empty());
}

#[test]
fn a_partial_match_of_a_version_no_longer_listed_is_dropped() {
    let mut stream = Stream::new(vec![active(1, 1, &large_then_elsewhere(1_000_000))]);
    stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    stream.rules = vec![active(1, 2, &large_then_elsewhere(1_000_000))];
    assert!(
        stream
            .send(&tx("b", 100, "Beijing", t0() + mins(1)))
            .alerts
            .is_empty()
    );
    assert!(stream.state.pending.is_empty());
}

#[test]
fn a_disabled_rule_raises_nothing_and_its_partial_matches_are_dropped() {
    let mut stream = Stream::default_rule();
    stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    stream.rules.clear();
    assert!(
        stream
            .send(&tx("b", 100, "Beijing", t0() + mins(1)))
            .alerts
            .is_empty()
    );
    assert!(stream.state.pending.is_empty());
    stream.rules = vec![active(1, 1, &default_rule())];
    assert!(
        stream
            .send(&tx("c", 100, "Tokyo", t0() + mins(2)))
            .alerts
            .is_empty(),
        "re-enabling does not revive it"
    );
}

#[test]
fn a_rule_failing_at_run_time_is_reported_and_the_others_still_decide() {
    // Passes the dry run (the samples are not in Paris) but divides by zero for this event.
    let failing = condition("location == 'Paris' && 100 / (amount_cents - amount_cents) > 1");
    let mut stream = Stream::new(vec![
        active(1, 1, &failing),
        active(2, 1, &condition("amount_cents > 10")),
    ]);
    let decisions = stream.send(&tx("a", 50, "Paris", t0()));
    assert_eq!(decisions.outcome, Outcome::Evaluated);
    assert_eq!(decisions.errors.len(), 1);
    assert_eq!(
        (
            decisions.errors[0].rule_id,
            decisions.errors[0].rule_version
        ),
        (1, 1)
    );
    assert!(
        decisions.errors[0].message.contains("zero"),
        "{}",
        decisions.errors[0].message
    );
    assert_eq!(decisions.alerts.len(), 1);
    assert_eq!(decisions.alerts[0].rule_id, 2);
}

#[test]
fn twenty_rules_over_one_stream_each_raise_exactly_their_own_alerts() {
    // Rule n alerts on amounts of exactly n * 100 cents; rule 20 also on none of the others.
    let rules = (1..=20)
        .map(|n| active(n, 1, &condition(&format!("amount_cents == {}", n * 100))))
        .collect();
    let mut stream = Stream::new(rules);
    let events: Vec<_> = (1..=20)
        .rev()
        .map(|n| tx(&format!("t{n}"), n * 100, "X", t0() + secs(21 - n)))
        .collect();
    let mut alerts = stream.alerts_for(&events);
    alerts.sort();
    let expected: Vec<_> = (1..=20).map(|n| (n, vec![format!("t{n}")])).collect();
    assert_eq!(alerts, expected);
}

#[test]
fn several_kinds_decide_independently_on_the_same_event() {
    let mut stream = Stream::new(vec![
        active(1, 1, &default_rule()),
        active(2, 1, &condition("location == 'Beijing'")),
        active(3, 1, &condition("amount_cents > 1000000")),
    ]);
    let alerts = stream.alerts_for(&[
        tx("a", 1_200_000, "Shanghai", t0()),
        tx("b", 100, "Beijing", t0() + mins(1)),
    ]);
    assert_eq!(
        alerts,
        vec![(3, ids(&["a"])), (1, ids(&["a", "b"])), (2, ids(&["b"]))]
    );
}
