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

// Property tests. The fuzz targets in fuzz/ (sealed_blob) drive the same parser with
// coverage guidance; these are the versions CI runs.

use proptest::prelude::*;

fn purpose() -> impl Strategy<Value = Purpose> {
    prop_oneof![Just(Purpose::ServerAuth), Just(Purpose::GrantTokens), Just(Purpose::PendingAuthorization)]
}

/// Key material; [`MasterKey`] is deliberately not `Clone`, so strategies hand out the bytes.
fn any_key() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn master(bytes: [u8; 32]) -> MasterKey {
    MasterKey(Zeroizing::new(bytes))
}

/// Blobs for `open`: fully random ones, and ones with a valid version byte, and ones that also
/// carry the id of a key `ring` holds, so every branch of the parser is reached.
fn blob(ring_keys: Vec<KeyId>) -> impl Strategy<Value = Vec<u8>> {
    let tail = prop::collection::vec(any::<u8>(), 0..96);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..96),
        tail.clone().prop_map(|t| [&[FORMAT_V1][..], &t].concat()),
        (prop::sample::select(ring_keys), tail)
            .prop_map(|(key, t)| [&[FORMAT_V1][..], &key.0.to_be_bytes(), &t].concat()),
    ]
}

/// One corruption of a valid blob.
#[derive(Debug, Clone)]
enum Damage {
    /// Flip bit `bit` of the byte at `at`.
    Flip { at: prop::sample::Index, bit: u8 },
    /// Keep only the first `len` bytes (always fewer than the blob has).
    Truncate { len: prop::sample::Index },
    /// Append bytes.
    Extend { extra: Vec<u8> },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        any::<prop::sample::Index>().prop_map(|len| Damage::Truncate { len }),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(|extra| Damage::Extend { extra }),
    ]
}

/// How a binding differs from the one a blob was sealed for.
#[derive(Debug, Clone)]
enum Rebind {
    /// Another purpose (offset 1 or 2 in the list of three).
    Purpose(u8),
    /// Another user.
    User(String),
    /// Another server.
    Server(String),
    /// The same concatenation of user and server, split elsewhere (`("ab", "c")` vs `("a", "bc")`).
    Resplit(prop::sample::Index),
}

fn rebind() -> impl Strategy<Value = Rebind> {
    prop_oneof![
        (1u8..3).prop_map(Rebind::Purpose),
        any::<String>().prop_map(Rebind::User),
        any::<String>().prop_map(Rebind::Server),
        any::<prop::sample::Index>().prop_map(Rebind::Resplit),
    ]
}

