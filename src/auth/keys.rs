//! Verification keys, selected by `kid`.
//!
//! Each key carries its own algorithm: a token's `alg` header only has to agree with it, it
//! never chooses it (no algorithm confusion, no `none`). Keys come from PEM files, secrets in
//! environment variables or files, or a local JWKS file — never from a URL in a token.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::file::FileAuth;
use crate::config::secret::SecretSource;
use crate::config::{resolve, ConfigError};

pub struct Key {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

/// Keys by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, Key>,
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.get(kid)
    }

    /// The only key, for tokens without a `kid` header.
    pub fn sole(&self) -> Option<&Key> {
        match self.keys.len() {
            1 => self.keys.values().next(),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> impl Iterator<Item = (&str, Algorithm)> {
        self.keys.iter().map(|(k, v)| (k.as_str(), v.algorithm))
    }

    /// Loads every key of `[auth]`; `config_path` names the file in errors, relative paths are
    /// resolved against its directory. Key material files are read now, so a reload picks up a
    /// rotated key file.
    pub fn load(
        auth: &FileAuth,
        config_path: &Path,
        text: &str,
    ) -> Result<(KeySet, Vec<u8>), Vec<ConfigError>> {
        let src = crate::config::Source::new(config_path, text);
        let base = config_path.parent().unwrap_or(Path::new("."));
        let mut errors = Vec::new();
        let mut keys: HashMap<String, Key> = HashMap::new();
        // Everything read, so a reload can tell whether the keys changed.
        let mut material = Vec::new();
        for (i, k) in auth.keys.iter().enumerate() {
            let field = |f: &str| format!("auth.key[{i}].{f}");
            let span = Some(k.kid.span());
            let algorithm = match Algorithm::from_str(k.algorithm.get_ref()) {
                Ok(a) => a,
                Err(_) => {
                    errors.push(src.error(Some(k.algorithm.span()), field("algorithm"), format!(
                        "unknown algorithm {:?} (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)",
                        k.algorithm.get_ref()
                    )));
                    continue;
                }
            };
            let bytes = match (&k.public_key_file, &k.secret_env, &k.secret_file) {
                (Some(f), None, None) => {
                    std::fs::read(resolve(base, f)).map_err(|e| format!("cannot read {f}: {e}"))
                }
                (None, Some(var), None) => SecretSource::Env(var).read().map(String::into_bytes),
                (None, None, Some(f)) => SecretSource::File(&resolve(base, f))
                    .read()
                    .map(String::into_bytes),
                _ => Err(
                    "exactly one of public_key_file, secret_env or secret_file is required"
                        .to_string(),
                ),
            };
            let bytes = match bytes {
                Ok(b) => b,
                Err(m) => {
                    errors.push(src.error(span.clone(), field("kid"), m));
                    continue;
                }
            };
            material.extend_from_slice(&bytes);
            let is_secret = k.public_key_file.is_none();
            let decoding = match decoding_key(algorithm, &bytes, is_secret) {
                Ok(d) => d,
                Err(m) => {
                    errors.push(src.error(span.clone(), field("kid"), m));
                    continue;
                }
            };
            insert(
                &mut keys,
                k.kid.get_ref().clone(),
                Key {
                    algorithm,
                    decoding,
                },
                |m| errors.push(src.error(span.clone(), field("kid"), m)),
            );
        }
        if let Some(jwks) = &auth.jwks_file {
            let path = resolve(base, jwks.get_ref());
            match std::fs::read(&path) {
                Err(e) => errors.push(src.error(
                    Some(jwks.span()),
                    "auth.jwks_file",
                    format!("cannot read {}: {e}", path.display()),
                )),
                Ok(bytes) => {
                    material.extend_from_slice(&bytes);
                    match serde_json::from_slice::<JwkSet>(&bytes) {
                        Err(e) => errors.push(ConfigError::new(
                            &path,
                            Some(e.line()),
                            "keys",
                            format!("not a JWKS: {e}"),
                        )),
                        Ok(set) => {
                            for (i, jwk) in set.keys.iter().enumerate() {
                                let field = format!("keys[{i}]");
                                let Some(kid) = jwk.common.key_id.clone() else {
                                    errors.push(ConfigError::new(
                                        &path,
                                        None,
                                        &field,
                                        "a key without \"kid\" cannot be selected",
                                    ));
                                    continue;
                                };
                                let Some(alg) = jwk
                                    .common
                                    .key_algorithm
                                    .and_then(|a| Algorithm::from_str(&a.to_string()).ok())
                                else {
                                    errors.push(ConfigError::new(&path, None, &field, format!("key {kid:?} needs a signing \"alg\"; the algorithm is never taken from a token")));
                                    continue;
                                };
                                // An `oct` key is a shared secret: the same minimum as a file.
                                if let jsonwebtoken::jwk::AlgorithmParameters::OctetKey(o) =
                                    &jwk.algorithm
                                {
                                    use base64::Engine;
                                    let len = base64::engine::general_purpose::URL_SAFE_NO_PAD
                                        .decode(o.value.trim_end_matches('='))
                                        .map_or(0, |b| b.len());
                                    if len < hmac_min(alg) {
                                        errors.push(ConfigError::new(
                                            &path,
                                            None,
                                            &field,
                                            format!(
                                                "key {kid:?}: {alg:?} secret must be at least {} bytes",
                                                hmac_min(alg)
                                            ),
                                        ));
                                        continue;
                                    }
                                }
                                match DecodingKey::from_jwk(jwk) {
                                    Ok(d) if d.family() == alg.family() => insert(
                                        &mut keys,
                                        kid,
                                        Key {
                                            algorithm: alg,
                                            decoding: d,
                                        },
                                        |m| errors.push(ConfigError::new(&path, None, &field, m)),
                                    ),
                                    Ok(_) => errors.push(ConfigError::new(
                                        &path,
                                        None,
                                        &field,
                                        format!("key {kid:?}: key type does not match alg {alg:?}"),
                                    )),
                                    Err(e) => errors.push(ConfigError::new(
                                        &path,
                                        None,
                                        &field,
                                        format!("key {kid:?}: {e}"),
                                    )),
                                }
                            }
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok((KeySet { keys }, material))
        } else {
            Err(errors)
        }
    }
}

/// One kid, one key: a second key under the same kid (same or another family) would make the
/// choice depend on the token, so it is a start-up error, not a per-request surprise.
fn insert(keys: &mut HashMap<String, Key>, kid: String, key: Key, mut err: impl FnMut(String)) {
    if let Some(existing) = keys.get(&kid) {
        let what = if existing.algorithm.family() == key.algorithm.family() {
            "twice"
        } else {
            "with two key families"
        };
        err(format!(
            "kid {kid:?} is configured {what} ({:?} and {:?})",
            existing.algorithm, key.algorithm
        ));
        return;
    }
    keys.insert(kid, key);
}

/// HMAC keys shorter than the hash output are brute-forceable (RFC 7518 §3.2).
fn hmac_min(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

fn decoding_key(alg: Algorithm, bytes: &[u8], is_secret: bool) -> Result<DecodingKey, String> {
    use jsonwebtoken::AlgorithmFamily as F;
    match (alg.family(), is_secret) {
        (F::Hmac, true) => {
            let min = hmac_min(alg);
            if bytes.len() < min {
                return Err(format!("{alg:?} secret must be at least {min} bytes"));
            }
            Ok(DecodingKey::from_secret(bytes))
        }
        (F::Hmac, false) => Err(format!(
            "{alg:?} needs a shared secret (secret_env or secret_file), not a public key file"
        )),
        (_, true) => Err(format!("{alg:?} needs a public_key_file (PEM)")),
        (F::Rsa, false) => {
            DecodingKey::from_rsa_pem(bytes).map_err(|e| format!("not an RSA public key PEM: {e}"))
        }
        (F::Ec, false) => {
            DecodingKey::from_ec_pem(bytes).map_err(|e| format!("not an EC public key PEM: {e}"))
        }
        (F::Ed, false) => DecodingKey::from_ed_pem(bytes)
            .map_err(|e| format!("not an Ed25519 public key PEM: {e}")),
    }
}
