//! API errors, in the order API's shape: a status and `{"error": code, "message", "field"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use msgkit::http::Problem;

/// A request field that is missing or invalid: `field` is its name in the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// The field's name in the request, e.g. `amount`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidField {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A body of the wrong shape, named by the field at fault (serde names a missing field in
    /// its message, not its path).
    pub(crate) fn from_serde(error: &serde_path_to_error::Error<serde_json::Error>) -> Self {
        let message = error.inner().to_string();
        let field = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map_or_else(|| error.path().to_string(), str::to_owned);
        Self::new(field, message)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing or invalid (422).
    #[error("{0}")]
    Invalid(InvalidField),
    /// The body is not JSON (400).
    #[error("{0}")]
    MalformedJson(String),
    /// A rule that does not compile (400), naming the field and the position.
    #[error("{0}")]
    InvalidRule(crate::RuleError),
    /// No such rule (404).
    #[error("not found")]
    NotFound,
    /// The transaction id was recorded before with other content (409).
    #[error("transaction {0} was already recorded with different content")]
    Conflict(String),
    /// The database cannot be reached right now; nothing was stored (503).
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(#[source] sqlx::Error),
    /// No valid token (401): missing, malformed, wrongly signed or expired. The reason never
    /// includes the token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The token is valid but does not allow this (403): a user asking for another's alerts.
    #[error("a user's token shows only that user's alerts")]
    Forbidden,
    /// The token does not allow this request (401, 403, or 503 without a secret).
    #[error("{0}")]
    Denied(msgkit::auth::Denied),
    /// The alert feed's listener is not listening yet (503: the service is starting, or
    /// cannot reach the database).
    #[error("the alert feed is starting; retry shortly")]
    FeedStarting,
    /// The service has no token secret, so it cannot verify tokens (503).
    #[error("no token secret configured (RISK_TOKEN_SECRET or TOKEN_SECRET)")]
    NoTokenSecret,
    /// The reconcile service did not answer in time (503): down, starting, or elsewhere.
    #[error("the reconcile service ({url}) cannot be reached; retry later")]
    ReconcileUnavailable {
        /// Where risk looks for it (`RISK_RECONCILE_URL`).
        url: String,
        /// Why the request failed (refused, timed out, ...).
        #[source]
        error: reqwest::Error,
    },
    /// The reconcile service answered, but its answer could not be read (502).
    #[error("the reconcile service ({url}) gave an answer that cannot be read")]
    ReconcileBadAnswer {
        /// Where risk looks for it.
        url: String,
        /// Why reading it failed.
        #[source]
        error: reqwest::Error,
    },
    /// Something on our side failed; details are logged, not returned (500).
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if msgkit::database::is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Internal(error.into())
        }
    }
}

/// Writing the outbox row failed: on the database like any statement (a restart in progress
/// is 503), or serialising (ours to fix: 500).
impl From<msgkit::outbox::OutboxError> for ApiError {
    fn from(error: msgkit::outbox::OutboxError) -> Self {
        match error {
            msgkit::outbox::OutboxError::Database(error) => error.into(),
            other => Self::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let unavailable = |code| Problem::new(StatusCode::SERVICE_UNAVAILABLE, code, &message);
        let problem = match &self {
            Self::Invalid(invalid) => Problem::invalid(&invalid.field, &invalid.reason),
            Self::MalformedJson(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed_json", &message)
            }
            Self::Conflict(_) => {
                Problem::new(StatusCode::CONFLICT, "conflict", &message).field("transaction_id")
            }
            Self::InvalidRule(error) => {
                let position = error.position();
                Problem::new(StatusCode::BAD_REQUEST, "invalid_rule", &message)
                    .field(rule_field(error))
                    .with("line", position.map(|p| p.line))
                    .with("column", position.map(|p| p.column))
            }
            Self::NotFound => Problem::new(StatusCode::NOT_FOUND, "not_found", &message),
            Self::Unauthorized(_) => Problem::unauthorized("Bearer realm=\"risk\"", &message),
            Self::Forbidden => Problem::new(StatusCode::FORBIDDEN, "forbidden", &message),
            Self::Denied(denied) => denied.problem("Bearer realm=\"risk\""),
            // Retrying helps a database restart, not a missing setting.
            Self::NoTokenSecret => unavailable("no_token_secret").not_retryable(),
            Self::FeedStarting => unavailable("unavailable"),
            Self::Unavailable(error) => Problem::database(error),
            Self::ReconcileUnavailable { error, .. } => {
                tracing::warn!(%error, "reconcile unreachable");
                unavailable("reconcile_unavailable")
            }
            Self::ReconcileBadAnswer { error, .. } => {
                tracing::warn!(%error, "reconcile's answer unreadable");
                Problem::new(StatusCode::BAD_GATEWAY, "reconcile_bad_answer", &message)
            }
            Self::Internal(error) => Problem::internal(error.as_ref()),
        };
        problem.into_response()
    }
}

/// The field of a refused rule as the request names it: expressions and windows are inside
/// `kind`.
fn rule_field(error: &crate::RuleError) -> String {
    match error.field() {
        "key" => "key".to_owned(),
        field => format!("kind.{field}"),
    }
}
