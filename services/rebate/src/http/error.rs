//! API errors, in the kit's problem shape: a status and `{"error": code, "message", "field"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use msgkit::http::Problem;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A path or query value is invalid (422).
    #[error("{field}: {reason}")]
    Invalid {
        /// Its name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The database cannot be reached right now (503).
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(#[source] sqlx::Error),
    /// No valid token (401): missing, malformed, wrongly signed or expired. The reason never
    /// includes the token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The token is valid but not for this customer (403).
    #[error("a user's token shows only that user's rebates")]
    Forbidden,
    /// The balance feed's listener is not listening yet (503: starting, or no database).
    #[error("the balance feed is starting; retry shortly")]
    FeedStarting,
    /// The service has no token secret, so it cannot verify tokens (503).
    #[error("no token secret configured (REBATE_TOKEN_SECRET or TOKEN_SECRET)")]
    NoTokenSecret,
    /// The token does not allow this request (401, 403, or 503 without a secret).
    #[error("{0}")]
    Denied(msgkit::auth::Denied),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let unavailable = |code| Problem::new(StatusCode::SERVICE_UNAVAILABLE, code, &message);
        let problem = match &self {
            Self::Invalid { field, reason } => Problem::invalid(*field, reason),
            Self::Unauthorized(_) => Problem::unauthorized("Bearer realm=\"rebate\"", &message),
            Self::Forbidden => Problem::new(StatusCode::FORBIDDEN, "forbidden", &message),
            Self::Denied(denied) => denied.problem("Bearer realm=\"rebate\""),
            // Retrying helps a database restart, not a missing setting.
            Self::NoTokenSecret => unavailable("no_token_secret").not_retryable(),
            Self::FeedStarting => unavailable("unavailable"),
            Self::Unavailable(error) => Problem::database(error),
            Self::Internal(error) => Problem::internal(error.as_ref()),
        };
        problem.into_response()
    }
}
