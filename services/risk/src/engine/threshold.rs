//! Threshold rules: the count or sum of matching events per key over a sliding event-time
//! window, alerting once per crossing.

use super::MAX_THRESHOLD_EVENTS;
use super::compile::Logic;
use super::decisions::{ActiveRule, Alert, Decisions};
use super::expression::Bindings;
use super::matching::holds;
use super::rule::Aggregate;
use super::state::{Counted, KeyState, Seen, ThresholdWindow};

/// Counts `seen` if it matches, then takes the aggregate over `(watermark - over, watermark]`.
/// Going above `above` alerts once; dropping back to it or below re-arms the rule. An
/// out-of-order event counts when it falls inside that window.
pub(crate) fn evaluate(
    state: &mut KeyState,
    rule: &ActiveRule,
    seen: &Seen,
    decisions: &mut Decisions,
) {
    let Logic::Threshold {
        when,
        aggregate,
        over,
        above,
    } = &rule.compiled.logic
    else {
        return;
    };
    let Some(watermark) = state.watermark else {
        return;
    };
    let matched = holds(rule, when, Bindings::Single(&seen.event), decisions);
    let window = window_of(state, rule);
    if matched {
        let at = window
            .counted
            .partition_point(|counted| counted.at <= seen.event.occurred_at);
        window.counted.insert(
            at,
            Counted {
                at: seen.event.occurred_at,
                amount_cents: seen.event.amount_cents,
                transaction_id: seen.event.transaction_id.clone(),
            },
        );
    }
    let start = watermark - *over;
    window.counted.retain(|counted| counted.at > start);
    let excess = window.counted.len().saturating_sub(MAX_THRESHOLD_EVENTS);
    window.counted.drain(..excess);
    let total = total(&window.counted, *aggregate);
    if total <= *above {
        window.above = false;
    } else if !window.above {
        window.above = true;
        decisions.alerts.push(Alert {
            rule_id: rule.id,
            rule_version: rule.version,
            severity: rule.compiled.severity(),
            events: window
                .counted
                .iter()
                .map(|counted| counted.transaction_id.clone())
                .collect(),
            at: watermark,
        });
    }
}

fn window_of<'s>(state: &'s mut KeyState, rule: &ActiveRule) -> &'s mut ThresholdWindow {
    let position = state
        .thresholds
        .iter()
        .position(|window| window.rule_id == rule.id && window.version == rule.version);
    let index = position.unwrap_or_else(|| {
        state.thresholds.push(ThresholdWindow {
            rule_id: rule.id,
            version: rule.version,
            counted: Vec::new(),
            above: false,
        });
        state.thresholds.len() - 1
    });
    &mut state.thresholds[index]
}

fn total(counted: &[Counted], aggregate: Aggregate) -> i64 {
    match aggregate {
        Aggregate::Count => i64::try_from(counted.len()).unwrap_or(i64::MAX),
        Aggregate::SumAmountCents => counted.iter().fold(0i64, |sum, counted| {
            sum.saturating_add(counted.amount_cents)
        }),
    }
}
