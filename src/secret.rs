//! Secret newtypes: values that are zeroized on drop and never printed.
//!
//! Every credential warden handles (bearer tokens, secret header values, env values, OAuth client
//! secrets and tokens, key material) lives in one of these from the moment it is received or
//! decrypted until it is dropped. None of them implements `Serialize`, `Display` or a revealing
//! `Debug`; the only way to the bytes is `expose_secret()`, which appears where a secret leaves
//! for the wire, a child's environment, or the cipher.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// A secret text value, such as a bearer token or a secret header value.
///
/// Cloning is allowed (a session hands a copy to the connector that opens a connection); each
/// copy is zeroized when dropped.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value; the `String` is moved, not copied, and zeroized when the `Secret` drops.
    pub fn new(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// The secret text. Call only where the secret leaves for the wire, a child's environment or
    /// the cipher.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// Length in bytes (not secret: sizes are validated and may appear in errors).
    pub fn len(&self) -> usize {
        self.0.expose_secret().len()
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// Compares two secrets in constant time with respect to their contents (lengths may differ
/// early; lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
