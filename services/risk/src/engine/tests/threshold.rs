//! Threshold rules: sliding event-time windows, one alert per crossing.

use std::time::Duration;

use super::{Stream, active, ids, mins, secs, t0, tx};
use crate::engine::{Aggregate, Kind, RuleSpec, Severity};

fn threshold(aggregate: Aggregate, over: Duration, above: i64) -> RuleSpec {
    RuleSpec {
        key: "user_id".to_owned(),
        kind: Kind::Threshold {
            when: "currency == 'CNY'".to_owned(),
            aggregate,
            over,
            above,
        },
        severity: Severity::Low,
    }
}

fn more_than_three_in_a_minute() -> Stream {
    Stream::new(vec![active(
        9,
        1,
        &threshold(Aggregate::Count, Duration::from_secs(60), 3),
    )])
}

#[test]
fn a_count_going_above_the_threshold_alerts_with_the_events_in_the_window() {
    let mut stream = more_than_three_in_a_minute();
    let events: Vec<_> = (0..4)
        .map(|n| tx(&format!("t{n}"), 1, "X", t0() + secs(n * 10)))
        .collect();
    assert_eq!(
        stream.alerts_for(&events),
        vec![(9, ids(&["t0", "t1", "t2", "t3"]))]
    );
}

#[test]
fn a_count_equal_to_the_threshold_does_not_alert() {
    let mut stream = more_than_three_in_a_minute();
    let events: Vec<_> = (0..3)
        .map(|n| tx(&format!("t{n}"), 1, "X", t0() + secs(n * 10)))
        .collect();
    assert!(stream.alerts_for(&events).is_empty());
}

#[test]
fn staying_above_the_threshold_alerts_only_once() {
    let mut stream = more_than_three_in_a_minute();
    let events: Vec<_> = (0..8)
        .map(|n| tx(&format!("t{n}"), 1, "X", t0() + secs(n)))
        .collect();
    assert_eq!(stream.alerts_for(&events).len(), 1);
}

#[test]
fn dropping_back_below_rearms_the_rule() {
    let mut stream = more_than_three_in_a_minute();
    let burst = |start: chrono::DateTime<chrono::Utc>, prefix: &str| -> Vec<_> {
        (0..4)
            .map(|n| tx(&format!("{prefix}{n}"), 1, "X", start + secs(n)))
            .collect()
    };
    let mut events = burst(t0(), "a");
    events.extend(burst(t0() + mins(5), "b"));
    assert_eq!(stream.alerts_for(&events).len(), 2);
}

#[test]
fn an_event_exactly_the_window_length_earlier_is_outside_the_window() {
    let mut stream = more_than_three_in_a_minute();
    let events = [
        tx("t0", 1, "X", t0()),
        tx("t1", 1, "X", t0() + secs(20)),
        tx("t2", 1, "X", t0() + secs(40)),
        tx("t3", 1, "X", t0() + secs(60)),
    ];
    assert!(stream.alerts_for(&events).is_empty());
}

#[test]
fn events_that_do_not_match_are_not_counted() {
    let mut stream = more_than_three_in_a_minute();
    let mut events: Vec<_> = (0..3)
        .map(|n| tx(&format!("t{n}"), 1, "X", t0() + secs(n)))
        .collect();
    let mut usd = tx("usd", 1, "X", t0() + secs(5));
    usd.currency = "USD".to_owned();
    events.push(usd);
    assert!(stream.alerts_for(&events).is_empty());
}

#[test]
fn a_sum_of_amounts_going_above_the_threshold_alerts() {
    let rule = threshold(
        Aggregate::SumAmountCents,
        Duration::from_secs(3600),
        1_000_000,
    );
    let mut stream = Stream::new(vec![active(9, 1, &rule)]);
    let alerts = stream.alerts_for(&[
        tx("a", 600_000, "X", t0()),
        tx("b", 400_000, "X", t0() + mins(10)),
        tx("c", 1, "X", t0() + mins(20)),
    ]);
    assert_eq!(alerts, vec![(9, ids(&["a", "b", "c"]))]);
}

#[test]
fn an_out_of_order_event_within_the_lateness_counts() {
    let mut stream = more_than_three_in_a_minute();
    let alerts = stream.alerts_for(&[
        tx("t1", 1, "X", t0() + secs(10)),
        tx("t2", 1, "X", t0() + secs(12)),
        tx("t3", 1, "X", t0() + secs(14)),
        tx("t0", 1, "X", t0() + secs(11)),
    ]);
    assert_eq!(alerts, vec![(9, ids(&["t1", "t0", "t2", "t3"]))]);
}

#[test]
fn an_edited_threshold_counts_afresh_from_the_edit() {
    let mut stream = more_than_three_in_a_minute();
    let events: Vec<_> = (0..6)
        .map(|n| tx(&format!("t{n}"), 1, "X", t0() + secs(n)))
        .collect();
    stream.alerts_for(&events[..3]);
    stream.rules = vec![active(
        9,
        2,
        &threshold(Aggregate::Count, Duration::from_secs(60), 2),
    )];
    assert_eq!(
        stream.alerts_for(&events[3..]),
        vec![(9, ids(&["t3", "t4", "t5"]))]
    );
}
