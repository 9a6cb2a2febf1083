//! Unit tests for reading the stdio server's environment.

use std::time::Duration;

use super::{StdioConfigError, StdioSettings};

const IDS: &str = r#"{"t1":"alice","t2":"bob"}"#;

#[test]
fn known_token_gives_its_identity() -> Result<(), StdioConfigError> {
    let settings = StdioSettings::from_vars(Some("t2"), Some(IDS), Some("250"))?;
    assert_eq!(settings.identity, "bob");
    assert_eq!(settings.stall, Some(Duration::from_millis(250)));
    Ok(())
}

#[test]
fn missing_or_unknown_token_is_refused() {
    assert!(matches!(StdioSettings::from_vars(None, Some(IDS), None), Err(StdioConfigError::MissingToken)));
    assert!(matches!(StdioSettings::from_vars(Some("t3"), Some(IDS), None), Err(StdioConfigError::UnknownToken)));
    assert!(matches!(StdioSettings::from_vars(Some("t1"), None, None), Err(StdioConfigError::UnknownToken)));
}

#[test]
fn malformed_values_are_refused() {
    assert!(matches!(StdioSettings::from_vars(Some("t1"), Some("{"), None), Err(StdioConfigError::BadIdentities(_))));
    assert!(matches!(StdioSettings::from_vars(Some("t1"), Some(IDS), Some("soon")), Err(StdioConfigError::BadStall)));
}
