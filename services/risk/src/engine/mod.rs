//! The rule engine: compile rules, then feed each key's events (and fired timers) through
//! [`Engine`] with that key's [`KeyState`].

mod compile;
mod decisions;
mod event;
mod expression;
mod matching;
mod rule;
mod state;
mod threshold;

#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::TimeDelta;

pub use compile::{CompiledRule, MAX_THRESHOLD_EVENTS, MAX_WINDOW, RuleError, compile};
pub use decisions::{
    ActiveRule, Alert, Decisions, Outcome, RuleErrorAtRuntime, RuleId, RuleVersion, TimerRequest,
};
pub use event::Event;
pub use expression::{
    ExpressionError, MAX_EXPRESSION_CHARS, MAX_NESTING, MAX_TREE_DEPTH, Position,
};
pub use rule::{Aggregate, KeyField, Kind, RuleSpec, Severity, default_rule};
pub use state::KeyState;

use compile::Logic;
use decisions::timer_id;
use expression::Bindings;
use state::PendingKind;

/// How tolerant and how big the engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How far behind the key's newest event time an event may be and still be used.
    pub allowed_lateness: Duration,
    /// Most events remembered per key (the oldest go first).
    pub max_events_per_key: usize,
    /// Most partial matches per rule and key (the oldest go first).
    pub max_pending_per_rule: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::from_secs(5),
            max_events_per_key: 256,
            max_pending_per_rule: 32,
        }
    }
}

/// Evaluates active rules on one key's events. Pure: no I/O, no clock; the caller loads and
/// stores the [`KeyState`], schedules the timers and persists the alerts.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    lateness: TimeDelta,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(EngineConfig::default())
    }
}

impl Engine {
    /// An engine with `config`; a lateness too large for a time delta is capped at a day.
    pub fn new(config: EngineConfig) -> Self {
        let lateness = TimeDelta::from_std(config.allowed_lateness).unwrap_or(TimeDelta::days(1));
        Self { config, lateness }
    }

    /// The engine's settings.
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Evaluates every rule of `rules` on `event`, a transaction of the key `state` belongs to.
    /// Each rule decides on its own: one failing rule lands in `errors` and the others still
    /// alert.
    pub fn on_event(&self, rules: &[ActiveRule], state: &mut KeyState, event: &Event) -> Decisions {
        let mut decisions = Decisions::default();
        forget_unlisted(rules, state, &mut decisions);
        if state.has_seen(&event.transaction_id) {
            decisions.outcome = Outcome::Duplicate;
            return decisions;
        }
        if state
            .watermark
            .is_some_and(|watermark| event.occurred_at < watermark - self.lateness)
        {
            decisions.outcome = Outcome::Late;
            return decisions;
        }
        let seen = state.record(event);
        matching::complete_pending(state, rules, &seen, &mut decisions);
        for rule in current_versions(rules) {
            match &rule.compiled.logic {
                Logic::Condition { when } => {
                    if matching::holds(rule, when, Bindings::Single(event), &mut decisions) {
                        decisions.alerts.push(Alert {
                            rule_id: rule.id,
                            rule_version: rule.version,
                            severity: rule.compiled.severity(),
                            events: vec![event.transaction_id.clone()],
                            at: event.occurred_at,
                        });
                    }
                }
                Logic::Sequence { .. } | Logic::Absence { .. } => {
                    let max_pending = self.config.max_pending_per_rule;
                    matching::start(
                        state,
                        rule,
                        &seen,
                        self.lateness,
                        max_pending,
                        &mut decisions,
                    );
                }
                Logic::Threshold { .. } => threshold::evaluate(state, rule, &seen, &mut decisions),
            }
        }
        matching::expire(state, rules, self.lateness);
        state.trim_events(self.retention(rules), self.config.max_events_per_key);
        decisions
    }

    /// A timer the engine asked for has fired: the absence rule alerts unless a matching second
    /// event cancelled the wait, or the rule version it started under is no longer listed.
    pub fn on_timer(
        &self,
        rules: &[ActiveRule],
        state: &mut KeyState,
        timer: &TimerRequest,
    ) -> Decisions {
        let mut decisions = Decisions::default();
        forget_unlisted(rules, state, &mut decisions);
        let waiting = state.pending.iter().position(|waiting| {
            waiting.kind == PendingKind::Absence
                && waiting.rule_id == timer.rule_id
                && waiting.version == timer.rule_version
                && waiting.first.event.transaction_id == timer.transaction_id
        });
        let Some(index) = waiting else {
            return decisions;
        };
        let waiting = state.pending.remove(index);
        let rule = rules
            .iter()
            .find(|rule| rule.id == waiting.rule_id && rule.version == waiting.version);
        if let Some(rule) = rule {
            decisions.alerts.push(Alert {
                rule_id: rule.id,
                rule_version: rule.version,
                severity: rule.compiled.severity(),
                events: vec![waiting.first.event.transaction_id.clone()],
                at: waiting.first.event.occurred_at + rule.compiled.window(),
            });
        }
        decisions
    }

    /// How long events must be kept: the longest sequence or absence window (to match a late
    /// first event against later ones, and to check strict contiguity) plus the lateness
    /// (to recognise duplicates).
    fn retention(&self, rules: &[ActiveRule]) -> TimeDelta {
        let longest = rules
            .iter()
            .filter(|rule| {
                matches!(
                    rule.compiled.logic,
                    Logic::Sequence { .. } | Logic::Absence { .. }
                )
            })
            .map(|rule| rule.compiled.window())
            .max()
            .unwrap_or_else(TimeDelta::zero);
        longest + self.lateness
    }
}

/// The highest listed version of each rule id: the one that starts new matches.
fn current_versions(rules: &[ActiveRule]) -> impl Iterator<Item = &ActiveRule> {
    rules.iter().filter(|rule| {
        !rules
            .iter()
            .any(|other| other.id == rule.id && other.version > rule.version)
    })
}

/// Drops the state of rule versions no longer listed: a disabled rule raises nothing, and its
/// absence waits' timers are cancelled. A threshold keeps its window only for the current
/// version (an edited threshold counts afresh from the edit).
fn forget_unlisted(rules: &[ActiveRule], state: &mut KeyState, decisions: &mut Decisions) {
    let listed = |id, version| {
        rules
            .iter()
            .any(|rule| rule.id == id && rule.version == version)
    };
    state.pending.retain(|waiting| {
        let keep = listed(waiting.rule_id, waiting.version);
        if !keep && waiting.kind == PendingKind::Absence {
            let id = timer_id(
                waiting.rule_id,
                waiting.version,
                &waiting.first.event.transaction_id,
            );
            decisions.cancel_timers.push(id);
        }
        keep
    });
    state.thresholds.retain(|window| {
        current_versions(rules)
            .any(|rule| rule.id == window.rule_id && rule.version == window.version)
    });
}
