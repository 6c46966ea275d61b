//! Validating a [`RuleSpec`] into a [`CompiledRule`] the engine can run.

use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use thiserror::Error;

use super::event::Event;
use super::expression::{Bindings, EvalError, Expression, ExpressionError, Position, Scope};
use super::rule::{Aggregate, KeyField, Kind, RuleSpec, Severity};

/// Longest window a rule may use: the engine keeps a key's events that long (plus the
/// lateness), so this bounds the state.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Most matching events a threshold rule keeps per key; a count threshold must stay below it.
pub const MAX_THRESHOLD_EVENTS: usize = 512;

/// Why a rule was refused: which field, what is wrong and, for a syntax error, where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    /// The key is not one the engine partitions by.
    #[error("key: {found:?} is not supported (only \"user_id\")")]
    UnsupportedKey {
        /// The key given.
        found: String,
    },
    /// A window or threshold value is out of range.
    #[error("{field}: {message}")]
    InvalidValue {
        /// The field (`within_ms`, `over_ms`, `above`).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An expression was refused.
    #[error("{field}: {source}")]
    Expression {
        /// The field (`when`, `first`, `then`).
        field: &'static str,
        /// Why.
        source: ExpressionError,
    },
}

impl RuleError {
    /// The field of the rule at fault, for an HTTP 400 that names it.
    pub fn field(&self) -> &'static str {
        match self {
            Self::UnsupportedKey { .. } => "key",
            Self::InvalidValue { field, .. } | Self::Expression { field, .. } => field,
        }
    }

    /// Where in the field's expression, when known.
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::Expression { source, .. } => source.position(),
            _ => None,
        }
    }
}

/// A validated rule, ready to evaluate. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub(crate) spec: RuleSpec,
    pub(crate) key: KeyField,
    pub(crate) logic: Logic,
}

impl CompiledRule {
    /// The rule as written.
    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    /// The field events are partitioned by for this rule.
    pub fn key(&self) -> KeyField {
        self.key
    }

    /// The severity of its alerts.
    pub fn severity(&self) -> Severity {
        self.spec.severity
    }

    /// How long after an event this rule may still use it (its window), zero for a condition.
    pub(crate) fn window(&self) -> TimeDelta {
        match &self.logic {
            Logic::Condition { .. } => TimeDelta::zero(),
            Logic::Sequence { within, .. } | Logic::Absence { within, .. } => *within,
            Logic::Threshold { over, .. } => *over,
        }
    }
}

/// The compiled form of each kind.
#[derive(Debug, Clone)]
pub(crate) enum Logic {
    Condition {
        when: Expression,
    },
    Sequence {
        first: Expression,
        then: Expression,
        within: TimeDelta,
        strict: bool,
    },
    Absence {
        first: Expression,
        then: Expression,
        within: TimeDelta,
    },
    Threshold {
        when: Expression,
        aggregate: Aggregate,
        over: TimeDelta,
        above: i64,
    },
}

/// Validates `spec`: the key, the windows, and every expression (length, nesting, syntax,
/// variables, and a dry run on sample events that must give a bool).
pub fn compile(spec: &RuleSpec) -> Result<CompiledRule, RuleError> {
    let key = KeyField::parse(&spec.key).ok_or_else(|| RuleError::UnsupportedKey {
        found: spec.key.clone(),
    })?;
    let logic = match &spec.kind {
        Kind::Condition { when } => Logic::Condition {
            when: expression("when", when, Scope::Single)?,
        },
        Kind::Sequence {
            first,
            then,
            within,
            strict,
        } => Logic::Sequence {
            first: expression("first", first, Scope::Single)?,
            then: expression("then", then, Scope::Pair)?,
            within: window("within_ms", *within)?,
            strict: *strict,
        },
        Kind::Absence {
            first,
            then,
            within,
        } => Logic::Absence {
            first: expression("first", first, Scope::Single)?,
            then: expression("then", then, Scope::Pair)?,
            within: window("within_ms", *within)?,
        },
        Kind::Threshold {
            when,
            aggregate,
            over,
            above,
        } => Logic::Threshold {
            when: expression("when", when, Scope::Single)?,
            aggregate: *aggregate,
            over: window("over_ms", *over)?,
            above: threshold(*aggregate, *above)?,
        },
    };
    Ok(CompiledRule {
        spec: spec.clone(),
        key,
        logic,
    })
}

fn expression(field: &'static str, source: &str, scope: Scope) -> Result<Expression, RuleError> {
    let to_rule_error = |source| RuleError::Expression { field, source };
    let parsed = Expression::parse(source, scope).map_err(to_rule_error)?;
    dry_run(&parsed, scope).map_err(to_rule_error)?;
    Ok(parsed)
}

/// The crate has no type checker: evaluating on samples that differ in every field catches
/// the type errors that show at run time (`amount_cents > "x"`), on either side of `&&`/`||`.
fn dry_run(expression: &Expression, scope: Scope) -> Result<(), ExpressionError> {
    let [small, large] = sample_events();
    let cases = match scope {
        Scope::Single => vec![Bindings::Single(&small), Bindings::Single(&large)],
        Scope::Pair => vec![
            Bindings::Pair {
                a: &small,
                b: &large,
            },
            Bindings::Pair {
                a: &large,
                b: &small,
            },
        ],
    };
    for bindings in cases {
        match expression.matches(bindings) {
            Ok(_) => {}
            Err(EvalError::NotBool(found)) => return Err(ExpressionError::NotBool { found }),
            Err(EvalError::Failed(message)) => {
                return Err(ExpressionError::FailsOnSample { message });
            }
        }
    }
    Ok(())
}

fn sample_events() -> [Event; 2] {
    let at = Utc
        .timestamp_opt(1_700_000_000, 0)
        .single()
        .unwrap_or_default();
    let sample = |amount_cents, currency: &str, location: &str, at| Event {
        transaction_id: format!("sample-{amount_cents}"),
        user_id: "sample-user".to_owned(),
        amount_cents,
        currency: currency.to_owned(),
        location: location.to_owned(),
        occurred_at: at,
    };
    [
        sample(0, "CNY", "Shanghai", at),
        sample(1_500_000, "USD", "Beijing", at + TimeDelta::seconds(90)),
    ]
}

fn window(field: &'static str, value: Duration) -> Result<TimeDelta, RuleError> {
    let invalid = |message: String| RuleError::InvalidValue { field, message };
    if value.is_zero() {
        return Err(invalid("must be more than 0".to_owned()));
    }
    if value > MAX_WINDOW {
        return Err(invalid(format!(
            "must be at most {} ms",
            MAX_WINDOW.as_millis()
        )));
    }
    TimeDelta::from_std(value).map_err(|error| invalid(error.to_string()))
}

fn threshold(aggregate: Aggregate, above: i64) -> Result<i64, RuleError> {
    let invalid = |message: String| {
        Err(RuleError::InvalidValue {
            field: "above",
            message,
        })
    };
    if above < 0 {
        return invalid("must be 0 or more".to_owned());
    }
    let cap = i64::try_from(MAX_THRESHOLD_EVENTS).unwrap_or(i64::MAX);
    if aggregate == Aggregate::Count && above >= cap {
        return invalid(format!(
            "a count must stay below {cap}, the events kept per key"
        ));
    }
    Ok(above)
}
