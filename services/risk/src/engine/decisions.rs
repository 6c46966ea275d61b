//! What the engine hands the service: the rules to run, and the alerts, timers and errors
//! that follow from one event or one fired timer.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::compile::CompiledRule;
use super::rule::Severity;

/// A rule's id, as stored.
pub type RuleId = i64;
/// A rule's version: each edit makes a new one.
pub type RuleVersion = i32;

/// One compiled version of a rule the engine should run.
///
/// For each id, the highest version in the list is the rule's current version: it alone
/// starts new matches and evaluates conditions and thresholds. A lower version of the same
/// id, when the caller keeps it in the list, only finishes the partial matches started under
/// it. A partial match whose version is no longer listed is dropped, as is all state of a rule
/// whose id is absent (disabled or deleted).
#[derive(Debug, Clone)]
pub struct ActiveRule {
    /// The rule's id.
    pub id: RuleId,
    /// This version.
    pub version: RuleVersion,
    /// The compiled rule of this version.
    pub compiled: Arc<CompiledRule>,
}

/// An alert: a rule version matched these events. Never retracted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule that matched.
    pub rule_id: RuleId,
    /// The version it matched under (for a sequence or absence: the version the match
    /// started under).
    pub rule_version: RuleVersion,
    /// The rule's severity.
    pub severity: Severity,
    /// The `transaction_id`s of the triggering events, in event-time order: with the rule
    /// version, what makes an alert unique.
    pub events: Vec<String>,
    /// Event time of the match: the completing event's time, or for an absence the end of
    /// the window.
    pub at: DateTime<Utc>,
}

/// A wall-clock timer the service must schedule and later hand to
/// [`Engine::on_timer`](super::Engine::on_timer), with the key's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRequest {
    /// Unique per (rule, version, starting transaction): scheduling it twice is harmless.
    pub timer_id: String,
    /// The absence rule waiting.
    pub rule_id: RuleId,
    /// The version the wait started under.
    pub rule_version: RuleVersion,
    /// The key (user id) whose state the timer belongs to.
    pub key: String,
    /// The event that started the wait.
    pub transaction_id: String,
    /// When to fire: the end of the window plus the allowed lateness, so a second event
    /// arriving late but within the lateness still cancels it.
    pub due: DateTime<Utc>,
}

/// A rule that could not decide on this event: reported, and every other rule still decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleErrorAtRuntime {
    /// The failing rule.
    pub rule_id: RuleId,
    /// Its version.
    pub rule_version: RuleVersion,
    /// What failed (CEL's message).
    pub message: String,
}

/// How the engine treated the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Outcome {
    /// Evaluated by every rule.
    #[default]
    Evaluated,
    /// Older than the key's newest event time minus the allowed lateness: not used.
    Late,
    /// Its `transaction_id` was already seen for this key: not used again.
    Duplicate,
}

/// Everything that follows from one event or one fired timer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    /// New alerts.
    pub alerts: Vec<Alert>,
    /// Timers to schedule.
    pub timers: Vec<TimerRequest>,
    /// Timer ids to cancel (the wait was satisfied, or its rule dropped).
    pub cancel_timers: Vec<String>,
    /// Rules that failed on this input.
    pub errors: Vec<RuleErrorAtRuntime>,
    /// How the input was treated.
    pub outcome: Outcome,
}

/// The timer id for an absence wait; deterministic so a redelivered event asks for the same.
pub(crate) fn timer_id(rule_id: RuleId, version: RuleVersion, transaction_id: &str) -> String {
    format!("risk:{rule_id}:{version}:{transaction_id}")
}
