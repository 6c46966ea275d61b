//! TLS to the broker: an `amqps://` URL is verified against the CA given in
//! `AMQP_TLS_CA_CERT` (PEM; usually `AMQP_TLS_CA_CERT_FILE=/path/ca.pem`) and only that CA: no
//! built-in roots, so a certificate from any other authority is refused. A client certificate
//! (`AMQP_TLS_CLIENT_CERT` and `AMQP_TLS_CLIENT_KEY`, PEM) is presented when both are given,
//! for a broker that authenticates clients by certificate. rustls with ring does the work.

use std::fmt;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use secrecy::{ExposeSecret, SecretSlice};

use crate::config::{ConfigError, Lookup};

/// The CA (PEM) that signed the broker's certificate.
pub const CA_CERT: &str = "AMQP_TLS_CA_CERT";
/// This client's certificate (PEM), presented when the broker asks.
pub const CLIENT_CERT: &str = "AMQP_TLS_CLIENT_CERT";
/// The private key (PEM) of [`CLIENT_CERT`].
pub const CLIENT_KEY: &str = "AMQP_TLS_CLIENT_KEY";

/// What a TLS connection to the broker trusts and presents.
#[derive(Clone, Default)]
pub struct BrokerTls {
    ca: Option<String>,
    client: Option<(Vec<u8>, SecretSlice<u8>)>,
}

impl fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerTls")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl BrokerTls {
    /// Trust `ca_pem` (one or more PEM certificates) only.
    pub fn with_ca(ca_pem: impl Into<String>) -> Result<Self, ConfigError> {
        let ca = ca_pem.into();
        check_certificate(CA_CERT, &ca)?;
        Ok(Self {
            ca: Some(ca),
            client: None,
        })
    }

    /// Also present `cert_pem` with its `key_pem` (mutual TLS).
    pub fn with_client(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Result<Self, ConfigError> {
        let cert = cert_pem.into();
        check_certificate(CLIENT_CERT, &String::from_utf8_lossy(&cert))?;
        let key: Vec<u8> = key_pem.into();
        if !String::from_utf8_lossy(&key).contains("PRIVATE KEY-----") {
            return Err(invalid(CLIENT_KEY, "not a PEM private key"));
        }
        self.client = Some((cert, SecretSlice::from(key)));
        Ok(self)
    }

    /// From [`CA_CERT`], [`CLIENT_CERT`] and [`CLIENT_KEY`] (each may be given as a file,
    /// `NAME_FILE`). `None` when no CA is given; `tls_needed` (an `amqps://` URL) makes that
    /// an error, since nothing could verify the broker.
    pub fn from_config(
        config: &impl Lookup,
        tls_needed: bool,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(ca) = config.get(CA_CERT) else {
            if tls_needed {
                return Err(invalid(
                    CA_CERT,
                    "AMQP_URL is amqps:// but no CA is given to verify the broker's certificate \
                     against: set AMQP_TLS_CA_CERT_FILE to the CA's PEM file",
                ));
            }
            return Ok(None);
        };
        let tls = Self::with_ca(ca)?;
        match (config.get(CLIENT_CERT), config.get(CLIENT_KEY)) {
            (None, None) => Ok(Some(tls)),
            (Some(cert), Some(key)) => tls.with_client(cert, key).map(Some),
            (Some(_), None) => Err(invalid(CLIENT_KEY, "a client certificate needs its key")),
            (None, Some(_)) => Err(invalid(CLIENT_CERT, "a client key needs its certificate")),
        }
    }

    /// lapin's form of it.
    pub(crate) fn to_lapin(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: self
                .client
                .as_ref()
                .map(|(cert, key)| OwnedIdentity::PKCS8 {
                    pem: cert.clone(),
                    key: key.expose_secret().to_vec(),
                }),
            cert_chain: self.ca.clone(),
        }
    }
}

/// Whether `url` asks for TLS.
pub(crate) fn is_tls_url(url: &str) -> bool {
    url.trim_start()
        .to_ascii_lowercase()
        .starts_with("amqps://")
}

fn check_certificate(name: &str, pem: &str) -> Result<(), ConfigError> {
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        Ok(())
    } else {
        Err(invalid(
            name,
            &format!("not a PEM certificate (to name a file, set {name}_FILE instead)"),
        ))
    }
}

/// An error that never quotes the value (a key, or a certificate nobody needs to read twice).
fn invalid(name: &str, reason: &str) -> ConfigError {
    ConfigError {
        name: name.to_owned(),
        value: "<not shown>".to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigSource;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nsecret-key-material\n-----END PRIVATE KEY-----\n";

    #[test]
    fn an_amqps_url_without_a_ca_is_a_configuration_error() {
        let none = ConfigSource::default();
        assert!(BrokerTls::from_config(&none, false).unwrap().is_none());
        let error = BrokerTls::from_config(&none, true).unwrap_err();
        assert_eq!(error.name, CA_CERT);
        assert!(error.reason.contains("AMQP_TLS_CA_CERT_FILE"), "{error}");
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_the_key_is_never_shown() {
        let only_cert = ConfigSource::from_pairs([(CA_CERT, CERT), (CLIENT_CERT, CERT)]);
        assert_eq!(
            BrokerTls::from_config(&only_cert, true).unwrap_err().name,
            CLIENT_KEY
        );
        let both =
            ConfigSource::from_pairs([(CA_CERT, CERT), (CLIENT_CERT, CERT), (CLIENT_KEY, KEY)]);
        let tls = BrokerTls::from_config(&both, true).unwrap().unwrap();
        assert!(!format!("{tls:?}").contains("secret-key-material"));
        let lapin = tls.to_lapin();
        assert_eq!(lapin.cert_chain.as_deref(), Some(CERT));
        assert!(matches!(lapin.identity, Some(OwnedIdentity::PKCS8 { .. })));

        let not_pem = ConfigSource::from_pairs([(CA_CERT, "/etc/ssl/ca.pem")]);
        let error = BrokerTls::from_config(&not_pem, true).unwrap_err();
        assert!(error.reason.contains("AMQP_TLS_CA_CERT_FILE"), "{error}");
        assert!(!error.to_string().contains("/etc/ssl"), "{error}");
    }

    #[test]
    fn amqps_urls_are_recognised() {
        assert!(is_tls_url("amqps://u:p@h:5671/%2f"));
        assert!(is_tls_url(" AMQPS://h"));
        assert!(!is_tls_url("amqp://h"));
    }
}
