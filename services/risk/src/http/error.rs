//! API errors, in the order API's shape: a status and `{"error": code, "message", "field"}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
        let (status, code) = match &self {
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::InvalidRule(_) => (StatusCode::BAD_REQUEST, "invalid_rule"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NoTokenSecret => (StatusCode::SERVICE_UNAVAILABLE, "no_token_secret"),
            Self::FeedStarting => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Unavailable(error) => {
                tracing::warn!(%error, "database unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::ReconcileUnavailable { error, .. } => {
                tracing::warn!(%error, "reconcile unreachable");
                (StatusCode::SERVICE_UNAVAILABLE, "reconcile_unavailable")
            }
            Self::ReconcileBadAnswer { error, .. } => {
                tracing::warn!(%error, "reconcile's answer unreadable");
                (StatusCode::BAD_GATEWAY, "reconcile_bad_answer")
            }
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let body = match &self {
            Self::Invalid(invalid) => json!({
                "error": code,
                "field": invalid.field,
                "message": invalid.reason,
            }),
            Self::InvalidRule(error) => json!({
                "error": code,
                "field": rule_field(error),
                "message": error.to_string(),
                "line": error.position().map(|p| p.line),
                "column": error.position().map(|p| p.column),
            }),
            Self::Conflict(_) => json!({
                "error": code,
                "field": "transaction_id",
                "message": self.to_string(),
            }),
            _ => json!({"error": code, "message": self.to_string()}),
        };
        let mut response = (status, Json(body)).into_response();
        if let Self::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"risk\""),
            );
        }
        // Retrying helps a database restart, not a missing setting.
        if matches!(
            self,
            Self::Unavailable(_) | Self::FeedStarting | Self::ReconcileUnavailable { .. }
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
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
