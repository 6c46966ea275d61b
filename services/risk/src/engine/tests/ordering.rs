//! Event time against arrival order: lateness, duplicates, no retraction.

use super::{Stream, ids, mins, secs, t0, tx};
use crate::engine::{Engine, EngineConfig, Outcome};

#[test]
fn two_events_arriving_in_reverse_order_within_the_lateness_still_match_by_event_time() {
    let mut stream = Stream::default_rule();
    let second = stream.send(&tx("b", 5_000, "Beijing", t0() + secs(3)));
    assert!(second.alerts.is_empty());
    let first = stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    assert_eq!(first.outcome, Outcome::Evaluated);
    assert_eq!(first.alerts.len(), 1);
    assert_eq!(first.alerts[0].events, ids(&["a", "b"]));
    assert_eq!(first.alerts[0].at, t0() + secs(3));
}

#[test]
fn an_event_older_than_the_lateness_is_late_and_not_used() {
    let mut stream = Stream::default_rule();
    stream.send(&tx("b", 5_000, "Beijing", t0() + mins(3)));
    let late = stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    assert_eq!(late.outcome, Outcome::Late);
    assert!(late.alerts.is_empty());
    let after = stream.send(&tx("c", 5_000, "Hangzhou", t0() + mins(4)));
    assert!(after.alerts.is_empty(), "the late event started no match");
}

#[test]
fn an_event_exactly_at_the_lateness_bound_is_still_used() {
    let mut stream = Stream::default_rule();
    stream.send(&tx("b", 5_000, "Beijing", t0() + secs(5)));
    let first = stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    assert_eq!(first.outcome, Outcome::Evaluated);
    assert_eq!(first.alerts.len(), 1);
}

#[test]
fn the_lateness_is_configurable() {
    let engine = Engine::new(EngineConfig {
        allowed_lateness: std::time::Duration::from_secs(600),
        ..EngineConfig::default()
    });
    let mut stream = Stream::default_rule();
    stream.engine = engine;
    stream.send(&tx("b", 5_000, "Beijing", t0() + mins(3)));
    assert_eq!(
        stream
            .send(&tx("a", 1_200_000, "Shanghai", t0()))
            .alerts
            .len(),
        1
    );
}

#[test]
fn the_same_transaction_id_twice_never_counts_twice() {
    let mut stream = Stream::default_rule();
    let a = tx("a", 1_200_000, "Shanghai", t0());
    let b = tx("b", 5_000, "Beijing", t0() + mins(3));
    assert!(stream.send(&a).alerts.is_empty());
    assert_eq!(stream.send(&a).outcome, Outcome::Duplicate);
    assert_eq!(stream.send(&b).alerts.len(), 1);
    let again = stream.send(&b);
    assert_eq!(again.outcome, Outcome::Duplicate);
    assert!(again.alerts.is_empty());
}

#[test]
fn a_duplicate_does_not_break_strict_contiguity() {
    let mut stream = Stream::default_rule();
    let a = tx("a", 1_200_000, "Shanghai", t0());
    stream.send(&a);
    stream.send(&a);
    assert_eq!(
        stream
            .send(&tx("b", 5_000, "Beijing", t0() + mins(3)))
            .alerts
            .len(),
        1
    );
}

#[test]
fn an_alert_is_not_retracted_by_an_event_that_arrives_later_between_the_pair() {
    let mut stream = Stream::default_rule();
    stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    assert_eq!(
        stream
            .send(&tx("b", 5_000, "Beijing", t0() + secs(10)))
            .alerts
            .len(),
        1
    );
    let between = stream.send(&tx("between", 100, "Shanghai", t0() + secs(6)));
    assert_eq!(between.outcome, Outcome::Evaluated);
    assert!(
        between.alerts.is_empty(),
        "no new alert, and nothing withdraws the first"
    );
}

#[test]
fn an_event_arriving_between_two_others_becomes_the_first_ones_next_event() {
    let mut stream = Stream::default_rule();
    stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    assert!(
        stream
            .send(&tx("c", 100, "Shanghai", t0() + secs(4)))
            .alerts
            .is_empty()
    );
    let decisions = stream.send(&tx("b", 5_000, "Beijing", t0() + secs(2)));
    assert_eq!(decisions.alerts.len(), 1);
    assert_eq!(decisions.alerts[0].events, ids(&["a", "b"]));
}

#[test]
fn a_late_first_event_matches_only_its_very_next_event_when_strict() {
    let mut stream = Stream::default_rule();
    stream.send(&tx("b", 100, "Shanghai", t0() + secs(1)));
    stream.send(&tx("c", 100, "Beijing", t0() + secs(2)));
    let first = stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    assert!(
        first.alerts.is_empty(),
        "b is a's next event and is from the same place"
    );
}
