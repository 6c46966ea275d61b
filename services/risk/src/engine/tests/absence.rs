//! Absence rules: a timer decides, a matching second event cancels.

use std::time::Duration;

use super::{Stream, active, ids, mins, secs, t0, tx};
use crate::engine::{Kind, RuleSpec, Severity, TimerRequest};

/// A large payment not followed by a small confirmation within 10 minutes.
fn unconfirmed() -> RuleSpec {
    RuleSpec {
        key: "user_id".to_owned(),
        kind: Kind::Absence {
            first: "amount_cents > 500000".to_owned(),
            then: "amount_cents < 100 && b.location == a.location".to_owned(),
            within: Duration::from_secs(600),
        },
        severity: Severity::Medium,
    }
}

fn started(stream: &mut Stream) -> TimerRequest {
    let decisions = stream.send(&tx("a", 600_000, "Shanghai", t0()));
    assert_eq!(decisions.timers.len(), 1);
    decisions.timers[0].clone()
}

#[test]
fn a_first_event_asks_for_a_timer_at_the_window_end_plus_the_lateness() {
    let mut stream = Stream::new(vec![active(5, 3, &unconfirmed())]);
    let timer = started(&mut stream);
    assert_eq!(timer.due, t0() + mins(10) + secs(5));
    assert_eq!(
        (timer.rule_id, timer.rule_version, timer.key.as_str()),
        (5, 3, "u-1")
    );
    assert_eq!(timer.transaction_id, "a");
}

#[test]
fn the_timer_firing_without_a_second_event_raises_an_alert() {
    let mut stream = Stream::new(vec![active(5, 1, &unconfirmed())]);
    let timer = started(&mut stream);
    let decisions = stream
        .engine
        .on_timer(&stream.rules, &mut stream.state, &timer);
    assert_eq!(decisions.alerts.len(), 1);
    assert_eq!(decisions.alerts[0].events, ids(&["a"]));
    assert_eq!(decisions.alerts[0].at, t0() + mins(10));
}

#[test]
fn a_matching_second_event_within_the_window_cancels_the_timer() {
    let mut stream = Stream::new(vec![active(5, 1, &unconfirmed())]);
    let timer = started(&mut stream);
    let decisions = stream.send(&tx("b", 50, "Shanghai", t0() + mins(9)));
    assert_eq!(decisions.cancel_timers, vec![timer.timer_id.clone()]);
    assert!(
        stream
            .engine
            .on_timer(&stream.rules, &mut stream.state, &timer)
            .alerts
            .is_empty()
    );
}

#[test]
fn a_second_event_at_exactly_the_window_end_does_not_cancel() {
    let mut stream = Stream::new(vec![active(5, 1, &unconfirmed())]);
    let timer = started(&mut stream);
    assert!(
        stream
            .send(&tx("b", 50, "Shanghai", t0() + mins(10)))
            .cancel_timers
            .is_empty()
    );
    assert_eq!(
        stream
            .engine
            .on_timer(&stream.rules, &mut stream.state, &timer)
            .alerts
            .len(),
        1
    );
}

#[test]
fn a_second_event_that_does_not_match_does_not_cancel() {
    let mut stream = Stream::new(vec![active(5, 1, &unconfirmed())]);
    let timer = started(&mut stream);
    assert!(
        stream
            .send(&tx("b", 50, "Beijing", t0() + mins(1)))
            .cancel_timers
            .is_empty()
    );
    assert_eq!(
        stream
            .engine
            .on_timer(&stream.rules, &mut stream.state, &timer)
            .alerts
            .len(),
        1
    );
}

#[test]
fn a_timer_fired_twice_alerts_once() {
    let mut stream = Stream::new(vec![active(5, 1, &unconfirmed())]);
    let timer = started(&mut stream);
    assert_eq!(
        stream
            .engine
            .on_timer(&stream.rules, &mut stream.state, &timer)
            .alerts
            .len(),
        1
    );
    assert!(
        stream
            .engine
            .on_timer(&stream.rules, &mut stream.state, &timer)
            .alerts
            .is_empty()
    );
}

#[test]
fn a_late_first_event_already_followed_by_its_second_asks_for_no_timer() {
    let mut stream = Stream::new(vec![active(5, 1, &unconfirmed())]);
    stream.send(&tx("b", 50, "Shanghai", t0() + secs(2)));
    let decisions = stream.send(&tx("a", 600_000, "Shanghai", t0()));
    assert!(decisions.timers.is_empty());
    assert!(stream.state.pending.is_empty());
}

#[test]
fn disabling_an_absence_rule_cancels_its_timers_and_the_timer_raises_nothing() {
    let mut stream = Stream::new(vec![active(5, 1, &unconfirmed())]);
    let timer = started(&mut stream);
    stream.rules.clear();
    let decisions = stream.send(&tx("x", 1, "Shanghai", t0() + mins(1)));
    assert_eq!(decisions.cancel_timers, vec![timer.timer_id.clone()]);
    assert!(
        stream
            .engine
            .on_timer(&stream.rules, &mut stream.state, &timer)
            .alerts
            .is_empty()
    );
}
