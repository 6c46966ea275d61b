//! The per-key state: serialisable and bounded.

use std::time::Duration;

use super::{Stream, active, condition, mins, secs, sequence, t0, tx};
use crate::engine::{Engine, EngineConfig, KeyState};

#[test]
fn the_state_survives_serialisation_between_two_events() {
    let mut stream = Stream::default_rule();
    stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    let stored = serde_json::to_string(&stream.state).expect("serialises");
    stream.state = serde_json::from_str::<KeyState>(&stored).expect("parses");
    assert_eq!(
        stream
            .send(&tx("b", 100, "Beijing", t0() + mins(3)))
            .alerts
            .len(),
        1
    );
}

#[test]
fn events_older_than_the_longest_window_and_the_lateness_are_forgotten() {
    let mut stream = Stream::default_rule();
    for n in 0..10 {
        stream.send(&tx(&format!("t{n}"), 1, "X", t0() + mins(n * 2)));
    }
    // Kept: within 5 minutes + 5 seconds of the newest (18 min): 14, 16, 18.
    assert_eq!(stream.state.events.len(), 3);
    assert_eq!(stream.state.watermark(), Some(t0() + mins(18)));
}

#[test]
fn with_only_conditions_a_key_keeps_just_the_lateness_worth_of_events() {
    let mut stream = Stream::new(vec![active(1, 1, &condition("false"))]);
    for n in 0..10 {
        stream.send(&tx(&format!("t{n}"), 1, "X", t0() + secs(n * 10)));
    }
    assert_eq!(stream.state.len(), 1);
}

#[test]
fn events_per_key_are_capped() {
    let mut stream = Stream::default_rule();
    stream.engine = Engine::new(EngineConfig {
        max_events_per_key: 4,
        ..EngineConfig::default()
    });
    for n in 0..10 {
        stream.send(&tx(&format!("t{n}"), 1, "X", t0() + secs(n)));
    }
    assert_eq!(stream.state.events.len(), 4);
}

#[test]
fn partial_matches_per_rule_are_capped_and_the_oldest_gives_way() {
    let relaxed = sequence("true", "false", Duration::from_secs(3600), false);
    let mut stream = Stream::new(vec![active(1, 1, &relaxed)]);
    stream.engine = Engine::new(EngineConfig {
        max_pending_per_rule: 3,
        ..EngineConfig::default()
    });
    for n in 0..10 {
        stream.send(&tx(&format!("t{n}"), 1, "X", t0() + secs(n)));
    }
    let firsts: Vec<_> = stream
        .state
        .pending
        .iter()
        .map(|waiting| waiting.first.event.transaction_id.clone())
        .collect();
    assert_eq!(firsts, ["t7", "t8", "t9"]);
}

#[test]
fn a_partial_match_whose_window_has_passed_is_forgotten() {
    let mut stream = Stream::default_rule();
    stream.send(&tx("a", 1_200_000, "Shanghai", t0()));
    assert_eq!(stream.state.pending.len(), 1);
    stream.send(&tx("b", 1, "Shanghai", t0() + mins(6)));
    assert!(stream.state.pending.is_empty());
}

#[test]
fn a_fresh_state_is_empty() {
    assert!(KeyState::default().is_empty());
}
