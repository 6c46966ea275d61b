//! Unit tests of the engine, one behaviour each; shared builders here.

mod absence;
mod lifecycle;
mod ordering;
mod sequence;
mod state;
mod threshold;
mod validation;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::{
    ActiveRule, Decisions, Engine, Event, KeyState, Kind, RuleSpec, Severity, compile, default_rule,
};

/// The start of every scenario.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
        .single()
        .expect("a valid time")
}

fn secs(seconds: i64) -> TimeDelta {
    TimeDelta::seconds(seconds)
}

fn mins(minutes: i64) -> TimeDelta {
    TimeDelta::minutes(minutes)
}

/// A transaction of user `u-1`.
fn tx(id: &str, amount_cents: i64, location: &str, at: DateTime<Utc>) -> Event {
    Event {
        transaction_id: id.to_owned(),
        user_id: "u-1".to_owned(),
        amount_cents,
        currency: "CNY".to_owned(),
        location: location.to_owned(),
        occurred_at: at,
    }
}

fn active(id: i64, version: i32, spec: &RuleSpec) -> ActiveRule {
    let compiled = compile(spec).unwrap_or_else(|error| panic!("rule {id} compiles: {error}"));
    ActiveRule {
        id,
        version,
        compiled: Arc::new(compiled),
    }
}

fn condition(when: &str) -> RuleSpec {
    RuleSpec {
        key: "user_id".to_owned(),
        kind: Kind::Condition {
            when: when.to_owned(),
        },
        severity: Severity::Low,
    }
}

fn sequence(first: &str, then: &str, within: Duration, strict: bool) -> RuleSpec {
    RuleSpec {
        key: "user_id".to_owned(),
        kind: Kind::Sequence {
            first: first.to_owned(),
            then: then.to_owned(),
            within,
            strict,
        },
        severity: Severity::Medium,
    }
}

/// One key's stream through the engine with a fixed rule list.
struct Stream {
    engine: Engine,
    rules: Vec<ActiveRule>,
    state: KeyState,
}

impl Stream {
    fn new(rules: Vec<ActiveRule>) -> Self {
        Self {
            engine: Engine::default(),
            rules,
            state: KeyState::default(),
        }
    }

    /// The default rule as rule 1, version 1.
    fn default_rule() -> Self {
        Self::new(vec![active(1, 1, &default_rule())])
    }

    fn send(&mut self, event: &Event) -> Decisions {
        self.engine.on_event(&self.rules, &mut self.state, event)
    }

    /// Sends every event and gathers the alerts as (rule id, transaction ids).
    fn alerts_for(&mut self, events: &[Event]) -> Vec<(i64, Vec<String>)> {
        events
            .iter()
            .flat_map(|event| self.send(event).alerts)
            .map(|alert| (alert.rule_id, alert.events))
            .collect()
    }
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}
