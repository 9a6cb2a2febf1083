//! Per-user capabilities: short-lived tokens an admin connection issues so a less-trusted
//! component (an agent sandbox) can use the socket for one user only.
//!
//! A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))` with payload
//! `{"v":1,"user":..,"exp":..,"nonce":..}`. The key is derived from the primary master key, so
//! every node sharing the key accepts it and rotating the key revokes every capability.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::Mac as _;
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind};
use crate::secret::{Secret, constant_time_eq};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Longest capability lifetime, in seconds.
pub const MAX_TTL_S: u64 = 86_400;
/// Default capability lifetime, in seconds.
pub const DEFAULT_TTL_S: u64 = 3_600;

/// Issues and verifies capabilities.
pub struct Capabilities {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capabilities([REDACTED])")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    v: u8,
    user: String,
    exp: i64,
    nonce: String,
}

impl Capabilities {
    /// A verifier/issuer with `key` (see [`crate::crypto::Keyring::derive_key`]).
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self { key }
    }

    fn mac(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(self.key.as_slice()).unwrap_or_else(|_| {
            // HMAC accepts keys of any length; this branch cannot run.
            unreachable!("HMAC-SHA256 takes any key length")
        });
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }

    /// A token binding its holder to `user` for `ttl_s` seconds from `now`.
    pub fn issue(&self, user: &str, ttl_s: u64, now: i64) -> Result<(Secret, i64), Error> {
        if ttl_s == 0 || ttl_s > MAX_TTL_S {
            return Err(Error::invalid("ttl_s", format!("must be 1 to {MAX_TTL_S}")));
        }
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|_| Error::internal("no OS randomness"))?;
        let exp = now + i64::try_from(ttl_s).unwrap_or(i64::MAX);
        let payload = serde_json::to_vec(&Payload { v: 1, user: user.to_owned(), exp, nonce: B64.encode(nonce) })
            .map_err(|_| Error::internal("encoding a capability failed"))?;
        let token = format!("{}.{}", B64.encode(&payload), B64.encode(self.mac(&payload)));
        Ok((Secret::new(token), exp))
    }

    /// The user a token binds to, and its expiry, if the token is authentic and unexpired.
    pub fn verify(&self, token: &Secret, now: i64) -> Result<(String, i64), Error> {
        let refused = |why: &str| Error::new(ErrorKind::Forbidden, format!("capability refused: {why}"));
        let (payload_b64, mac_b64) = token.expose_secret().split_once('.').ok_or_else(|| refused("malformed"))?;
        let payload = B64.decode(payload_b64).map_err(|_| refused("malformed"))?;
        let mac = B64.decode(mac_b64).map_err(|_| refused("malformed"))?;
        if !constant_time_eq(&mac, &self.mac(&payload)) {
            return Err(refused("invalid signature"));
        }
        let payload: Payload = serde_json::from_slice(&payload).map_err(|_| refused("malformed"))?;
        if payload.v != 1 {
            return Err(refused("unknown version"));
        }
        if payload.exp <= now {
            return Err(refused("expired"));
        }
        Ok((payload.user, payload.exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(byte: u8) -> Capabilities {
        Capabilities::new(Zeroizing::new([byte; 32]))
    }

    #[test]
    fn issue_and_verify() {
        let c = caps(1);
        let (token, exp) = c.issue("alice", 60, 1000).unwrap();
        assert_eq!(exp, 1060);
        assert_eq!(c.verify(&token, 1059).unwrap(), ("alice".to_owned(), 1060));
        assert_eq!(c.verify(&token, 1060).unwrap_err().kind(), ErrorKind::Forbidden);
        assert_eq!(caps(2).verify(&token, 1000).unwrap_err().kind(), ErrorKind::Forbidden);
        assert!(c.issue("alice", 0, 0).is_err() && c.issue("alice", MAX_TTL_S + 1, 0).is_err());
    }

    #[test]
    fn tampering_is_refused() {
        let c = caps(1);
        let (token, _) = c.issue("alice", 60, 1000).unwrap();
        let (payload, mac) = token.expose_secret().split_once('.').unwrap();
        let mut forged: serde_json::Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        forged["user"] = "bob".into();
        let forged = format!("{}.{mac}", B64.encode(serde_json::to_vec(&forged).unwrap()));
        let err = c.verify(&Secret::new(forged), 1000).unwrap_err();
        assert!(err.message().contains("invalid signature"), "{err}");
        for bad in ["", ".", "abc", "a.b", &format!("{payload}.")] {
            assert_eq!(c.verify(&Secret::from(bad), 1000).unwrap_err().kind(), ErrorKind::Forbidden, "{bad:?}");
        }
    }
}
