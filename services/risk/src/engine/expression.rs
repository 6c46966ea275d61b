//! CEL expressions: parsed safely, checked against the variables a rule may use, evaluated
//! against one event or a pair.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr, IdedExpr};
use cel::{Context, Env, Value};
use serde::Serialize;
use thiserror::Error;

use super::event::Event;

/// Longest expression accepted, in characters: bounds parse and evaluation time.
pub const MAX_EXPRESSION_CHARS: usize = 2_000;
/// Deepest nesting of `(`, `[` and `{` accepted, counted before parsing.
pub const MAX_NESTING: usize = 32;
/// The CEL parser (ANTLR) and its AST visitor recurse; a parse runs on a thread of its own with
/// this much stack so a hostile expression cannot overflow a service worker's stack.
const PARSER_STACK_BYTES: usize = 8 * 1024 * 1024;
/// The parser's own limit on its recursion (operator chains such as `1 + 1 + ...` nest
/// without brackets); it also bounds the recursion of evaluation, which runs on the caller's
/// thread.
const MAX_PARSER_RECURSION: u16 = 64;

/// Deepest expression tree accepted. Binary operators nest without brackets (`1 + 1 + ...` is
/// as deep as it is long) and evaluation recurses on the caller's thread, so the depth bounds
/// its stack: 32 levels fit a 2 MiB worker stack (tokio's default) even in a debug build, where
/// a level takes tens of KiB (64 levels overflowed it).
pub const MAX_TREE_DEPTH: usize = 32;

/// The fields an expression sees for one event, by name.
const EVENT_FIELDS: [&str; 5] = [
    "amount_cents",
    "currency",
    "location",
    "user_id",
    "occurred_at",
];

/// The standard library, built once: building it registers every standard overload.
static ENVIRONMENT: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A place in an expression, both counted from 1, as the parser reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExpressionError {
    /// Nothing but white space.
    #[error("the expression is empty")]
    Empty,
    /// Over [`MAX_EXPRESSION_CHARS`].
    #[error("the expression is {length} characters long, over the limit of {limit}")]
    TooLong {
        /// Its length in characters.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// Brackets nested deeper than [`MAX_NESTING`].
    #[error("brackets nest deeper than {limit} levels at {position}")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// The bracket that went over it.
        position: Position,
    },
    /// The parser refused it.
    #[error("{message}")]
    Syntax {
        /// The parser's message.
        message: String,
        /// Where, when the parser says.
        position: Option<Position>,
    },
    /// Its expression tree is deeper than [`MAX_TREE_DEPTH`] (a long operator chain).
    #[error("the expression is {depth} operations deep, over the limit of {limit}")]
    TooComplex {
        /// Its depth.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// It names variables that do not exist where it is used.
    #[error("unknown variable(s) {}: this expression can use {}", names.join(", "), allowed.join(", "))]
    UnknownVariables {
        /// The unknown names, sorted.
        names: Vec<String>,
        /// The names it may use.
        allowed: Vec<&'static str>,
    },
    /// It fails on a sample event, e.g. `amount_cents > "x"` (the crate has no type checker).
    #[error("fails on a sample event: {message}")]
    FailsOnSample {
        /// The evaluation error.
        message: String,
    },
    /// It evaluates to something other than a bool.
    #[error("evaluates to {found}, not a bool")]
    NotBool {
        /// The type found.
        found: String,
    },
    /// The parser thread could not be started or died.
    #[error("the parser failed: {0}")]
    ParserFailed(String),
}

impl ExpressionError {
    /// Where in the expression the problem is, when known.
    pub fn position(&self) -> Option<Position> {
        match self {
            Self::TooDeep { position, .. } => Some(*position),
            Self::Syntax { position, .. } => *position,
            _ => None,
        }
    }
}

/// Why an evaluation gave no answer: a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum EvalError {
    /// The value was not a bool.
    #[error("evaluates to {0}, not a bool")]
    NotBool(String),
    /// CEL raised an error (no such overload, no such key, overflow, ...).
    #[error("{0}")]
    Failed(String),
}

/// Which variables an expression is evaluated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The event's fields, bare (`amount_cents > 100`).
    Single,
    /// `a.*` (the first event), `b.*` and the bare fields (both the second event).
    Pair,
}

impl Scope {
    fn allowed(self) -> Vec<&'static str> {
        let mut names = EVENT_FIELDS.to_vec();
        if self == Self::Pair {
            names.extend(["a", "b"]);
        }
        names
    }
}

/// What an expression is evaluated against.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bindings<'e> {
    /// One event, bare.
    Single(&'e Event),
    /// The first event as `a`, the second as `b` and bare.
    Pair {
        /// The event that started the match.
        a: &'e Event,
        /// The event being considered.
        b: &'e Event,
    },
}

