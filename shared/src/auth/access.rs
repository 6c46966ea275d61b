//! Who may do what through an HTTP API: a request's token (`Authorization: Bearer`) checked
//! for what an endpoint needs. An operator may read everyone's data and change things (rules,
//! tokens); a user may read their own data only.
//!
//! Endpoints other than live streams take the token from the header only: a token in a URL
//! ends up in proxies' and browsers' histories, which is why only `EventSource` streams,
//! which cannot send headers, accept `?access_token=` (see [`super::authenticate`]).

use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};

use super::{Claims, Refusal, Role, TokenKey, authenticate};
use crate::http::Problem;

/// What an endpoint needs of a request's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need<'a> {
    /// An operator's token: changes, and everyone's data.
    Operator,
    /// A token that may read this user's data: theirs, or an operator's.
    ReadOf(&'a str),
    /// Any valid token (the endpoint then narrows what it shows by the claims).
    Any,
}

/// Why a request may not do what it asks. The messages never include the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The service has no token secret, so it cannot check tokens (503).
    #[error("no token secret is configured, so no token can be checked")]
    NoSecret,
    /// No valid token (401).
    #[error("{}", .0.message())]
    Unauthenticated(Refusal),
    /// A valid token that does not allow this (403).
    #[error("{0}")]
    Forbidden(&'static str),
}

impl Denied {
    /// The answer to give: 503, 401 (with `WWW-Authenticate: <challenge>`, e.g.
    /// `Bearer realm="risk"`) or 403.
    pub fn problem(self, challenge: &'static str) -> Problem {
        match self {
            Self::NoSecret => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_token_secret",
                self.to_string(),
            )
            .not_retryable(),
            Self::Unauthenticated(_) => Problem::unauthorized(challenge, self.to_string()),
            Self::Forbidden(message) => Problem::new(StatusCode::FORBIDDEN, "forbidden", message),
        }
    }
}

/// The claims of a request whose token (from `Authorization: Bearer`) allows `need`, checked
/// with `key` at `now`.
pub fn authorize(
    key: Option<&TokenKey>,
    headers: &HeaderMap,
    need: Need<'_>,
    now: DateTime<Utc>,
) -> Result<Claims, Denied> {
    let key = key.ok_or(Denied::NoSecret)?;
    let claims = authenticate(key, headers, None, now).map_err(Denied::Unauthenticated)?;
    match need {
        Need::Operator if claims.role != Role::Operator => {
            Err(Denied::Forbidden("this needs an operator's token"))
        }
        Need::ReadOf(user) if !claims.may_read(user) => Err(Denied::Forbidden(
            "a user's token gives access to that user's own data only",
        )),
        _ => Ok(claims),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn headers(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn operators_may_do_everything_and_users_read_only_their_own() {
        let key = TokenKey::new(vec![7u8; 32]).unwrap();
        let now = Utc::now();
        let token =
            |sub: &str, role| key.issue(&Claims::new(sub, role, now, TimeDelta::minutes(5)));
        let operator = headers(&token("ops", Role::Operator));
        let user = headers(&token("c-1", Role::User));
        for need in [Need::Operator, Need::ReadOf("c-2"), Need::Any] {
            assert!(authorize(Some(&key), &operator, need, now).is_ok());
        }
        assert!(authorize(Some(&key), &user, Need::ReadOf("c-1"), now).is_ok());
        assert!(authorize(Some(&key), &user, Need::Any, now).is_ok());
        assert!(matches!(
            authorize(Some(&key), &user, Need::ReadOf("c-2"), now),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            authorize(Some(&key), &user, Need::Operator, now),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(
            authorize(Some(&key), &HeaderMap::new(), Need::Any, now),
            Err(Denied::Unauthenticated(Refusal::Missing))
        );
        assert_eq!(
            authorize(None, &operator, Need::Any, now),
            Err(Denied::NoSecret)
        );
        let expired = headers(&key.issue(&Claims::new(
            "ops",
            Role::Operator,
            now - TimeDelta::hours(2),
            TimeDelta::minutes(5),
        )));
        assert_eq!(
            authorize(Some(&key), &expired, Need::Operator, now),
            Err(Denied::Unauthenticated(Refusal::Expired))
        );
        assert_eq!(
            Denied::Forbidden("x").problem("Bearer").status(),
            StatusCode::FORBIDDEN
        );
    }
}
