//! Feeds arbitrary bytes to `Keyring::open` (with a fixed keyring and binding) and to
//! `sealed_key_id`. Neither may panic, and random bytes must never open: the only outcomes are
//! `Malformed`, `UnknownKey` or `Decrypt`, consistent with what `sealed_key_id` reads.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use warden::crypto::{Binding, CryptoError, Keyring, MasterKey, Purpose, sealed_key_id};

/// base64 of 32 bytes 0x01..=0x20 (primary) and of 32 bytes 0x42 (an older key).
const PRIMARY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const OLDER: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

static RING: LazyLock<Keyring> = LazyLock::new(|| {
    let primary = MasterKey::from_base64(PRIMARY).expect("constant key");
    let older = MasterKey::from_base64(OLDER).expect("constant key");
    Keyring::new(&primary, &[older])
});

fuzz_target!(|blob: &[u8]| {
    let ring = &*RING;
    let binding = Binding::new(Purpose::GrantTokens, "fuzz-user", "fuzz-server");
    let opened = ring.open(binding, blob);
    let id = sealed_key_id(blob);
    match (opened, id) {
        (Ok(_), _) => panic!("arbitrary bytes opened"),
        (Err(CryptoError::Malformed), Err(CryptoError::Malformed)) => {}
        (Err(CryptoError::UnknownKey(k)), Ok(id)) => assert!(k == id && !ring.key_ids().contains(&id)),
        (Err(CryptoError::Decrypt), Ok(id)) => assert!(ring.key_ids().contains(&id)),
        (opened, id) => panic!("inconsistent outcome: open {opened:?}, sealed_key_id {id:?}"),
    }
});
