//! Sealing and opening credentials: AES-256-GCM-SIV under a keyring of master keys.
//!
//! A sealed blob is `version (1) | key id (4, big endian) | nonce (12) | ciphertext + tag`.
//! The associated data binds it to its [`Binding`]: the purpose (which column it lives in), the
//! user id, the server name and the key id. A blob copied to another user's row, another server
//! or another column therefore fails to open, with the same opaque [`CryptoError::Decrypt`] as a
//! tampered one.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Current sealed-format version byte.
const FORMAT_V1: u8 = 1;
/// Bytes before the ciphertext: version, key id, nonce.
const HEADER_LEN: usize = 1 + 4 + 12;
/// AES-GCM-SIV tag length.
const TAG_LEN: usize = 16;
/// Domain separation for the associated data.
const AAD_DOMAIN: &[u8] = b"warden-seal-v1\0";

/// Errors from sealing or opening.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The blob is not a sealed value this version understands (too short, unknown version).
    #[error("sealed value is malformed")]
    Malformed,
    /// The blob was sealed under a key the keyring does not hold.
    #[error("sealed value uses key {0}, which is not in the keyring")]
    UnknownKey(KeyId),
    /// Authentication failed: wrong key, tampered bytes, or a blob bound to another row.
    #[error("sealed value failed to open")]
    Decrypt,
    /// A key could not be parsed; the text says what was wrong with its shape, never its value.
    #[error("invalid master key: {0}")]
    InvalidKey(&'static str),
    /// Encryption failed (only possible for absurdly large plaintexts).
    #[error("sealing failed")]
    Seal,
}

/// Identifies a master key: the first four bytes of a SHA-256 over the key. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A 256-bit master key. Zeroized on drop, redacted under Debug.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// Parses a base64 (standard alphabet, padded or not) 32-byte key.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let trimmed = text.trim();
        let decoded = Zeroizing::new(
            BASE64
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
                .map_err(|_| CryptoError::InvalidKey("not valid base64"))?,
        );
        let bytes: [u8; 32] =
            decoded.as_slice().try_into().map_err(|_| CryptoError::InvalidKey("must decode to exactly 32 bytes"))?;
        Ok(Self(Zeroizing::new(bytes)))
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|_| CryptoError::InvalidKey("no OS randomness"))?;
        Ok(Self(bytes))
    }

    /// The key as standard base64, for `warden keygen` and the development key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(self.0.as_slice()))
    }

    /// This key's id.
    pub fn id(&self) -> KeyId {
        let mut h = Sha256::new();
        h.update(b"warden key id v1\0");
        h.update(self.0.as_slice());
        let digest = h.finalize();
        KeyId(u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({} [REDACTED])", self.id())
    }
}

/// Which column a sealed value belongs to. Part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The secret part of a server config's auth (token, header values, env values, client
    /// secret).
    ServerAuth,
    /// An OAuth grant's token set.
    GrantTokens,
    /// A pending authorization's PKCE verifier and state.
    PendingAuthorization,
}

impl Purpose {
    fn tag(self) -> u8 {
        match self {
            Purpose::ServerAuth => 1,
            Purpose::GrantTokens => 2,
            Purpose::PendingAuthorization => 3,
        }
    }
}

/// What a sealed value is bound to: its purpose, its user and its server.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The column.
    pub purpose: Purpose,
    /// The owning user id.
    pub user: &'a str,
    /// The server name within that user's configs.
    pub server: &'a str,
}

impl<'a> Binding<'a> {
    /// A binding for `purpose` on (user, server).
    pub fn new(purpose: Purpose, user: &'a str, server: &'a str) -> Self {
        Self { purpose, user, server }
    }

    fn aad(&self, key: KeyId) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 13 + self.user.len() + self.server.len());
        aad.extend_from_slice(AAD_DOMAIN);
        aad.push(self.purpose.tag());
        for part in [self.user, self.server] {
            // Length prefixes keep ("ab", "c") and ("a", "bc") apart. Lengths are bounded by
            // validation far below u32::MAX.
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            aad.extend_from_slice(&len.to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad.extend_from_slice(&key.0.to_be_bytes());
        aad
    }
}

/// The master keys warden knows: one primary that seals, all of them open.
pub struct Keyring {
    primary: KeyId,
    ciphers: BTreeMap<KeyId, Aes256GcmSiv>,
    /// A key derived from the primary for signing (capabilities); see [`Keyring::signing_key`].
    signing: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary)
            .field("keys", &self.ciphers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring sealing under `primary` and also opening values sealed under `older`.
    pub fn new(primary: &MasterKey, older: &[MasterKey]) -> Self {
        let mut ciphers = BTreeMap::new();
        for key in older.iter().chain(std::iter::once(primary)) {
            ciphers.insert(key.id(), cipher_for(key));
        }
        let mut h = Sha256::new();
        h.update(b"warden signing key v1\0");
        h.update(primary.0.as_slice());
        let signing = Zeroizing::new(h.finalize().into());
        Self { primary: primary.id(), ciphers, signing }
    }

    /// A 256-bit key derived from the primary master key for signing capabilities. Every node
    /// with the same primary key derives the same one; rotating the key changes it.
    pub fn signing_key(&self) -> Zeroizing<[u8; 32]> {
        self.signing.clone()
    }

    /// The id of the key that seals.
    pub fn primary(&self) -> KeyId {
        self.primary
    }

    /// Ids of every key that opens.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.ciphers.keys().copied().collect()
    }

    /// Seals `plaintext` for `binding` under the primary key with a fresh random nonce.
    pub fn seal(&self, binding: Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let cipher = self.ciphers.get(&self.primary).ok_or(CryptoError::UnknownKey(self.primary))?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Seal)?;
        let aad = binding.aad(self.primary);
        let ciphertext =
            cipher.encrypt(&nonce.into(), Payload { msg: plaintext, aad: &aad }).map_err(|_| CryptoError::Seal)?;
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.primary.0.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens a blob sealed for `binding` under any key of the ring.
    pub fn open(&self, binding: Binding<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (key, nonce, ciphertext) = parse(blob)?;
        let cipher = self.ciphers.get(&key).ok_or(CryptoError::UnknownKey(key))?;
        let aad = binding.aad(key);
        cipher
            .decrypt(&nonce.into(), Payload { msg: ciphertext, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// Reads the key id of a sealed blob without opening it.
pub fn sealed_key_id(blob: &[u8]) -> Result<KeyId, CryptoError> {
    parse(blob).map(|(key, _, _)| key)
}

fn parse(blob: &[u8]) -> Result<(KeyId, [u8; 12], &[u8]), CryptoError> {
    if blob.len() < HEADER_LEN + TAG_LEN || blob[0] != FORMAT_V1 {
        return Err(CryptoError::Malformed);
    }
    let key = KeyId(u32::from_be_bytes([blob[1], blob[2], blob[3], blob[4]]));
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&blob[5..HEADER_LEN]);
    Ok((key, nonce, &blob[HEADER_LEN..]))
}

fn cipher_for(key: &MasterKey) -> Aes256GcmSiv {
    Aes256GcmSiv::new(&(*key.0).into())
}

/// SHA-256 of `data` as lowercase hex. Used to index values (OAuth `state`) without storing them.
pub fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests;
