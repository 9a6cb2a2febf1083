//! Unit tests for the credential check and the identities map.

use axum::http::{HeaderMap, HeaderValue};

use super::{ANONYMOUS, CredentialCheck, Identities};

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

#[test]
fn bearer_matches_scheme_case_insensitively_and_rejects_others() {
    let check = CredentialCheck::bearer(Identities::new().with("t1", "alice"));
    assert_eq!(check.identify(&headers(&[("authorization", "Bearer t1")])), Some("alice".to_owned()));
    assert_eq!(check.identify(&headers(&[("authorization", "bearer t1")])), Some("alice".to_owned()));
    assert_eq!(check.identify(&headers(&[("authorization", "Basic t1")])), None);
    assert_eq!(check.identify(&headers(&[("authorization", "Bearer t2")])), None);
    assert_eq!(check.identify(&headers(&[])), None);
}

#[test]
fn header_check_uses_the_named_header() {
    let check = CredentialCheck::header("X-API-Key", Identities::new().with("k1", "bob"));
    assert_eq!(check.identify(&headers(&[("x-api-key", "k1")])), Some("bob".to_owned()));
    assert_eq!(check.identify(&headers(&[("authorization", "Bearer k1")])), None);
}

#[test]
fn none_is_anonymous() {
    assert_eq!(CredentialCheck::None.identify(&headers(&[])), Some(ANONYMOUS.to_owned()));
}

#[test]
fn identities_round_trip_through_json() -> Result<(), serde_json::Error> {
    let ids: Identities = [("a", "alice"), ("b", "bob")].into_iter().collect();
    let back = Identities::from_json(&ids.to_json())?;
    assert_eq!(back, ids);
    assert_eq!(back.identity_of("b"), Some("bob"));
    assert!(Identities::from_json("[1]").is_err());
    Ok(())
}