/// A parsed, checked expression that evaluates to a bool.
#[derive(Clone)]
pub(crate) struct Expression {
    source: String,
    program: Arc<cel::parser::Expression>,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

impl Expression {
    /// Checks the limits, parses on a large-stack thread and refuses unknown variables.
    /// Whether it evaluates to a bool is checked by the caller's dry run.
    pub(crate) fn parse(source: &str, scope: Scope) -> Result<Self, ExpressionError> {
        if source.trim().is_empty() {
            return Err(ExpressionError::Empty);
        }
        let length = source.chars().count();
        if length > MAX_EXPRESSION_CHARS {
            return Err(ExpressionError::TooLong {
                length,
                limit: MAX_EXPRESSION_CHARS,
            });
        }
        check_nesting(source)?;
        let program = parse_on_large_stack(source.to_owned())?;
        let allowed = scope.allowed();
        let mut unknown: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .filter(|name| !allowed.contains(name))
            .map(str::to_owned)
            .collect();
        if !unknown.is_empty() {
            unknown.sort();
            return Err(ExpressionError::UnknownVariables {
                names: unknown,
                allowed,
            });
        }
        Ok(Self {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    /// The expression as written.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against `bindings`.
    pub(crate) fn matches(&self, bindings: Bindings<'_>) -> Result<bool, EvalError> {
        let mut context = Context::with_env(Arc::clone(&ENVIRONMENT));
        match bindings {
            Bindings::Single(event) => bind_bare(&mut context, event),
            Bindings::Pair { a, b } => {
                bind_bare(&mut context, b);
                context.add_variable_from_value("a", event_map(a));
                context.add_variable_from_value("b", event_map(b));
            }
        }
        match Value::resolve(&self.program, &context) {
            Ok(Value::Bool(matched)) => Ok(matched),
            Ok(other) => Err(EvalError::NotBool(other.type_of().to_string())),
            Err(error) => Err(EvalError::Failed(error.to_string())),
        }
    }
}

fn bind_bare(context: &mut Context<'_, '_>, event: &Event) {
    for (name, value) in event_values(event) {
        context.add_variable_from_value(name, value);
    }
}

fn event_map(event: &Event) -> HashMap<String, Value> {
    event_values(event)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

fn event_values(event: &Event) -> [(&'static str, Value); 5] {
    [
        ("amount_cents", Value::Int(event.amount_cents)),
        ("currency", Value::from(event.currency.clone())),
        ("location", Value::from(event.location.clone())),
        ("user_id", Value::from(event.user_id.clone())),
        (
            "occurred_at",
            Value::Timestamp(event.occurred_at.fixed_offset()),
        ),
    ]
}

/// Counts bracket depth outside string literals, so a deeply nested expression is refused
/// before the recursive parser sees it.
fn check_nesting(source: &str) -> Result<(), ExpressionError> {
    let (mut depth, mut line, mut column) = (0usize, 1u32, 0u32);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for character in source.chars() {
        column += 1;
        if character == '\n' {
            (line, column) = (line + 1, 0);
        }
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if character == '\\' {
                escaped = true;
            } else if character == open {
                quote = None;
            }
            continue;
        }
        match character {
            '\'' | '"' => quote = Some(character),
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    let position = Position { line, column };
                    return Err(ExpressionError::TooDeep {
                        limit: MAX_NESTING,
                        position,
                    });
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn parse_on_large_stack(source: String) -> Result<IdedExpr, ExpressionError> {
    let parser = std::thread::Builder::new()
        .name("cel-parse".to_owned())
        .stack_size(PARSER_STACK_BYTES)
        .spawn(move || {
            let parser = ENVIRONMENT
                .parser()
                .max_recursion_depth(MAX_PARSER_RECURSION);
            let program = parser.parse(&source).map_err(syntax_error)?;
            // Checked here so a refused deep tree is also dropped (recursively) on this stack.
            match tree_depth(&program) {
                depth if depth > MAX_TREE_DEPTH => Err(ExpressionError::TooComplex {
                    depth,
                    limit: MAX_TREE_DEPTH,
                }),
                _ => Ok(program),
            }
        })
        .map_err(|error| ExpressionError::ParserFailed(error.to_string()))?;
    parser
        .join()
        .map_err(|_| ExpressionError::ParserFailed("the parser thread panicked".to_owned()))?
}

/// The depth of the tree, walked without recursion.
fn tree_depth(root: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        let mut children: Vec<&IdedExpr> = Vec::new();
        match &node.expr {
            Expr::Call(call) => {
                children.extend(call.target.as_deref());
                children.extend(&call.args);
            }
            Expr::Comprehension(comprehension) => children.extend([
                &comprehension.iter_range,
                &comprehension.accu_init,
                &comprehension.loop_cond,
                &comprehension.loop_step,
                &comprehension.result,
            ]),
            Expr::List(list) => children.extend(&list.elements),
            Expr::Map(map) => children.extend(map.entries.iter().flat_map(entry_children)),
            Expr::Struct(object) => children.extend(object.entries.iter().flat_map(entry_children)),
            Expr::Select(select) => children.push(&select.operand),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
        stack.extend(children.into_iter().map(|child| (child, depth + 1)));
    }
    deepest
}

fn entry_children(entry: &IdedEntryExpr) -> Vec<&IdedExpr> {
    match &entry.expr {
        EntryExpr::StructField(field) => vec![&field.value],
        EntryExpr::MapEntry(pair) => vec![&pair.key, &pair.value],
    }
}

fn syntax_error(errors: cel::ParseErrors) -> ExpressionError {
    let first = errors.errors.first();
    ExpressionError::Syntax {
        message: first.map_or_else(|| errors.to_string(), |error| error.msg.clone()),
        position: first.and_then(|error| {
            let line = u32::try_from(error.pos.0).ok().filter(|line| *line > 0)?;
            let column = u32::try_from(error.pos.1)
                .ok()
                .filter(|column| *column > 0)?;
            Some(Position { line, column })
        }),
    }
}
