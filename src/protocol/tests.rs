use proptest::prelude::*;
use serde_json::json;

use super::*;

fn line(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn decodes_requests() {
    let r = decode(&line(&json!({"jsonrpc":"2.0","id":7,"method":"status"}))).unwrap();
    assert_eq!((r.id, r.method.as_str(), r.params), (Some(json!(7)), "status", json!({})));
    let r = decode(&line(&json!({"jsonrpc":"2.0","id":"a","method":"m","params":{"x":1}}))).unwrap();
    assert_eq!(r.id, Some(json!("a")));
    assert_eq!(decode(&line(&json!({"jsonrpc":"2.0","method":"m"}))).unwrap().id, None);
}

#[test]
fn refuses_what_is_not_a_request() {
    let code = |bytes: &[u8]| decode(bytes).unwrap_err().1.code;
    assert_eq!(code(b"{nope"), codes::PARSE_ERROR);
    assert_eq!(code(&[0xff, 0xfe, b'{']), codes::PARSE_ERROR);
    assert_eq!(code(b"[]"), codes::INVALID_REQUEST);
    assert_eq!(code(b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}]"), codes::INVALID_REQUEST);
    assert_eq!(code(b"42"), codes::INVALID_REQUEST);
    assert_eq!(code(&line(&json!({"jsonrpc":"1.0","id":1,"method":"m"}))), codes::INVALID_REQUEST);
    assert_eq!(code(&line(&json!({"jsonrpc":"2.0","id":1}))), codes::INVALID_REQUEST);
    assert_eq!(code(&line(&json!({"jsonrpc":"2.0","id":{},"method":"m"}))), codes::INVALID_REQUEST);
    assert_eq!(code(&line(&json!({"jsonrpc":"2.0","id":1,"method":"m","params":[1]}))), codes::INVALID_REQUEST);
    // The id is kept when it could be read.
    let (id, _) = decode(&line(&json!({"jsonrpc":"2.0","id":5,"method":3}))).unwrap_err();
    assert_eq!(id, json!(5));
}

#[test]
fn param_errors_elide_values() {
    let err = serde_json::from_value::<PutParams>(json!({
        "user": "u", "name": "n", "transport": {"type":"http","url":"https://x"},
        "auth": {"type": "headers", "headers": "X-API-Key: CANARY-secret"}
    }))
    .unwrap_err();
    let rpc = RpcError::invalid_params("servers.put", &err);
    assert!(!rpc.message.contains("CANARY"), "{}", rpc.message);
    assert_eq!(rpc.code, codes::INVALID_PARAMS);
    assert_eq!(elide_strings(r#"invalid type: string "abc\"def", expected"#), r#"invalid type: string "…", expected"#);
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z.]{0,12}".prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| json!(m)),
        ]
    })
}

/// Request-like objects: each member present or not, of the right type or not.
fn request_shape() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::option::of(prop_oneof![Just(json!("2.0")), json_value()]),
        prop::option::of(prop_oneof![
            any::<u32>().prop_map(|n| json!(n)),
            "[a-z0-9]{1,8}".prop_map(|s| json!(s)),
            json_value()
        ]),
        prop::option::of(prop_oneof![prop::sample::select(METHODS).prop_map(|m| json!(m)), json_value()]),
        prop::option::of(json_value()),
    )
        .prop_map(|(jsonrpc, id, method, params)| {
            let mut o = serde_json::Map::new();
            for (k, v) in [("jsonrpc", jsonrpc), ("id", id), ("method", method), ("params", params)] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            serde_json::Value::Object(o)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn shapes_decode_exactly_when_valid(shape in request_shape()) {
        let valid = shape.get("jsonrpc") == Some(&json!("2.0"))
            && shape.get("method").is_some_and(serde_json::Value::is_string)
            && shape.get("params").is_none_or(serde_json::Value::is_object)
            && shape.get("id").is_none_or(|id| id.is_number() || id.is_string());
        match decode(&line(&shape)) {
            Ok(r) => {
                prop_assert!(valid);
                prop_assert_eq!(r.id.as_ref(), shape.get("id"));
            }
            Err((id, e)) => {
                prop_assert!(!valid);
                prop_assert!(e.code == codes::INVALID_REQUEST || e.code == codes::PARSE_ERROR);
                // Encoding the error always works and is one line.
                let out = encode_error(&id, &e);
                prop_assert!(!out.contains(&b'\n'));
            }
        }
    }
}
