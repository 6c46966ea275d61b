//! Callback signatures, as real gateways sign their webhooks: HMAC-SHA256 over the exact body
//! bytes under a secret shared with the merchant, hex in the [`SIGNATURE_HEADER`] header as
//! `sha256=<hex>`. The receiver verifies the bytes it got before parsing them, in constant
//! time. There is no timestamp in the signature: a replayed callback is the same callback id,
//! which the receiver stores once.

use hmac::{Hmac, KeyInit, Mac};
use msgkit::auth::MIN_SECRET_BYTES;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Gateway-Signature";

const SCHEME: &str = "sha256=";

/// Why a signature was refused, or a key could not be made. Never includes the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The secret is too short to sign with.
    #[error("GATEWAY_CALLBACK_SECRET has {0} bytes; at least {MIN_SECRET_BYTES} are needed")]
    SecretTooShort(usize),
    /// No signature header.
    #[error("missing {SIGNATURE_HEADER} header")]
    Missing,
    /// Not `sha256=<64 hex digits>`.
    #[error("{SIGNATURE_HEADER} must be sha256=<hex>")]
    Malformed,
    /// Signed with another secret, or the body was altered.
    #[error("{SIGNATURE_HEADER} does not match the body")]
    Mismatch,
}

/// The shared secret. Its `Debug` does not show it.
#[derive(Clone)]
pub struct CallbackKey(SecretSlice<u8>);

impl std::fmt::Debug for CallbackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackKey(<redacted>)")
    }
}

impl CallbackKey {
    /// A key from a secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, SignatureError> {
        let secret: Vec<u8> = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SignatureError::SecretTooShort(secret.len()));
        }
        Ok(Self(secret.into()))
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(body);
        mac
    }

    /// The header value signing `body`: `sha256=<hex>`.
    pub fn sign(&self, body: &[u8]) -> String {
        let digest = self.mac(body).finalize().into_bytes();
        let mut header = String::with_capacity(SCHEME.len() + 64);
        header.push_str(SCHEME);
        for byte in digest {
            header.push_str(&format!("{byte:02x}"));
        }
        header
    }

    /// Whether `header` (the header's value, if any) signs `body` under this key.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex = header
            .trim()
            .strip_prefix(SCHEME)
            .ok_or(SignatureError::Malformed)?;
        let signature = decode_hex(hex).ok_or(SignatureError::Malformed)?;
        self.mac(body)
            .verify_slice(&signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(byte: u8) -> CallbackKey {
        CallbackKey::new(vec![byte; MIN_SECRET_BYTES]).unwrap()
    }

    #[test]
    fn a_signature_verifies_the_exact_body_under_its_key_only() {
        let body = br#"{"callback_id":"cb_1"}"#;
        let signature = key(1).sign(body);
        assert!(signature.starts_with("sha256=") && signature.len() == 7 + 64);
        assert_eq!(key(1).verify(Some(&signature), body), Ok(()));
        assert_eq!(
            key(2).verify(Some(&signature), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            key(1).verify(Some(&signature), br#"{"callback_id":"cb_2"}"#),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(key(1).verify(None, body), Err(SignatureError::Missing));
        for garbage in ["", "sha256=", "sha1=00", "sha256=zz", &signature[..40]] {
            assert_eq!(
                key(1).verify(Some(garbage), body),
                Err(SignatureError::Malformed),
                "{garbage}"
            );
        }
    }

    #[test]
    fn short_secrets_are_refused_and_never_shown() {
        assert_eq!(
            CallbackKey::new(b"short".to_vec()).unwrap_err(),
            SignatureError::SecretTooShort(5)
        );
        assert_eq!(format!("{:?}", key(7)), "CallbackKey(<redacted>)");
    }
}
