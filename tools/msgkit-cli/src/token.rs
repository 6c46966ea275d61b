//! `msgkit token`: a short-lived token for a service's stream (risk's alerts by default,
//! `--service rebate` for the balance stream), signed with the secret the service verifies with
//! (`<SERVICE>_TOKEN_SECRET`, else `TOKEN_SECRET`, from the environment only: a secret on the
//! command line would show in `ps` and shell history).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use clap::ArgGroup;
use msgkit::auth::{Claims, MAX_TOKEN_LIFETIME, Role, TokenKey};
use msgkit::config::{ConfigSource, Lookup as _};

use crate::CliError;

/// Whom the token is for and for how long.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("who").required(true).args(["user", "operator"])))]
pub struct TokenArgs {
    /// A user's token: their own alerts only.
    #[arg(long)]
    user: Option<String>,
    /// An operator's token (their name): everyone's alerts.
    #[arg(long)]
    operator: Option<String>,
    /// How long it stays valid (at most 1h).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The service whose secret signs it (`<SERVICE>_TOKEN_SECRET`, else `TOKEN_SECRET`).
    #[arg(long, default_value = "risk")]
    service: String,
}

/// Print a token for `args` on stdout.
pub fn run(args: TokenArgs, settings: &ConfigSource) -> Result<(), CliError> {
    let scoped = settings.scoped(&args.service);
    let secret = scoped.get(msgkit::auth::TOKEN_SECRET);
    println!("{}", issue(&args, secret, Utc::now())?);
    Ok(())
}

/// The token `args` ask for, signed with `secret`, valid from `now`.
fn issue(args: &TokenArgs, secret: Option<&str>, now: DateTime<Utc>) -> Result<String, CliError> {
    let secret = secret.ok_or_else(|| {
        let prefix = msgkit::config::env_prefix(&args.service);
        CliError::Usage(format!(
            "no token secret: set {prefix}_TOKEN_SECRET (or TOKEN_SECRET) to the {} service's",
            args.service
        ))
    })?;
    let key = TokenKey::new(secret.as_bytes().to_vec())
        .map_err(|error| CliError::Usage(error.to_string()))?;
    let ttl = TimeDelta::from_std(args.ttl).unwrap_or(TimeDelta::MAX);
    if ttl > MAX_TOKEN_LIFETIME || ttl <= TimeDelta::zero() {
        return Err(CliError::Usage(format!(
            "--ttl must be more than 0 and at most {}m",
            MAX_TOKEN_LIFETIME.num_minutes()
        )));
    }
    let (sub, role) = match (&args.user, &args.operator) {
        (Some(user), _) => (user, Role::User),
        (None, Some(operator)) => (operator, Role::Operator),
        (None, None) => return Err(CliError::Usage("--user or --operator".to_owned())),
    };
    Ok(key.issue(&Claims::new(sub.as_str(), role, now, ttl)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SECRET: &str = "a local development secret of 32+ bytes";

    fn args(user: Option<&str>, operator: Option<&str>, ttl: Duration) -> TokenArgs {
        TokenArgs {
            user: user.map(str::to_owned),
            operator: operator.map(str::to_owned),
            ttl,
            service: "risk".to_owned(),
        }
    }

    #[test]
    fn a_token_verifies_with_the_same_secret_and_says_whom_for() {
        let now = Utc::now();
        let token = issue(
            &args(Some("u-1"), None, Duration::from_secs(900)),
            Some(SECRET),
            now,
        )
        .unwrap();
        let claims = TokenKey::new(SECRET).unwrap().verify(&token, now).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("u-1", Role::User));
        assert_eq!(claims.exp, (now + TimeDelta::minutes(15)).timestamp());
        let token = issue(
            &args(None, Some("ops"), Duration::from_secs(60)),
            Some(SECRET),
            now,
        )
        .unwrap();
        let claims = TokenKey::new(SECRET).unwrap().verify(&token, now).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("ops", Role::Operator));
    }

    #[test]
    fn no_secret_a_short_one_or_a_long_ttl_is_a_usage_error() {
        let now = Utc::now();
        let user = args(Some("u-1"), None, Duration::from_secs(900));
        assert!(matches!(issue(&user, None, now), Err(CliError::Usage(_))));
        assert!(matches!(
            issue(&user, Some("short"), now),
            Err(CliError::Usage(_))
        ));
        let long = args(Some("u-1"), None, Duration::from_secs(2 * 3600));
        assert!(matches!(
            issue(&long, Some(SECRET), now),
            Err(CliError::Usage(_))
        ));
    }
}
