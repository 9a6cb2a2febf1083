use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn cfg(dir: &Path, require: bool) -> KeysConfig {
    KeysConfig { require_env_key: require, dev_key_file: dir.join("sub/dev.key") }
}

#[test]
fn dev_key_is_created_once_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (ring, source) = keyring_from(&cfg(dir.path(), false), None, None).unwrap();
    assert_eq!(source, KeySource::DevFile { path: dir.path().join("sub/dev.key"), created: true });
    let meta = std::fs::metadata(dir.path().join("sub/dev.key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(dir.path().join("sub")).unwrap().permissions().mode() & 0o777, 0o700);
    let (again, source) = keyring_from(&cfg(dir.path(), false), None, None).unwrap();
    assert!(matches!(source, KeySource::DevFile { created: false, .. }));
    assert_eq!(ring.primary(), again.primary());
}

#[test]
fn too_open_dev_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    keyring_from(&cfg(dir.path(), false), None, None).unwrap();
    let path = dir.path().join("sub/dev.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = keyring_from(&cfg(dir.path(), false), None, None).unwrap_err();
    assert!(err.to_string().contains("too open"), "{err}");
}

#[test]
fn required_env_key_missing_or_malformed() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(keyring_from(&cfg(dir.path(), true), None, None), Err(KeyError::Missing)));
    assert!(!dir.path().join("sub/dev.key").exists(), "no dev key when the env key is required");
    let err = keyring_from(&cfg(dir.path(), true), Some("c2hvcnQ="), None).unwrap_err();
    assert!(matches!(err, KeyError::Malformed { var: ENV_MASTER_KEY, .. }));
    // A malformed key is an error even when a dev key would be allowed: never fall back.
    assert!(keyring_from(&cfg(dir.path(), false), Some("!!!"), None).is_err());
    assert!(!err.to_string().contains("c2hvcnQ"), "the error must not echo the key: {err}");
}

#[test]
fn env_key_and_previous_keys() {
    let primary = MasterKey::generate().unwrap();
    let old = MasterKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let previous = format!(" {} ,", old.to_base64().as_str());
    let (ring, source) = keyring_from(&cfg(dir.path(), true), Some(&primary.to_base64()), Some(&previous)).unwrap();
    assert_eq!(source, KeySource::Environment);
    assert_eq!(ring.primary(), primary.id());
    assert!(ring.key_ids().contains(&old.id()));
    assert!(matches!(
        keyring_from(&cfg(dir.path(), true), Some(&primary.to_base64()), Some("bad")),
        Err(KeyError::Malformed { var: ENV_PREVIOUS_KEYS, .. })
    ));
}
