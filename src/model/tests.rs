use super::*;

#[test]
fn user_ids() {
    for ok in ["alice", "user@example.com", "auth0|abc123", "a:b+c=d", &"x".repeat(256)] {
        assert!(UserId::parse(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a b", "a/b", "é", "a\0", &"x".repeat(257)] {
        assert_eq!(UserId::parse(bad).unwrap_err().field, "user", "{bad:?}");
    }
}

#[test]
fn server_names() {
    assert!(ServerName::parse("github_2-x").is_ok());
    for bad in ["", "-x", "a.b", "a b", &"x".repeat(65)] {
        assert!(ServerName::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn auth_json_round_trips_and_debug_redacts() {
    let json = r#"{"type":"headers","headers":{"X-API-Key":"canary-1"}}"#;
    let auth: ServerAuth = serde_json::from_str(json).unwrap();
    assert!(!format!("{auth:?}").contains("canary-1"));
    let sealable = auth.to_sealable_json();
    let again: ServerAuth = serde_json::from_slice(&sealable).unwrap();
    match again {
        ServerAuth::Headers { headers } => {
            assert_eq!(headers["X-API-Key"].expose_secret(), "canary-1");
        }
        other => panic!("{other:?}"),
    }
    let err = serde_json::from_str::<ServerAuth>(r#"{"type":"bearer","token":"t","extra":1}"#).unwrap_err();
    assert!(err.to_string().contains("extra"));
    let err = serde_json::from_str::<ServerAuth>(r#"{"type":"bearer","token":"canary-2","nope":1}"#).unwrap_err();
    assert!(!err.to_string().contains("canary-2"), "{err}");
}
