//! Credentials and the identities they name: the map type and the HTTP credential check.

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};

/// The identity reported when the server checks no credential.
pub const ANONYMOUS: &str = "anonymous";

/// A map from credential (a token or header value) to the identity name it stands for.
///
/// It is the JSON object the stdio server reads from `TESTKIT_IDENTITIES`, and converts into the
/// maps that [`CredentialCheck`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Identities(HashMap<String, String>);

impl Identities {
    /// An empty map: no credential is accepted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `credential -> identity` and returns the map, for chaining.
    #[must_use]
    pub fn with(mut self, credential: impl Into<String>, identity: impl Into<String>) -> Self {
        self.insert(credential, identity);
        self
    }

    /// Adds or replaces `credential -> identity`.
    pub fn insert(&mut self, credential: impl Into<String>, identity: impl Into<String>) {
        self.0.insert(credential.into(), identity.into());
    }

    /// The identity `credential` stands for, if it is known.
    pub fn identity_of(&self, credential: &str) -> Option<&str> {
        self.0.get(credential).map(String::as_str)
    }

    /// The map as a JSON object, the format of `TESTKIT_IDENTITIES`.
    pub fn to_json(&self) -> String {
        // Serializing a map of strings to strings cannot fail; fall back to an empty object
        // rather than panic so the invariant is not load-bearing.
        serde_json::to_string(&self.0).unwrap_or_else(|_| String::from("{}"))
    }

    /// Parses a JSON object of credential -> identity strings.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The underlying map.
    pub fn into_map(self) -> HashMap<String, String> {
        self.0
    }
}

impl From<HashMap<String, String>> for Identities {
    fn from(map: HashMap<String, String>) -> Self {
        Self(map)
    }
}

impl<C: Into<String>, I: Into<String>> FromIterator<(C, I)> for Identities {
    fn from_iter<T: IntoIterator<Item = (C, I)>>(iter: T) -> Self {
        Self(iter.into_iter().map(|(credential, identity)| (credential.into(), identity.into())).collect())
    }
}

/// How the HTTP server decides who is calling.
///
/// The check runs twice per request: in the middleware, which answers 401 when it fails, and in
/// the tool handler, which reports the identity of the request it is serving.
#[derive(Debug, Clone, Default)]
pub enum CredentialCheck {
    /// `Authorization: Bearer <token>`; the map goes from token to identity.
    Bearer(HashMap<String, String>),
    /// A custom header such as `X-API-Key`; the map goes from header value to identity.
    Header {
        /// The header name, matched case-insensitively.
        name: String,
        /// Header value -> identity.
        identities: HashMap<String, String>,
    },
    /// Every request is accepted as [`ANONYMOUS`].
    #[default]
    None,
}

impl CredentialCheck {
    /// A bearer check over `identities` (token -> identity).
    pub fn bearer(identities: impl Into<Identities>) -> Self {
        Self::Bearer(identities.into().into_map())
    }

    /// A check of header `name` over `identities` (header value -> identity).
    pub fn header(name: impl Into<String>, identities: impl Into<Identities>) -> Self {
        Self::Header { name: name.into(), identities: identities.into().into_map() }
    }

    /// The identity the credential in `headers` stands for, or `None` if it is missing or unknown.
    pub fn identify(&self, headers: &HeaderMap) -> Option<String> {
        match self {
            Self::Bearer(identities) => {
                let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
                let (scheme, token) = value.split_once(' ')?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return None;
                }
                identities.get(token.trim()).cloned()
            }
            Self::Header { name, identities } => {
                let value = headers.get(name.as_str())?.to_str().ok()?;
                identities.get(value).cloned()
            }
            Self::None => Some(ANONYMOUS.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests;
