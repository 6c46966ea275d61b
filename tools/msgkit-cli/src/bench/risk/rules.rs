//! The rules the risk stage installs next to the default one: 19 of every kind, written the
//! way an operator would, most of which rarely fire on the stage's traffic (an alert is extra
//! work the stage does not mean to measure), so that the figure is the cost of evaluating
//! twenty rules on every event.

use serde_json::{Value, json};

/// Enabled rules during the stage: the migration's default rule and [`extra_rules`].
pub const ENABLED_RULES: usize = 20;

/// The 19 rules posted to `POST /rules`: 8 conditions, 5 sequences (strict and relaxed),
/// 2 absences and 4 thresholds (count and sum).
pub fn extra_rules() -> Vec<Value> {
    let condition = |when: &str| kind(json!({"type": "condition", "when": when}));
    let sequence = |first: &str, then: &str, within_ms: u64, strict: bool| {
        kind(
            json!({"type": "sequence", "first": first, "then": then, "within_ms": within_ms, "strict": strict}),
        )
    };
    let absence = |first: &str, then: &str, within_ms: u64| {
        kind(json!({"type": "absence", "first": first, "then": then, "within_ms": within_ms}))
    };
    let threshold = |when: &str, aggregate: &str, over_ms: u64, above: i64| {
        kind(
            json!({"type": "threshold", "when": when, "aggregate": aggregate, "over_ms": over_ms, "above": above}),
        )
    };
    vec![
        condition("amount_cents > 100000000"),
        condition("currency == 'XXX'"),
        condition("location == 'Atlantis'"),
        condition("amount_cents == 13"),
        condition("user_id == 'nobody' && amount_cents > 0"),
        condition("location.startsWith('Zz')"),
        condition("amount_cents > 5000000 && currency != 'CNY'"),
        condition("amount_cents < 0"),
        sequence(
            "amount_cents > 5000000",
            "b.amount_cents > 5000000",
            600_000,
            false,
        ),
        sequence(
            "location == 'Atlantis'",
            "b.location != a.location",
            60_000,
            true,
        ),
        sequence(
            "amount_cents > 2000000",
            "b.currency != a.currency",
            300_000,
            false,
        ),
        sequence(
            "currency == 'XXX'",
            "b.amount_cents > a.amount_cents",
            120_000,
            true,
        ),
        sequence(
            "amount_cents == 13",
            "b.occurred_at - a.occurred_at < duration('1s')",
            60_000,
            false,
        ),
        absence(
            "amount_cents > 50000000",
            "b.location == a.location",
            60_000,
        ),
        absence("currency == 'XXX'", "b.currency == 'CNY'", 30_000),
        threshold("true", "count", 60_000, 200),
        threshold("location == 'Atlantis'", "count", 600_000, 3),
        threshold("true", "sum_amount_cents", 3_600_000, 10_000_000_000),
        threshold("amount_cents > 90000", "count", 300_000, 100),
    ]
}

fn kind(kind: Value) -> Value {
    json!({"key": "user_id", "kind": kind, "severity": "low"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_the_default_rule_twenty_are_enabled_and_every_kind_is_there() {
        let rules = extra_rules();
        assert_eq!(rules.len() + 1, ENABLED_RULES);
        for kind in ["condition", "sequence", "absence", "threshold"] {
            assert!(
                rules.iter().any(|r| r["kind"]["type"] == kind),
                "no {kind} rule"
            );
        }
    }

    #[test]
    fn every_rule_compiles_as_the_service_would_accept_it() {
        for rule in extra_rules() {
            let spec: risk::RuleSpec = serde_json::from_value(rule.clone()).unwrap();
            if let Err(error) = risk::compile(&spec) {
                panic!("{rule} is refused: {error}");
            }
        }
    }
}
