//! Parsed requests kept for repeats: the principal-independent analysis of a request and the
//! exact bytes the gateway forwards for it, by the digest of the request's own bytes.
//!
//! Weighed in bytes against a budget, and filled only with requests that were admitted, so
//! nothing a refused request sent is retained.

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::document::Document;
use super::request::GraphqlRequest;

/// The document cache key: endpoint kind, method, and the exact body or query string.
pub fn key(endpoint: u8, post: bool, bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([endpoint, u8::from(post)]);
    h.update(bytes);
    h.finalize().into()
}

/// What a request asks, whoever asks it: SHA-256 over its query, operation name and variables
/// in canonical form (object keys sorted at every depth, so their order is irrelevant; `1` and
/// `"1"` differ), each length-prefixed. Part of the cache key, computed once per parsed request.
pub fn request_digest(request: &GraphqlRequest) -> [u8; 32] {
    let GraphqlRequest {
        query,
        operation_name,
        variables,
    } = request;
    let mut h = Sha256::new();
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
    h.finalize().into()
}

/// One variable-length field of a digest: its length, then its bytes (so no two sequences of
/// fields hash alike). Also the cache key's.
pub fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// JSON with object keys sorted at every depth; numbers and strings keep their JSON form, so
/// `1` and `"1"` differ. Recurses as deep as the variables: at most 128 levels, which
/// serde_json's parse refuses to exceed.
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

/// The principal-independent analysis of a request: what it asks, everything it makes the
/// CMS touch, and the exact bytes that will be forwarded (re-serialized from what was parsed).
#[derive(Debug)]
pub struct Parsed {
    pub request: GraphqlRequest,
    /// [`request_digest`] of `request`, computed by the first cached read that needs it (a
    /// mutation or a refused request never does).
    digest: std::sync::OnceLock<[u8; 32]>,
    pub document: Document,
    /// POST: the JSON body sent upstream; GET: the query string sent upstream.
    pub forward: bytes::Bytes,
    /// Bytes this entry holds, as the document cache weighs it.
    weight: u32,
}

impl Parsed {
    /// [`request_digest`] of the request, computed once.
    pub fn digest(&self) -> &[u8; 32] {
        self.digest.get_or_init(|| request_digest(&self.request))
    }

    pub fn new(request: GraphqlRequest, document: Document, post: bool) -> Self {
        let forward = if post {
            request.to_json_body()
        } else {
            bytes::Bytes::from(request.to_query_string())
        };
        // The request's text, its parsed variables (a `serde_json::Value` node costs far more
        // than its JSON text: ~80 bytes for `{"":0}`), the forwarded copy, the analysis.
        let variables: u64 = request.variables.values().map(super::args::nodes).sum();
        let weight = (request.query.len() + forward.len() + document.weight()) as u64
            + variables.saturating_mul(VALUE_NODE_BYTES)
            + std::mem::size_of::<Self>() as u64
            + 64;
        Self {
            digest: std::sync::OnceLock::new(),
            request,
            document,
            forward,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        }
    }
}

/// Heap bytes of one parsed JSON node (a `Value` plus its map or vector slot), for weighing.
const VALUE_NODE_BYTES: u64 = 96;

/// Parsed requests by digest of their exact bytes (endpoint kind, method, body or query
/// string), so a repeated query skips JSON and GraphQL parsing and the schema walk. Weighed in
/// bytes against a budget; an entry is stored only once its request was admitted, so nothing
/// a refused request sent is retained. Shared by consecutive snapshots while the schema map
/// is the same; authorization still runs per request against the principal's current grants.
pub struct DocumentCache {
    cache: moka::sync::Cache<[u8; 32], Arc<Parsed>>,
    budget: u64,
}

impl DocumentCache {
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(budget_bytes)
                .weigher(|_, v: &Arc<Parsed>| v.weight)
                .build(),
            budget: budget_bytes,
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes held (after pending evictions), for tests and metrics.
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Parsed>> {
        self.cache.get(key)
    }

    /// Stores the analysis of a request that was admitted.
    pub fn admit(&self, key: [u8; 32], parsed: &Arc<Parsed>) {
        self.cache.insert(key, parsed.clone());
    }
}
