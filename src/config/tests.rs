use super::*;

/// The shipped config.toml documents every default: parsing it gives exactly the defaults, and
/// it names every setting there is (so a new setting cannot go undocumented).
#[test]
fn shipped_config_matches_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let shipped = Config::from_toml(&text).unwrap();
    assert_eq!(format!("{shipped:?}"), format!("{:?}", Config::default()));
    let file: toml::Table = toml::from_str(&text).unwrap();
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    let mut settings = 0;
    for (section, keys) in &defaults {
        for key in keys.as_table().unwrap().keys() {
            settings += 1;
            assert!(file.get(section).and_then(|s| s.get(key)).is_some(), "config.toml lacks {section}.{key}");
        }
    }
    assert!(settings > 20, "enumerated {settings} settings");
}

#[test]
fn unknown_keys_are_errors() {
    let err = Config::from_toml("[keys]\nrequire_env_keys = true\n").unwrap_err();
    assert!(err.to_string().contains("require_env_keys"), "{err}");
}

#[test]
fn values_are_checked() {
    assert!(Config::from_toml("[database]\nurl = \"mysql://x\"\n").is_err());
    assert!(Config::from_toml("[oauth]\nrefresh_lead_fraction = 1.5\n").is_err());
    assert!(Config::from_toml("[sessions]\ncall_timeout_ms = 0\n").is_err());
}

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[database]\nurl = \"sqlite:db/w.db?mode=rwc\"\n[keys]\ndev_key_file = \"k/key\"\n").unwrap();
    let c = Config::load(Some(&path)).unwrap();
    assert_eq!(c.keys.dev_key_file, dir.path().join("k/key"));
    assert_eq!(c.control.socket_path, dir.path().join("data/run/warden.sock"));
    if std::env::var(ENV_DATABASE_URL).is_err() {
        assert_eq!(c.database.url, format!("sqlite:{}?mode=rwc", dir.path().join("db/w.db").display()));
    }
}

#[test]
fn database_display_masks_passwords() {
    let mut c = Config::default();
    c.database.url = "postgres://u:hunter2@db.example.com/w".into();
    assert!(!c.database_display().contains("hunter2"));
    assert!(c.database_display().contains("db.example.com"));
}
