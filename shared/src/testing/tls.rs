//! The local stack's TLS files (`scripts/stack-tls.sh`): the CA that signed the certificate
//! RabbitMQ (127.0.0.1:5671) and PostgreSQL (5432, `ssl = on`) present, a client certificate,
//! and a CA that signed nothing here, for tests of TLS against the real servers.
//!
//! Environment: `TEST_TLS_DIR` (`/etc/msgkit/tls`), `TEST_AMQPS_ADDR` (`localhost:5671`).

use std::path::PathBuf;

use crate::config::{ConfigSource, Lookup};

/// Where the stack keeps its TLS files.
pub fn dir() -> PathBuf {
    PathBuf::from(ConfigSource::from_env().string("TEST_TLS_DIR", "/etc/msgkit/tls"))
}

/// The stack's CA certificate (PEM file).
pub fn ca_file() -> PathBuf {
    dir().join("ca.pem")
}

/// A CA certificate that signed neither server's certificate.
pub fn other_ca_file() -> PathBuf {
    dir().join("other-ca.pem")
}

/// A client certificate signed by the stack's CA, and its key (PEM files).
pub fn client_files() -> (PathBuf, PathBuf) {
    (dir().join("client.pem"), dir().join("client.key"))
}

/// A client certificate signed by [`other_ca_file`]'s CA, and its key.
pub fn other_client_files() -> (PathBuf, PathBuf) {
    (
        dir().join("other-client.pem"),
        dir().join("other-client.key"),
    )
}

/// The broker's TLS listener, named as its certificate names it.
pub fn amqps_addr() -> String {
    ConfigSource::from_env().string("TEST_AMQPS_ADDR", "localhost:5671")
}
