use super::*;

fn key(byte: u8) -> MasterKey {
    MasterKey::from_base64(&BASE64.encode([byte; 32])).unwrap()
}

fn b(purpose: Purpose, user: &'static str, server: &'static str) -> Binding<'static> {
    Binding::new(purpose, user, server)
}

#[test]
fn seal_then_open_round_trips() {
    let ring = Keyring::new(&key(1), &[]);
    let blob = ring.seal(b(Purpose::ServerAuth, "alice", "gh"), b"token").unwrap();
    assert_eq!(&ring.open(b(Purpose::ServerAuth, "alice", "gh"), &blob).unwrap()[..], b"token");
    assert_eq!(sealed_key_id(&blob).unwrap(), ring.primary());
}

#[test]
fn fresh_nonce_each_seal() {
    let ring = Keyring::new(&key(1), &[]);
    let binding = b(Purpose::ServerAuth, "alice", "gh");
    assert_ne!(ring.seal(binding, b"x").unwrap(), ring.seal(binding, b"x").unwrap());
}

#[test]
fn binding_is_enforced() {
    let ring = Keyring::new(&key(1), &[]);
    let blob = ring.seal(b(Purpose::ServerAuth, "alice", "gh"), b"token").unwrap();
    for other in [
        b(Purpose::ServerAuth, "bob", "gh"),
        b(Purpose::ServerAuth, "alice", "linear"),
        b(Purpose::GrantTokens, "alice", "gh"),
        b(Purpose::ServerAuth, "alic", "egh"),
    ] {
        assert_eq!(ring.open(other, &blob).unwrap_err(), CryptoError::Decrypt);
    }
}

#[test]
fn tampering_and_wrong_keys_fail_typed() {
    let ring = Keyring::new(&key(1), &[]);
    let binding = b(Purpose::GrantTokens, "u", "s");
    let blob = ring.seal(binding, b"secret").unwrap();
    for i in HEADER_LEN..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        assert_eq!(ring.open(binding, &bad).unwrap_err(), CryptoError::Decrypt, "byte {i}");
    }
    let other = Keyring::new(&key(2), &[]);
    assert_eq!(other.open(binding, &blob).unwrap_err(), CryptoError::UnknownKey(ring.primary()));
    // A forged key id pointing at a key the ring holds still fails authentication.
    let mut forged = other.seal(binding, b"secret").unwrap();
    forged[1..5].copy_from_slice(&ring.primary().0.to_be_bytes());
    assert_eq!(ring.open(binding, &forged).unwrap_err(), CryptoError::Decrypt);
    assert_eq!(ring.open(binding, &blob[..20]).unwrap_err(), CryptoError::Malformed);
    let mut v2 = blob.clone();
    v2[0] = 2;
    assert_eq!(ring.open(binding, &v2).unwrap_err(), CryptoError::Malformed);
}

#[test]
fn older_keys_open_primary_seals() {
    let old = key(1);
    let new = key(2);
    let old_ring = Keyring::new(&old, &[]);
    let binding = b(Purpose::ServerAuth, "u", "s");
    let blob = old_ring.seal(binding, b"v").unwrap();
    let ring = Keyring::new(&new, &[key(1)]);
    assert_eq!(&ring.open(binding, &blob).unwrap()[..], b"v");
    assert_eq!(sealed_key_id(&ring.seal(binding, b"v").unwrap()).unwrap(), new.id());
}

#[test]
fn keys_parse_and_redact() {
    assert!(matches!(MasterKey::from_base64("nope!"), Err(CryptoError::InvalidKey(_))));
    assert!(matches!(MasterKey::from_base64(&BASE64.encode([0u8; 16])), Err(CryptoError::InvalidKey(_))));
    let k = MasterKey::generate().unwrap();
    let text = k.to_base64();
    let again = MasterKey::from_base64(&text).unwrap();
    assert_eq!(k.id(), again.id());
    assert!(!format!("{k:?}").contains(text.as_str()));
    assert!(format!("{k:?}").contains("REDACTED"));
}
