//! Short-lived signed tokens: who a request is for (a subject), what it may do (a [`Role`]) and
//! until when, signed with HMAC-SHA256 under a secret the services share. A browser's
//! `EventSource` cannot send headers, so a token also travels as a query parameter: it is
//! short-lived for that reason, and services never log it.
//!
//! The format is `v1.<claims>.<signature>`, both parts base64url without padding, the
//! signature over `v1.<claims>`. Verification compares signatures in constant time, then
//! checks the expiry against the caller's clock (a test clock in tests).

mod access;

pub use access::{Denied, Need, authorize};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The shortest secret accepted: HMAC-SHA256's output size, as RFC 2104 recommends.
pub const MIN_SECRET_BYTES: usize = 32;

/// The longest a token may live: long enough for a page to refresh it before it ends, short
/// enough that a leaked URL stops working within the hour.
pub const MAX_TOKEN_LIFETIME: TimeDelta = TimeDelta::hours(1);

const VERSION: &str = "v1";

/// The setting a service's token secret is read from: `<SERVICE>_TOKEN_SECRET`, else
/// `TOKEN_SECRET` (one secret for every stream of a system, or one per service).
pub const TOKEN_SECRET: &str = "TOKEN_SECRET";

impl TokenKey {
    /// `service`'s token key from its settings (see [`TOKEN_SECRET`]): `None` when no secret is
    /// set (its streams then answer 503), an error when one is set but shorter than
    /// [`MIN_SECRET_BYTES`]. The error never shows the secret.
    pub fn from_config(
        config: &crate::config::ConfigSource,
        service: &str,
    ) -> Result<Option<Self>, crate::config::ConfigError> {
        use crate::config::Lookup as _;
        let scoped = config.scoped(service);
        let Some(secret) = scoped.get(TOKEN_SECRET) else {
            return Ok(None);
        };
        Self::new(secret.as_bytes().to_vec())
            .map(Some)
            .map_err(|error| crate::config::ConfigError {
                name: format!(
                    "{}_{TOKEN_SECRET} or {TOKEN_SECRET}",
                    crate::config::env_prefix(service)
                ),
                value: "<redacted>".to_owned(),
                reason: error.to_string(),
            })
    }
}

/// Why a request's token was refused, in words a client may see (never the token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token at all.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    NotBearer,
    /// A token past its expiry.
    Expired,
    /// A token that does not verify (wrong secret, altered, malformed).
    Invalid,
}

impl Refusal {
    /// What to tell the client.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => {
                "a token is needed: Authorization: Bearer <token>, or ?access_token=<token>"
            }
            Self::NotBearer => "the Authorization header is not a Bearer token",
            Self::Expired => "the token expired",
            Self::Invalid => "the token is invalid",
        }
    }
}

/// The claims of a request's token: `Authorization: Bearer <token>`, else `query_token` (the
/// `access_token` parameter, for a browser's `EventSource`, which cannot send headers), verified
/// with `key` at `now`. A refusal is logged with its reason only, never the token.
pub fn authenticate(
    key: &TokenKey,
    headers: &axum::http::HeaderMap,
    query_token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Claims, Refusal> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or(Refusal::NotBearer)
        })
        .transpose()?;
    let token = header.or(query_token).ok_or(Refusal::Missing)?;
    key.verify(token, now).map_err(|error| {
        tracing::info!(%error, "token refused");
        match error {
            TokenError::Expired => Refusal::Expired,
            _ => Refusal::Invalid,
        }
    })
}

/// What a token's holder may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A user: their own data only.
    User,
    /// An operator: everyone's data, and changes (rules, tokens).
    Operator,
}

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Whom it is for: a user id, or an operator's name.
    pub sub: String,
    /// What they may do.
    pub role: Role,
    /// When it stops being valid, in seconds since the Unix epoch.
    pub exp: i64,
}

impl Claims {
    /// Claims for `sub` in `role`, valid for `lifetime` from `now` (at most
    /// [`MAX_TOKEN_LIFETIME`]).
    pub fn new(
        sub: impl Into<String>,
        role: Role,
        now: DateTime<Utc>,
        lifetime: TimeDelta,
    ) -> Self {
        let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
        Self {
            sub: sub.into(),
            role,
            exp: (now + lifetime).timestamp(),
        }
    }

