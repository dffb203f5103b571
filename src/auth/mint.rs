//! Signing Permanent Auth Tokens: the identity of a token is its `jti`; signing again with the
//! same `jti` (another audience, issuer or key) yields a new string for the same token. Used
//! by `contentgate token mint` and by the management API (which never stores the string).

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

pub struct MintRequest<'a> {
    pub algorithm: &'a str,
    /// PEM private key (RSA, EC, Ed25519) or the raw HMAC secret.
    pub key: &'a [u8],
    pub kid: Option<&'a str>,
    pub jti: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub audiences: &'a [String],
    pub subject: Option<&'a str>,
    pub expires_in: Option<Duration>,
}

/// Signs a PAT. Returns the JWT and its jti.
pub fn mint(req: &MintRequest) -> Result<(String, String), String> {
    let alg = Algorithm::from_str(req.algorithm)
        .map_err(|_| format!("unknown algorithm {:?}", req.algorithm))?;
    use jsonwebtoken::AlgorithmFamily as F;
    let key = match alg.family() {
        F::Hmac => EncodingKey::from_secret(req.key),
        F::Rsa => EncodingKey::from_rsa_pem(req.key)
            .map_err(|e| format!("not an RSA private key PEM: {e}"))?,
        F::Ec => EncodingKey::from_ec_pem(req.key)
            .map_err(|e| format!("not an EC private key PEM (PKCS#8): {e}"))?,
        F::Ed => EncodingKey::from_ed_pem(req.key)
            .map_err(|e| format!("not an Ed25519 private key PEM: {e}"))?,
    };
    let jti = req
        .jti
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = Map::new();
    claims.insert("jti".into(), json!(jti));
    claims.insert("iat".into(), json!(now));
    if let Some(iss) = req.issuer {
        claims.insert("iss".into(), json!(iss));
    }
    match req.audiences {
        [] => {}
        [one] => {
            claims.insert("aud".into(), json!(one));
        }
        many => {
            claims.insert("aud".into(), json!(many));
        }
    }
    if let Some(sub) = req.subject {
        claims.insert("sub".into(), json!(sub));
    }
    if let Some(d) = req.expires_in {
        claims.insert("exp".into(), json!(now + d.as_secs()));
    }
    let mut header = Header::new(alg);
    header.kid = req.kid.map(str::to_string);
    let jwt = jsonwebtoken::encode(&header, &Value::Object(claims), &key)
        .map_err(|e| format!("signing failed: {e}"))?;
    Ok((jwt, jti))
}
