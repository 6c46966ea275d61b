//! `msgkit token` as an operator runs it: the secret from the environment, the token on
//! stdout, verifiable by the service's key.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use msgkit::auth::{Role, TokenKey};

const SECRET: &str = "the secret the risk service verifies with";

#[tokio::test]
async fn a_printed_token_verifies_with_the_services_secret() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .env_remove("TOKEN_SECRET")
        .env("RISK_TOKEN_SECRET", SECRET)
        .args(["token", "--operator", "ops", "--ttl", "5m"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let claims = TokenKey::new(SECRET)
        .unwrap()
        .verify(token.trim(), chrono::Utc::now())
        .unwrap();
    assert_eq!((claims.sub.as_str(), claims.role), ("ops", Role::Operator));
}

#[tokio::test]
async fn without_a_secret_it_is_a_usage_error() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .env_remove("TOKEN_SECRET")
        .env_remove("RISK_TOKEN_SECRET")
        .args(["token", "--user", "u-1"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("RISK_TOKEN_SECRET"));
}
