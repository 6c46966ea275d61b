//! API errors, answered as every msgkit service does (`msgkit::http::Problem`).

use axum::response::{IntoResponse, Response};
use msgkit::http::Problem;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter is invalid (422): its name and why.
    #[error("{field}: {reason}")]
    Invalid {
        /// The parameter's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request's token does not allow it (401, 403, or 503 without a token secret).
    #[error("{0}")]
    Denied(msgkit::auth::Denied),
    /// The database cannot be reached right now (503).
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(#[source] sqlx::Error),
    /// Something on our side failed; details are logged, not returned (500).
    #[error("internal error")]
    Internal(#[source] sqlx::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if msgkit::database::is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Internal(error)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match &self {
            Self::Invalid { field, reason } => Problem::invalid(*field, reason),
            Self::Denied(denied) => denied.problem("Bearer realm=\"reconcile\""),
            Self::Unavailable(error) | Self::Internal(error) => Problem::database(error),
        };
        problem.into_response()
    }
}
