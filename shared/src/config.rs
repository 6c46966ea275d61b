//! Reading settings from the environment, the one configuration source every service shares.
//! Each setting has a local default so `make run` needs no set-up.

use std::str::FromStr;
use std::time::Duration;

/// A setting that is present but unusable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub name: String,
    /// What it held.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// The variable's value, or `default` when it is unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => default.to_owned(),
    }
}

/// The variable parsed as `T`, or `default` when it is unset or empty.
pub fn env_parse<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            value.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_owned(),
                value: value.clone(),
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// A duration given in milliseconds, or `default` when unset.
pub fn env_millis(name: &str, default: Duration) -> Result<Duration, ConfigError> {
    let millis = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    env_parse(name, millis).map(Duration::from_millis)
}

/// The URL with any password replaced by `***`, safe for logs and error messages.
///
/// Works for `amqp://`, `postgres://` and `http://` URLs alike; anything it cannot parse is
/// returned as `<unparseable url>` rather than risk printing a secret.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable url>".to_owned();
    };
    // The authority ends at the first '/', '?' or '#'; userinfo is before its last '@'.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://app:p%40ss@db/orders?sslmode=disable"),
            "postgres://app:***@db/orders?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(redact_url("no scheme"), "<unparseable url>");
    }
}
