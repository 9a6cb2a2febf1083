use super::*;

#[test]
fn debug_is_redacted() {
    let s = Secret::from("canary-123");
    assert_eq!(format!("{s:?}"), "[REDACTED]");
    assert_eq!(format!("{:?}", Some(s.clone())), "Some([REDACTED])");
    assert_eq!(s.expose_secret(), "canary-123");
}

#[test]
fn deserializes_from_json_string() {
    let s: Secret = serde_json::from_str("\"tok\"").unwrap();
    assert_eq!(s.expose_secret(), "tok");
}

#[test]
fn constant_time_eq_compares() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}