    /// Whether these claims let their holder see `user`'s data.
    pub fn may_read(&self, user: &str) -> bool {
        self.role == Role::Operator || self.sub == user
    }
}

/// Why a token was refused. The messages never include the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The secret is too short to sign with.
    #[error("the token secret has {0} bytes; at least {MIN_SECRET_BYTES} are needed")]
    SecretTooShort(usize),
    /// Not a token of this format.
    #[error("the token is malformed")]
    Malformed,
    /// Signed with another secret, or altered.
    #[error("the token's signature does not match")]
    BadSignature,
    /// Past its expiry.
    #[error("the token expired")]
    Expired,
}

/// The shared secret that signs and verifies tokens. Its `Debug` does not show it.
#[derive(Clone)]
pub struct TokenKey(SecretSlice<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// A key from a secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, TokenError> {
        let secret: Vec<u8> = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TokenError::SecretTooShort(secret.len()));
        }
        Ok(Self(secret.into()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
    }

    /// A token carrying `claims`.
    pub fn issue(&self, claims: &Claims) -> String {
        // Serialising three plain fields cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let signed = format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(json));
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }

    /// The claims of `token` if this key signed it and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let claims = signed
            .strip_prefix(VERSION)
            .and_then(|rest| rest.strip_prefix('.'))
            .ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now.timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> TokenKey {
        TokenKey::new(vec![byte; MIN_SECRET_BYTES]).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_token_verifies_under_its_key_until_it_expires() {
        let claims = Claims::new("u-1", Role::User, now(), TimeDelta::minutes(15));
        let token = key(1).issue(&claims);
        assert_eq!(key(1).verify(&token, now()), Ok(claims.clone()));
        let at_expiry = now() + TimeDelta::minutes(15);
        assert_eq!(key(1).verify(&token, at_expiry), Err(TokenError::Expired));
        assert!(claims.may_read("u-1"));
        assert!(!claims.may_read("u-2"));
    }

    #[test]
    fn another_key_or_an_altered_token_is_refused() {
        let claims = Claims::new("u-1", Role::User, now(), TimeDelta::minutes(15));
        let token = key(1).issue(&claims);
        assert_eq!(key(2).verify(&token, now()), Err(TokenError::BadSignature));
        // The same signature over claims that say operator.
        let forged = Claims {
            role: Role::Operator,
            ..claims
        };
        let forged_claims = key(2).issue(&forged);
        let (_, signature) = token.rsplit_once('.').unwrap();
        let (signed, _) = forged_claims.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{signature}");
        assert_eq!(key(1).verify(&forged, now()), Err(TokenError::BadSignature));
        for garbage in ["", "v1", "v1.x", "v2.e30.AAAA", "v1.e30.%%%"] {
            assert_eq!(
                key(1).verify(garbage, now()),
                Err(TokenError::Malformed),
                "{garbage}"
            );
        }
    }

    #[test]
    fn lifetimes_are_capped_and_short_secrets_refused() {
        let claims = Claims::new("ops", Role::Operator, now(), TimeDelta::days(7));
        assert_eq!(claims.exp, (now() + MAX_TOKEN_LIFETIME).timestamp());
        assert_eq!(
            TokenKey::new(b"short".to_vec()).unwrap_err(),
            TokenError::SecretTooShort(5)
        );
        assert_eq!(format!("{:?}", key(7)), "TokenKey(<redacted>)");
    }

    #[test]
    fn a_request_is_authenticated_by_its_bearer_token_else_its_query_token() {
        use axum::http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
        let claims = Claims::new("u-1", Role::User, now(), TimeDelta::minutes(15));
        let token = key(1).issue(&claims);
        let mut headers = HeaderMap::new();
        assert_eq!(
            authenticate(&key(1), &headers, None, now()),
            Err(Refusal::Missing)
        );
        assert_eq!(
            authenticate(&key(1), &headers, Some(&token), now()),
            Ok(claims.clone())
        );
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        assert_eq!(
            authenticate(&key(1), &headers, Some("ignored"), now()),
            Ok(claims),
            "the header wins"
        );
        assert_eq!(
            authenticate(&key(2), &headers, None, now()),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            authenticate(&key(1), &headers, None, now() + TimeDelta::hours(1)),
            Err(Refusal::Expired)
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(
            authenticate(&key(1), &headers, None, now()),
            Err(Refusal::NotBearer)
        );
        assert!(!Refusal::Invalid.message().contains(&token));
    }
}
