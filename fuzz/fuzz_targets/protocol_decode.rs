//! Feeds arbitrary bytes to the control protocol's line decoder. It must never panic; a decoded
//! request must re-encode (as a result echoing its params) to one JSON line, and an error must
//! encode to one line too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warden::protocol::{decode, encode_error, encode_result};

fuzz_target!(|line: &[u8]| {
    match decode(line) {
        Ok(request) => {
            let id = request.id.clone().unwrap_or(Value::Null);
            let out = encode_result(&id, &request.params);
            assert!(!out.is_empty(), "encode_result produced nothing");
            assert!(!out.contains(&b'\n'), "encoded response spans lines");
            let back: Value = serde_json::from_slice(&out).expect("encoded response is JSON");
            assert_eq!(back["id"], id);
            assert_eq!(back["result"], request.params);
        }
        Err((id, error)) => {
            assert!(id.is_null() || id.is_number() || id.is_string(), "reply id {id}");
            let out = encode_error(&id, &error);
            assert!(!out.is_empty(), "encode_error produced nothing");
            assert!(!out.contains(&b'\n'), "encoded error spans lines");
        }
    }
});