const PURPOSES: [Purpose; 3] = [Purpose::ServerAuth, Purpose::GrantTokens, Purpose::PendingAuthorization];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `open` of arbitrary bytes never panics and fails with the error the bytes call for.
    #[test]
    fn open_arbitrary_bytes_fails_typed(
        (primary, older, bytes) in (any_key(), any_key()).prop_flat_map(|(p, o)| {
            let ids = vec![master(p).id(), master(o).id()];
            (Just(p), Just(o), blob(ids))
        }),
        purpose in purpose(),
        user in any::<String>(),
        server in any::<String>(),
    ) {
        let ring = Keyring::new(&master(primary), &[master(older)]);
        let result = ring.open(Binding::new(purpose, &user, &server), &bytes);
        let err = result.expect_err("random bytes opened");
        let parsed = sealed_key_id(&bytes);
        if bytes.len() < HEADER_LEN + TAG_LEN || bytes[0] != FORMAT_V1 {
            prop_assert_eq!(err, CryptoError::Malformed);
            prop_assert_eq!(parsed, Err(CryptoError::Malformed));
        } else {
            let id = KeyId(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]));
            prop_assert_eq!(parsed, Ok(id));
            if ring.key_ids().contains(&id) {
                prop_assert_eq!(err, CryptoError::Decrypt);
            } else {
                prop_assert_eq!(err, CryptoError::UnknownKey(id));
            }
        }
    }

    /// Any single-bit flip, truncation or extension of a valid blob fails typed.
    #[test]
    fn damaged_blob_never_opens(
        plaintext in prop::collection::vec(any::<u8>(), 0..256),
        purpose in purpose(),
        user in "\\PC{0,16}",
        server in "\\PC{0,16}",
        damage in damage(),
    ) {
        let ring = Keyring::new(&key(1), &[key(2)]);
        let binding = Binding::new(purpose, &user, &server);
        let blob = ring.seal(binding, &plaintext).unwrap();
        let (bad, expected) = match &damage {
            Damage::Flip { at, bit } => {
                let at = at.index(blob.len());
                let mut bad = blob.clone();
                bad[at] ^= 1 << bit;
                let expected = match at {
                    0 => CryptoError::Malformed,
                    1..5 => {
                        let id = KeyId(u32::from_be_bytes([bad[1], bad[2], bad[3], bad[4]]));
                        if ring.key_ids().contains(&id) { CryptoError::Decrypt } else { CryptoError::UnknownKey(id) }
                    }
                    _ => CryptoError::Decrypt,
                };
                (bad, expected)
            }
            Damage::Truncate { len } => {
                let len = len.index(blob.len());
                let expected =
                    if len < HEADER_LEN + TAG_LEN { CryptoError::Malformed } else { CryptoError::Decrypt };
                (blob[..len].to_vec(), expected)
            }
            Damage::Extend { extra } => ([&blob[..], extra].concat(), CryptoError::Decrypt),
        };
        prop_assert_eq!(ring.open(binding, &bad).map(|p| p.to_vec()), Err(expected));
        // The undamaged blob still opens.
        prop_assert_eq!(&ring.open(binding, &blob).unwrap()[..], &plaintext[..]);
    }

    /// Seal then open round-trips any plaintext and binding; any other binding fails to open.
    #[test]
    fn seal_open_round_trips_and_binds(
        plaintext in prop::collection::vec(any::<u8>(), 0..4096),
        purpose in purpose(),
        user in any::<String>(),
        server in any::<String>(),
        rebind in rebind(),
    ) {
        let ring = Keyring::new(&key(3), &[key(4)]);
        let binding = Binding::new(purpose, &user, &server);
        let blob = ring.seal(binding, &plaintext).unwrap();
        prop_assert_eq!(blob.len(), HEADER_LEN + plaintext.len() + TAG_LEN);
        prop_assert_eq!(&ring.open(binding, &blob).unwrap()[..], &plaintext[..]);

        let joined = format!("{user}{server}");
        let (other_purpose, other_user, other_server) = match rebind {
            Rebind::Purpose(offset) => {
                let i = PURPOSES.iter().position(|p| *p == purpose).unwrap();
                (PURPOSES[(i + usize::from(offset)) % 3], user.clone(), server.clone())
            }
            Rebind::User(other) => {
                prop_assume!(other != user);
                (purpose, other, server.clone())
            }
            Rebind::Server(other) => {
                prop_assume!(other != server);
                (purpose, user.clone(), other)
            }
            Rebind::Resplit(at) => {
                let splits: Vec<usize> = joined
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain([joined.len()])
                    .filter(|i| *i != user.len())
                    .collect();
                prop_assume!(!splits.is_empty());
                let at = splits[at.index(splits.len())];
                (purpose, joined[..at].to_owned(), joined[at..].to_owned())
            }
        };
        let other = Binding::new(other_purpose, &other_user, &other_server);
        prop_assert_eq!(ring.open(other, &blob).map(|p| p.to_vec()), Err(CryptoError::Decrypt));
    }

    /// `sealed_key_id` names the primary key that sealed, and a ring holding that key only as
    /// an older one still opens the blob.
    #[test]
    fn sealed_key_id_names_the_sealing_key(
        primary in any_key(),
        older in any_key(),
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let ring = Keyring::new(&master(primary), &[master(older)]);
        let binding = Binding::new(Purpose::ServerAuth, "u", "s");
        let blob = ring.seal(binding, &plaintext).unwrap();
        prop_assert_eq!(sealed_key_id(&blob), Ok(master(primary).id()));
        prop_assert_eq!(ring.primary(), master(primary).id());
        let rotated = Keyring::new(&master(older), &[master(primary)]);
        prop_assert_eq!(&rotated.open(binding, &blob).unwrap()[..], &plaintext[..]);
        prop_assert_eq!(sealed_key_id(&rotated.seal(binding, &plaintext).unwrap()), Ok(master(older).id()));
    }
}
