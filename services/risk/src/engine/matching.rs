//! Sequence and absence rules: starting partial matches, and completing them with a later
//! event (in event time, whatever the arrival order within the lateness).

use chrono::TimeDelta;

use super::compile::Logic;
use super::decisions::{ActiveRule, Alert, Decisions, RuleErrorAtRuntime, TimerRequest, timer_id};
use super::expression::{Bindings, Expression};
use super::state::{KeyState, Pending, PendingKind, Seen};

/// What a sequence or absence rule version needs to match.
struct Pattern<'r> {
    kind: PendingKind,
    first: &'r Expression,
    then: &'r Expression,
    within: TimeDelta,
    strict: bool,
}

fn pattern(rule: &ActiveRule) -> Option<Pattern<'_>> {
    match &rule.compiled.logic {
        Logic::Sequence {
            first,
            then,
            within,
            strict,
        } => Some(Pattern {
            kind: PendingKind::Sequence,
            first,
            then,
            within: *within,
            strict: *strict,
        }),
        Logic::Absence {
            first,
            then,
            within,
        } => Some(Pattern {
            kind: PendingKind::Absence,
            first,
            then,
            within: *within,
            strict: false,
        }),
        Logic::Condition { .. } | Logic::Threshold { .. } => None,
    }
}

/// Offers the newly recorded `second` to every partial match, each under the rule version it
/// started with. A completed sequence alerts; a completed absence cancels its timer. Either
/// way the partial match is consumed: one first event completes at most once.
pub(crate) fn complete_pending(
    state: &mut KeyState,
    rules: &[ActiveRule],
    second: &Seen,
    decisions: &mut Decisions,
) {
    let pending = std::mem::take(&mut state.pending);
    let mut kept = Vec::with_capacity(pending.len());
    for waiting in pending {
        let rule = rules
            .iter()
            .find(|rule| rule.id == waiting.rule_id && rule.version == waiting.version);
        let completed = match rule.and_then(|rule| pattern(rule).map(|pattern| (rule, pattern))) {
            Some((rule, pattern)) => {
                completes(state, rule, &pattern, &waiting.first, second, decisions)
            }
            None => false,
        };
        if completed {
            finish(rule, &waiting, second, decisions);
        } else {
            kept.push(waiting);
        }
    }
    state.pending = kept;
}

fn finish(rule: Option<&ActiveRule>, waiting: &Pending, second: &Seen, decisions: &mut Decisions) {
    let Some(rule) = rule else { return };
    match waiting.kind {
        PendingKind::Sequence => decisions
            .alerts
            .push(pair_alert(rule, &waiting.first, second)),
        PendingKind::Absence => decisions.cancel_timers.push(timer_id(
            rule.id,
            rule.version,
            &waiting.first.event.transaction_id,
        )),
    }
}

/// Whether `second` completes the match `first` started: after it, strictly within the
/// window, its very next event when strict, and `then` holds.
fn completes(
    state: &KeyState,
    rule: &ActiveRule,
    pattern: &Pattern<'_>,
    first: &Seen,
    second: &Seen,
    decisions: &mut Decisions,
) -> bool {
    if second.order() <= first.order()
        || second.event.occurred_at - first.event.occurred_at >= pattern.within
        || (pattern.strict && state.any_between(first, second))
    {
        return false;
    }
    holds(
        rule,
        pattern.then,
        Bindings::Pair {
            a: &first.event,
            b: &second.event,
        },
        decisions,
    )
}

