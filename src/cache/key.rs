//! The cache key: a versioned struct hashed field by field.
//!
//! Everything that changes a stored answer is in it, and nothing else: the endpoint, the
//! request (document, operation name, variables in canonical form: key order irrelevant, `1`
//! and `"1"` distinct; digested once per parsed request), the effective stage (including an
//! injected default), the effective locales in the client's order, and the principal's
//! permission fingerprint (identical grants share entries; nothing crosses scopes). The struct
//! is destructured exhaustively when hashed, so a field added without being hashed does not
//! compile; every variable-length field is length-prefixed.

use sha2::{Digest, Sha256};

use crate::graphql::parsed::field;

/// Bump when the key's meaning changes, so old entries can never be read under new rules
/// (3: the request enters as its digest).
const KEY_VERSION: u8 = 3;

pub struct CacheKey<'a> {
    pub endpoint: &'a str,
    /// [`crate::graphql::parsed::request_digest`]: query, operation name, canonical variables.
    pub request: &'a [u8; 32],
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
            request,
            stage,
            locales,
            permissions,
            credential,
        } = self;
        let mut h = Sha256::new();
        h.update([KEY_VERSION]);
        field(&mut h, endpoint.as_bytes());
        h.update(request);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn key(vars: Value, stage: &str, locales: &[&str], perms: u8) -> KeyDigest {
        let request = crate::graphql::request::GraphqlRequest {
            query: "{ posts { id } }".into(),
            operation_name: None,
            variables: vars.as_object().cloned().unwrap_or_default(),
        };
        CacheKey {
            endpoint: "/cdn",
            request: &crate::graphql::parsed::request_digest(&request),
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
    fn query_and_operation_name_are_part_of_the_key() {
        let digest = |query: &str, name: Option<&str>| {
            let request = crate::graphql::request::GraphqlRequest {
                query: query.into(),
                operation_name: name.map(str::to_string),
                variables: Default::default(),
            };
            CacheKey {
                endpoint: "/cdn",
                request: &crate::graphql::parsed::request_digest(&request),
                stage: "PUBLISHED",
                locales: &[],
                permissions: &[0; 32],
                credential: None,
            }
            .digest()
        };
        let base = digest("query A { a } query B { b }", Some("A"));
        assert_eq!(base, digest("query A { a } query B { b }", Some("A")));
        assert_ne!(base, digest("query A { a } query B { b }", Some("B")));
        assert_ne!(base, digest("query A { a } query B { b }", None));
        assert_ne!(base, digest("query A { a } query B { b } ", Some("A")));
        // Length prefixes: moving a byte between the query and the name changes the key.
        assert_ne!(digest("{ a }A", None), digest("{ a }", Some("A")));
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
