//! The cache key: a versioned struct hashed field by field.
//!
//! Everything that changes a stored answer is in it, and nothing else: the endpoint, the
//! document, the operation name, the variables in canonical form (key order irrelevant, `1` and
//! `"1"` distinct), the effective stage (including an injected default), the effective locales
//! in the client's order, and the principal's permission fingerprint (identical grants share
//! entries; nothing crosses scopes). The struct is destructured exhaustively when hashed, so a
//! field added without being hashed does not compile; every field is length-prefixed.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Bump when the key's meaning changes, so old entries can never be read under new rules.
const KEY_VERSION: u8 = 2;

pub struct CacheKey<'a> {
    pub endpoint: &'a str,
    pub query: &'a str,
    pub operation_name: Option<&'a str>,
    pub variables: &'a serde_json::Map<String, Value>,
    /// The `gcms-stage` the upstream sees (client header or injected default).
    pub stage: &'a str,
    /// The `gcms-locales` header, in order (arguments are part of the document).
    pub locales: &'a [&'a str],
    pub permissions: &'a [u8; 32],
    /// `forward` credential mode: sha256 of the client's `Authorization`, since the CMS then
    /// answers for that credential (two tokens with equal grants may see different content).
    pub credential: Option<[u8; 32]>,
}

pub type KeyDigest = [u8; 32];

impl CacheKey<'_> {
    pub fn digest(&self) -> KeyDigest {
        let CacheKey {
            endpoint,
            query,
            operation_name,
            variables,
            stage,
            locales,
            permissions,
            credential,
        } = self;
        let mut h = Sha256::new();
        h.update([KEY_VERSION]);
        field(&mut h, endpoint.as_bytes());
        field(&mut h, query.as_bytes());
        match operation_name {
            Some(n) => {
                h.update([1]);
                field(&mut h, n.as_bytes());
            }
            None => h.update([0]),
        }
        let mut canonical = Vec::with_capacity(64);
        canonical_object(variables, &mut canonical);
        field(&mut h, &canonical);
        field(&mut h, stage.as_bytes());
        h.update((locales.len() as u64).to_be_bytes());
        for l in locales.iter() {
            field(&mut h, l.as_bytes());
        }
        h.update(permissions);
        match credential {
            Some(c) => {
                h.update([1]);
                h.update(c);
            }
            None => h.update([0]),
        }
        h.finalize().into()
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// JSON with object keys sorted at every depth; numbers and strings keep their JSON form, so
/// `1` and `"1"` differ.
fn canonical_object(map: &serde_json::Map<String, Value>, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push(b'{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // A JSON string encoder that cannot fail for a String.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        canonical_json(&map[*k], out);
    }
    out.push(b'}');
}

fn canonical_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(vars: Value, stage: &str, locales: &[&str], perms: u8) -> KeyDigest {
        let vars = vars.as_object().cloned().unwrap_or_default();
        CacheKey {
            endpoint: "/cdn",
            query: "{ posts { id } }",
            operation_name: None,
            variables: &vars,
            stage,
            locales,
            permissions: &[perms; 32],
            credential: None,
        }
        .digest()
    }

    #[test]
    fn variable_key_order_is_irrelevant_but_types_are_not() {
        assert_eq!(
            key(json!({"a": 1, "b": {"x": 1, "y": 2}}), "P", &[], 0),
            key(json!({"b": {"y": 2, "x": 1}, "a": 1}), "P", &[], 0)
        );
        assert_ne!(
            key(json!({"a": 1}), "P", &[], 0),
            key(json!({"a": "1"}), "P", &[], 0)
        );
    }

    #[test]
    fn stage_locales_order_and_grants_are_part_of_the_key() {
        let base = key(json!({}), "PUBLISHED", &["en", "de"], 0);
        assert_ne!(base, key(json!({}), "DRAFT", &["en", "de"], 0));
        assert_ne!(base, key(json!({}), "PUBLISHED", &["de", "en"], 0));
        assert_ne!(base, key(json!({}), "PUBLISHED", &["en", "de"], 1));
        assert_eq!(base, key(json!({}), "PUBLISHED", &["en", "de"], 0));
    }
}