/// Starts a partial match if `seen` matches the current version's `first`. An event that
/// arrived after events later than it (out of order, within the lateness) is first matched
/// against those, so arrival order does not change the outcome.
pub(crate) fn start(
    state: &mut KeyState,
    rule: &ActiveRule,
    seen: &Seen,
    lateness: TimeDelta,
    max_pending: usize,
    decisions: &mut Decisions,
) {
    let Some(pattern) = pattern(rule) else { return };
    if !holds(
        rule,
        pattern.first,
        Bindings::Single(&seen.event),
        decisions,
    ) {
        return;
    }
    // Cloned so the state can take a partial match below; a key holds few events.
    let candidates: Vec<Seen> = {
        let mut later = state.after(seen, pattern.within);
        if pattern.strict {
            later.next().cloned().into_iter().collect()
        } else {
            later.cloned().collect()
        }
    };
    let completed = candidates.into_iter().find(|second| {
        holds(
            rule,
            pattern.then,
            Bindings::Pair {
                a: &seen.event,
                b: &second.event,
            },
            decisions,
        )
    });
    match (pattern.kind, completed) {
        (PendingKind::Sequence, Some(second)) => {
            decisions.alerts.push(pair_alert(rule, seen, &second));
        }
        (PendingKind::Absence, Some(_)) => {}
        (PendingKind::Sequence, None) => {
            let horizon = state.watermark.map(|watermark| watermark - lateness);
            if horizon.is_none_or(|horizon| seen.event.occurred_at + pattern.within > horizon) {
                push_pending(
                    state,
                    rule,
                    PendingKind::Sequence,
                    seen,
                    max_pending,
                    decisions,
                );
            }
        }
        (PendingKind::Absence, None) => {
            push_pending(
                state,
                rule,
                PendingKind::Absence,
                seen,
                max_pending,
                decisions,
            );
            decisions.timers.push(TimerRequest {
                timer_id: timer_id(rule.id, rule.version, &seen.event.transaction_id),
                rule_id: rule.id,
                rule_version: rule.version,
                key: rule.compiled.key.of(&seen.event).to_owned(),
                transaction_id: seen.event.transaction_id.clone(),
                due: seen.event.occurred_at + pattern.within + lateness,
            });
        }
    }
}

/// Keeps at most `max_pending` partial matches per rule and key: the oldest gives way.
fn push_pending(
    state: &mut KeyState,
    rule: &ActiveRule,
    kind: PendingKind,
    first: &Seen,
    max_pending: usize,
    decisions: &mut Decisions,
) {
    let of_rule = state
        .pending
        .iter()
        .filter(|waiting| waiting.rule_id == rule.id)
        .count();
    if of_rule >= max_pending {
        let oldest = state
            .pending
            .iter()
            .enumerate()
            .filter(|(_, waiting)| waiting.rule_id == rule.id)
            .min_by_key(|(_, waiting)| waiting.first.order())
            .map(|(index, _)| index);
        if let Some(index) = oldest {
            let dropped = state.pending.remove(index);
            if dropped.kind == PendingKind::Absence {
                let id = timer_id(
                    dropped.rule_id,
                    dropped.version,
                    &dropped.first.event.transaction_id,
                );
                decisions.cancel_timers.push(id);
            }
        }
    }
    state.pending.push(Pending {
        kind,
        rule_id: rule.id,
        version: rule.version,
        first: first.clone(),
    });
}

/// Forgets sequence partial matches no future event can complete: every event still
/// accepted is at or after the watermark minus the lateness. Absence waits end with their
/// timer instead.
pub(crate) fn expire(state: &mut KeyState, rules: &[ActiveRule], lateness: TimeDelta) {
    let Some(watermark) = state.watermark else {
        return;
    };
    let horizon = watermark - lateness;
    state.pending.retain(|waiting| {
        if waiting.kind == PendingKind::Absence {
            return true;
        }
        rules
            .iter()
            .find(|rule| rule.id == waiting.rule_id && rule.version == waiting.version)
            .and_then(pattern)
            .is_some_and(|pattern| waiting.first.event.occurred_at + pattern.within > horizon)
    });
}

/// Evaluates one expression for one rule; a runtime error is reported and counts as no match,
/// so it never stops another rule.
pub(crate) fn holds(
    rule: &ActiveRule,
    expression: &Expression,
    bindings: Bindings<'_>,
    decisions: &mut Decisions,
) -> bool {
    match expression.matches(bindings) {
        Ok(matched) => matched,
        Err(error) => {
            decisions.errors.push(RuleErrorAtRuntime {
                rule_id: rule.id,
                rule_version: rule.version,
                message: format!("{}: {error}", expression.source()),
            });
            false
        }
    }
}

fn pair_alert(rule: &ActiveRule, first: &Seen, second: &Seen) -> Alert {
    Alert {
        rule_id: rule.id,
        rule_version: rule.version,
        severity: rule.compiled.severity(),
        events: vec![
            first.event.transaction_id.clone(),
            second.event.transaction_id.clone(),
        ],
        at: second.event.occurred_at,
    }
}
