use super::*;

/// The shipped config.toml documents every default: parsing it must give exactly the defaults.
#[test]
fn shipped_config_matches_defaults() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let shipped = Config::from_toml(&text).unwrap();
    assert_eq!(format!("{shipped:?}"), format!("{:?}", Config::default()));
    // And it names every setting: no key of the defaults is missing from the file.
    let table: toml::Table = toml::from_str(&text).unwrap();
    let defaults = toml::Table::try_from(DefaultsView(&Config::default())).unwrap();
    for (section, keys) in &defaults {
        let keys = keys.as_table().unwrap();
        for key in keys.keys() {
            assert!(
                table[section].as_table().unwrap().contains_key(key),
                "config.toml lacks {section}.{key}"
            );
        }
    }
}

/// A serializable mirror of the config's keys, to enumerate them.
struct DefaultsView<'a>(&'a Config);

impl serde::Serialize for DefaultsView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let c = self.0;
        let sections: Vec<(&str, Vec<&str>)> = vec![
            ("database", vec!["url", "max_connections"]),
            ("keys", vec!["require_env_key", "dev_key_file"]),
            (
                "control",
                vec![
                    "socket_path",
                    "allowed_uids",
                    "max_frame_bytes",
                    "max_connections",
                    "max_in_flight",
                    "idle_timeout_s",
                    "shutdown_grace_s",
                ],
            ),
            (
                "sessions",
                vec![
                    "call_timeout_ms",
                    "connect_timeout_ms",
                    "idle_timeout_s",
                    "max_restarts",
                    "restart_window_s",
                ],
            ),
            (
                "oauth",
                vec![
                    "refresh_lead_s",
                    "refresh_lead_fraction",
                    "callback_listen",
                    "callback_path",
                    "redirect_uri",
                    "pending_ttl_s",
                ],
            ),
            (
                "policy",
                vec!["stdio_allowed_commands", "allow_loopback", "allow_private"],
            ),
            ("log", vec!["filter"]),
        ];
        // The Debug form names every field; check the list above against it so a new setting
        // cannot be forgotten here (and therefore in config.toml).
        let debug = format!("{c:?}");
        let listed: usize = sections.iter().map(|(_, k)| k.len()).sum();
        assert_eq!(
            debug.matches(": ").count() - sections.len(),
            listed,
            "a setting is missing from the list: {debug}"
        );
        let mut map = s.serialize_map(None)?;
        for (section, keys) in sections {
            let inner: toml::Table = keys
                .into_iter()
                .map(|k| (k.to_owned(), toml::Value::Boolean(true)))
                .collect();
            map.serialize_entry(section, &inner)?;
        }
        map.end()
    }
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
    std::fs::write(
        &path,
        "[database]\nurl = \"sqlite:db/w.db?mode=rwc\"\n[keys]\ndev_key_file = \"k/key\"\n",
    )
    .unwrap();
    let c = Config::load(Some(&path)).unwrap();
    assert_eq!(c.keys.dev_key_file, dir.path().join("k/key"));
    assert_eq!(
        c.control.socket_path,
        dir.path().join("data/run/warden.sock")
    );
    if std::env::var(ENV_DATABASE_URL).is_err() {
        assert_eq!(
            c.database.url,
            format!("sqlite:{}?mode=rwc", dir.path().join("db/w.db").display())
        );
    }
}

#[test]
fn database_display_masks_passwords() {
    let mut c = Config::default();
    c.database.url = "postgres://u:hunter2@db.example.com/w".into();
    assert!(!c.database_display().contains("hunter2"));
    assert!(c.database_display().contains("db.example.com"));
}
