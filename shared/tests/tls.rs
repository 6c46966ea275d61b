//! TLS to the real broker (the stack's listener on 5671) and database (`ssl = on`), configured
//! as an operator would: the server is verified against the configured CA only, a server
//! certificate from another CA is refused with an error that says so, and a client
//! certificate is presented when one is configured. (The whole saga over TLS: the saga
//! crate's tests.)
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use msgkit::BrokerSettings;
use msgkit::config::ConfigSource;
use msgkit::database::DatabaseSettings;
use msgkit::testing::{TestBroker, TestDatabase, test_config, tls};

/// Broker settings read from `pairs` the way a service reads its own.
fn broker_settings(pairs: &[(&str, &str)]) -> BrokerSettings {
    let source = test_config(pairs.iter().copied())
        .with_files_read()
        .unwrap();
    let mut settings = BrokerSettings::from_config(&source, "test/tls").unwrap();
    settings.connect_timeout = Duration::from_secs(10);
    settings
}

fn path(file: &Path) -> &str {
    file.to_str().unwrap()
}

#[tokio::test]
async fn a_broker_connection_over_tls_is_verified_against_the_configured_ca() {
    let broker = TestBroker::create().await;
    let url = broker.amqps_url();
    let ca = tls::ca_file();
    let settings = broker_settings(&[("AMQP_URL", &url), ("AMQP_TLS_CA_CERT_FILE", path(&ca))]);
    let connection = settings.connect().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            "tls-check".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();

    // The same broker, its certificate checked against a CA that did not sign it.
    let other = broker_settings(&[
        ("AMQP_URL", &url),
        ("AMQP_TLS_CA_CERT_FILE", path(&tls::other_ca_file())),
    ]);
    let error = other.connect().await.unwrap_err().to_string();
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "the refusal says why: {error}"
    );
    assert!(!error.contains("guest:guest"), "no password: {error}");
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    let broker = TestBroker::create().await;
    let (cert, key) = tls::client_files();
    let settings = broker_settings(&[
        ("AMQP_URL", &broker.amqps_url()),
        ("AMQP_TLS_CA_CERT_FILE", path(&tls::ca_file())),
        ("AMQP_TLS_CLIENT_CERT_FILE", path(&cert)),
        ("AMQP_TLS_CLIENT_KEY_FILE", path(&key)),
    ]);
    let connection = settings.connect().await.unwrap();
    assert!(connection.status().connected());
    connection.close(200, "done".into()).await.unwrap();

    // A client certificate from another CA: the broker checks what it is shown and ends the
    // handshake.
    let (other_cert, other_key) = tls::other_client_files();
    let wrong = broker_settings(&[
        ("AMQP_URL", &broker.amqps_url()),
        ("AMQP_TLS_CA_CERT_FILE", path(&tls::ca_file())),
        ("AMQP_TLS_CLIENT_CERT_FILE", path(&other_cert)),
        ("AMQP_TLS_CLIENT_KEY_FILE", path(&other_key)),
    ]);
    assert!(wrong.connect().await.is_err());
}

#[tokio::test]
async fn an_amqps_url_without_a_ca_is_refused_before_connecting() {
    let broker = TestBroker::create().await;
    let source = ConfigSource::from_pairs([("AMQP_URL", broker.amqps_url())]);
    let error = BrokerSettings::from_config(&source, "test/tls").unwrap_err();
    assert_eq!(error.name, "AMQP_TLS_CA_CERT");
}

#[tokio::test]
async fn a_database_connection_over_tls_is_verified_against_the_configured_ca() {
    let db = TestDatabase::create().await;
    let settings = |ca: &Path| DatabaseSettings {
        url: db.tls_url(ca).into(),
        schema: "tls_check".to_owned(),
        max_connections: 2,
    };
    let pool = settings(&tls::ca_file()).connect().await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(encrypted);
    pool.close().await;

    let error = settings(&tls::other_ca_file())
        .connect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "the refusal says why: {error}"
    );
}
