//! `contentgate token mint` and `contentgate token inspect`.
//!
//! Minting signs a PAT whose identity is its `jti`; re-issuing with the same `jti` (new
//! audience, issuer or key) yields a different string for the same token. Inspecting answers
//! "is this old token string still my token?": it decodes, verifies when keys are known, and
//! says whether the jti is active, revoked or unknown.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::policy::compile::{compile, Inputs};

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

/// The registry entry to paste into policies/tokens.toml for a freshly minted token.
pub fn registry_entry(jti: &str, name: &str, default_stage: &str) -> String {
    format!(
        "[[token]]\njti = \"{jti}\"\nname = \"{name}\"\ndefault_stage = \"{default_stage}\"\n\n[[token.permission]]\naction = \"read\"\nstages = [\"{default_stage}\"]\n"
    )
}

/// Decodes a JWT and reports on it. With a config, verifies the signature and looks up the
/// jti in the current policies.
pub fn inspect(jwt: &str, config: Option<&Path>) -> Result<String, String> {
    let jwt = jwt.trim();
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT: expected three dot-separated segments".into());
    };
    let decode = |seg: &str| -> Result<Value, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seg)
            .map_err(|e| format!("bad base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("bad JSON: {e}"))
    };
    let header = decode(h)?;
    let claims = decode(c)?;
    let mut out = String::new();
    out.push_str(&format!(
        "header: {}\n",
        serde_json::to_string_pretty(&header).unwrap_or_default()
    ));
    out.push_str(&format!(
        "claims: {}\n",
        serde_json::to_string_pretty(&claims).unwrap_or_default()
    ));
    out.push_str(&format!("sha256: {}\n", crate::auth::token_digest_hex(jwt)));
    let jti = claims.get("jti").and_then(Value::as_str).unwrap_or("");
    out.push_str(&format!(
        "jti: {}\n",
        if jti.is_empty() { "(missing)" } else { jti }
    ));
    let Some(config_path) = config else {
        out.push_str("status: not checked (pass --config to verify and look up the jti)\n");
        return Ok(out);
    };
    Config::load(config_path).map_err(|e| e.to_string())?;
    let mut inputs = Inputs::read(config_path).map_err(|e| e.to_string())?;
    // Authentication does not need the schema map: do not require or fetch it here.
    inputs.needs_schema = false;
    let snap = compile(&inputs, 1, None, None).map_err(|e| e.to_string())?;
    let header_value = format!("Bearer {jwt}");
    let verdict =
        match crate::auth::authenticate(&[header_value.as_bytes()], &snap.registry, &snap.verifier)
        {
            Ok(p) => format!(
                "active — same token as registry entry {:?} (jti {})",
                p.name(),
                p.jti().unwrap_or("")
            ),
            Err(crate::auth::AuthError::Revoked) => {
                format!("revoked — jti {jti} is in the revocation set")
            }
            Err(crate::auth::AuthError::UnknownJti) => {
                format!("unknown — signature valid, but jti {jti} is not in the registry")
            }
            Err(e) => format!("refused — {e} ({})", e.reason()),
        };
    out.push_str(&format!("status: {verdict}\n"));
    Ok(out)
}
