//! Tokens for tests: PATs signed with the fixture keys, raw segments, hand-made HS256 tokens.
#![allow(unused_imports)]
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// Signs a PAT with one of the fixture keys.
pub fn mint(kid: &str, jti: &str, iss: &str, aud: &str) -> String {
    contentgate::install_crypto_provider();
    let (alg, key): (&str, Vec<u8>) = match kid {
        "es" => (
            "ES256",
            std::fs::read(format!("{KEYS}/es256.key.pem")).unwrap(),
        ),
        "rs" => (
            "RS256",
            std::fs::read(format!("{KEYS}/rsa.key.pem")).unwrap(),
        ),
        "ps" => (
            "PS256",
            std::fs::read(format!("{KEYS}/rsa.key.pem")).unwrap(),
        ),
        "ed" => (
            "EdDSA",
            std::fs::read(format!("{KEYS}/ed25519.key.pem")).unwrap(),
        ),
        "hs" => ("HS256", HS_SECRET.as_bytes().to_vec()),
        other => panic!("no fixture key {other}"),
    };
    let aud = [aud.to_string()];
    contentgate::token::mint(&contentgate::token::MintRequest {
        algorithm: alg,
        key: &key,
        kid: Some(kid),
        jti: Some(jti),
        issuer: Some(iss),
        audiences: &aud,
        subject: None,
        expires_in: None,
    })
    .unwrap()
    .0
}

pub fn bearer(jwt: &str) -> String {
    format!("Bearer {jwt}")
}

/// A valid ES256 token for `jti` with the default issuer and audience.
pub fn es(jti: &str) -> String {
    mint("es", jti, "https://issuer.test", "contentgate")
}

/// base64url(JSON) segment.
pub fn seg(v: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

pub fn seg_raw(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A token with arbitrary header and claims text, HS256-signed with the fixture secret.
pub fn hs_raw(header: &str, claims: &str) -> String {
    contentgate::install_crypto_provider();
    let message = format!("{}.{}", seg_raw(header), seg_raw(claims));
    let key = jsonwebtoken::EncodingKey::from_secret(HS_SECRET.as_bytes());
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
        .unwrap();
    format!("{message}.{sig}")
}

/// Milliseconds since the Unix epoch (webhook signature timestamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
