//! Validation at write time: what a bad rule is refused with.

use std::sync::Arc;
use std::time::Duration;

use super::{condition, sequence, t0, tx};
use crate::engine::{
    ActiveRule, Aggregate, Engine, ExpressionError, KeyState, Kind, MAX_EXPRESSION_CHARS,
    MAX_NESTING, MAX_TREE_DEPTH, Position, RuleError, RuleSpec, Severity, compile, default_rule,
};

fn refused(spec: &RuleSpec) -> RuleError {
    compile(spec).expect_err("the rule is refused")
}

#[test]
fn the_default_rule_compiles() {
    assert!(compile(&default_rule()).is_ok());
}

#[test]
fn a_key_other_than_user_id_is_refused() {
    let mut spec = condition("amount_cents > 1");
    spec.key = "currency".to_owned();
    assert_eq!(refused(&spec).field(), "key");
}

#[test]
fn a_syntax_error_is_refused_with_its_line_and_column() {
    let error = refused(&condition("amount_cents >"));
    assert_eq!(error.field(), "when");
    assert_eq!(
        error.position(),
        Some(Position {
            line: 1,
            column: 15
        })
    );
    assert!(error.to_string().starts_with("when: "), "{error}");
}

#[test]
fn a_syntax_error_on_a_later_line_names_that_line() {
    let error = refused(&condition("amount_cents > 1 &&\n  location ==="));
    assert_eq!(error.position().map(|position| position.line), Some(2));
}

#[test]
fn an_unknown_variable_is_refused_by_name() {
    let error = refused(&condition("amount > 1 && country == 'CN'"));
    let RuleError::Expression {
        source: ExpressionError::UnknownVariables { names, .. },
        ..
    } = &error
    else {
        panic!("unexpected {error:?}");
    };
    assert_eq!(names, &["amount", "country"]);
    assert!(error.to_string().contains("amount, country"), "{error}");
}

#[test]
fn the_first_event_is_not_visible_in_a_single_event_expression() {
    let error = refused(&sequence(
        "a.amount_cents > 1",
        "true",
        Duration::from_secs(1),
        true,
    ));
    assert_eq!(error.field(), "first");
}

#[test]
fn a_type_error_is_caught_by_the_dry_run() {
    let error = refused(&condition("amount_cents > \"x\""));
    assert!(
        matches!(
            error,
            RuleError::Expression {
                source: ExpressionError::FailsOnSample { .. },
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_type_error_behind_a_short_circuit_is_caught_by_the_second_sample() {
    let error = refused(&condition("amount_cents > 1000 && location > 3"));
    assert!(
        matches!(
            error,
            RuleError::Expression {
                source: ExpressionError::FailsOnSample { .. },
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn an_unknown_field_of_the_first_event_is_caught_by_the_dry_run() {
    let error = refused(&sequence(
        "true",
        "a.country != b.location",
        Duration::from_secs(1),
        true,
    ));
    assert_eq!(error.field(), "then");
}

#[test]
fn an_expression_that_is_not_a_bool_is_refused() {
    let error = refused(&condition("amount_cents + 1"));
    assert!(
        matches!(
            error,
            RuleError::Expression {
                source: ExpressionError::NotBool { .. },
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn an_empty_expression_is_refused() {
    assert!(matches!(
        refused(&condition("  ")),
        RuleError::Expression {
            source: ExpressionError::Empty,
            ..
        }
    ));
}

#[test]
fn an_expression_over_the_length_limit_is_refused_before_parsing() {
    let long = format!("amount_cents > 1{}", " ".repeat(MAX_EXPRESSION_CHARS));
    assert!(matches!(
        refused(&condition(&long)),
        RuleError::Expression {
            source: ExpressionError::TooLong { .. },
            ..
        }
    ));
}

#[test]
fn nesting_over_the_limit_is_refused_with_the_position_of_the_bracket() {
    let deep = format!(
        "{}true{}",
        "(".repeat(MAX_NESTING + 1),
        ")".repeat(MAX_NESTING + 1)
    );
    let error = refused(&condition(&deep));
    assert!(
        matches!(
            error,
            RuleError::Expression {
                source: ExpressionError::TooDeep { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.position(),
        Some(Position {
            line: 1,
            column: 33
        })
    );
}

#[test]
fn brackets_inside_string_literals_do_not_count_as_nesting() {
    let text = format!("location != '{}'", "(".repeat(MAX_NESTING + 5));
    assert!(compile(&condition(&text)).is_ok());
}

#[test]
fn nesting_at_the_limit_is_accepted() {
    let deep = format!(
        "{}amount_cents > 1{}",
        "(".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    );
    assert!(compile(&condition(&deep)).is_ok());
}

#[test]
fn a_long_operator_chain_is_refused_as_too_deep_instead_of_overflowing_a_stack() {
    let chain = format!("amount_cents{} > 0", " + 1".repeat(400));
    assert!(chain.chars().count() <= MAX_EXPRESSION_CHARS);
    let error = refused(&condition(&chain));
    assert!(
        matches!(
            error,
            RuleError::Expression {
                source: ExpressionError::TooComplex { .. },
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn the_deepest_expression_allowed_evaluates_on_a_two_mib_stack() {
    let chain = format!("amount_cents{} > 0", " + 1".repeat(MAX_TREE_DEPTH - 3));
    let rule = compile(&condition(&chain)).expect("at the depth limit");
    let rules = vec![ActiveRule {
        id: 1,
        version: 1,
        compiled: Arc::new(rule),
    }];
    let small_stack = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let mut state = KeyState::default();
            Engine::default()
                .on_event(&rules, &mut state, &tx("a", 1, "X", t0()))
                .alerts
                .len()
        });
    assert_eq!(small_stack.expect("spawns").join().expect("no overflow"), 1);
}

#[test]
fn a_zero_window_is_refused() {
    assert_eq!(
        refused(&sequence("true", "true", Duration::ZERO, true)).field(),
        "within_ms"
    );
}

#[test]
fn a_window_over_a_day_is_refused() {
    assert_eq!(
        refused(&sequence("true", "true", Duration::from_secs(86_401), true)).field(),
        "within_ms"
    );
}

#[test]
fn a_count_threshold_the_state_cannot_hold_is_refused() {
    let spec = RuleSpec {
        key: "user_id".to_owned(),
        kind: Kind::Threshold {
            when: "true".to_owned(),
            aggregate: Aggregate::Count,
            over: Duration::from_secs(60),
            above: 10_000,
        },
        severity: Severity::Low,
    };
    assert_eq!(refused(&spec).field(), "above");
}

#[test]
fn a_rule_round_trips_through_json() {
    let spec = default_rule();
    let json = serde_json::to_string(&spec).expect("serialises");
    assert_eq!(
        serde_json::from_str::<RuleSpec>(&json).expect("parses"),
        spec
    );
}
