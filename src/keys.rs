//! Where master keys come from: the environment, or on a development machine a key file that
//! warden creates once.
//!
//! Production sets `WARDEN_MASTER_KEY` (and, while rotating, `WARDEN_PREVIOUS_KEYS`) and
//! `keys.require_env_key = true`. Without a key in the environment and without that switch,
//! warden creates `keys.dev_key_file` (mode 0600, in a 0700 directory) on first start, warns
//! loudly, and reuses the file afterwards, so a fresh checkout runs with no manual step.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::config::{ENV_MASTER_KEY, ENV_PREVIOUS_KEYS, KeysConfig};
use crate::crypto::{CryptoError, Keyring, MasterKey};

/// Why no keyring could be built. `warden serve` exits 64 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `require_env_key` is set and the variable is absent.
    #[error("{ENV_MASTER_KEY} is not set and keys.require_env_key = true; generate one with `warden keygen`")]
    Missing,
    /// A key in the environment is malformed.
    #[error("{var} is invalid: {source}")]
    Malformed {
        /// The variable.
        var: &'static str,
        /// What was wrong with its shape.
        source: CryptoError,
    },
    /// The development key file could not be read or created.
    #[error("development key file {path}: {message}")]
    DevFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Where the primary key came from, for the startup log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `WARDEN_MASTER_KEY`.
    Environment,
    /// A development key file, created now or earlier.
    DevFile {
        /// The file.
        path: PathBuf,
        /// Whether this start created it.
        created: bool,
    },
}

/// Reads keys from the process environment and, if allowed, the development key file.
pub fn load_keyring(config: &KeysConfig) -> Result<(Keyring, KeySource), KeyError> {
    let primary = std::env::var(ENV_MASTER_KEY).ok().map(Zeroizing::new);
    let previous = std::env::var(ENV_PREVIOUS_KEYS).ok().map(Zeroizing::new);
    keyring_from(config, primary.as_deref().map(String::as_str), previous.as_deref().map(String::as_str))
}

/// Builds the keyring from explicit values (what `load_keyring` read from the environment).
pub fn keyring_from(
    config: &KeysConfig,
    primary: Option<&str>,
    previous: Option<&str>,
) -> Result<(Keyring, KeySource), KeyError> {
    let older = parse_previous(previous)?;
    match primary.filter(|s| !s.trim().is_empty()) {
        Some(text) => {
            let key =
                MasterKey::from_base64(text).map_err(|source| KeyError::Malformed { var: ENV_MASTER_KEY, source })?;
            Ok((Keyring::new(&key, &older), KeySource::Environment))
        }
        None if config.require_env_key => Err(KeyError::Missing),
        None => {
            let (key, created) = dev_key(&config.dev_key_file)?;
            Ok((Keyring::new(&key, &older), KeySource::DevFile { path: config.dev_key_file.clone(), created }))
        }
    }
}

fn parse_previous(previous: Option<&str>) -> Result<Vec<MasterKey>, KeyError> {
    previous
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|text| {
            MasterKey::from_base64(text).map_err(|source| KeyError::Malformed { var: ENV_PREVIOUS_KEYS, source })
        })
        .collect()
}

fn dev_key(path: &Path) -> Result<(MasterKey, bool), KeyError> {
    let fail = |message: String| KeyError::DevFile { path: path.to_owned(), message };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let mode = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(fail(format!("permissions {:o} are too open; run chmod 600", mode & 0o777)));
            }
            let key = MasterKey::from_base64(&text).map_err(|e| fail(e.to_string()))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| fail(e.to_string()))?;
            }
            let key = MasterKey::generate().map_err(|e| fail(e.to_string()))?;
            // create_new: if another process won the race, read its key instead of replacing it.
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                Ok(mut file) => {
                    let text = key.to_base64();
                    file.write_all(text.as_bytes())
                        .and_then(|()| file.write_all(b"\n"))
                        .and_then(|()| file.sync_all())
                        .map_err(|e| fail(e.to_string()))?;
                    Ok((key, true))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => dev_key(path),
                Err(e) => Err(fail(e.to_string())),
            }
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
