//! `contentgate token mint` and `contentgate token inspect`.
//!
//! Minting signs a PAT whose identity is its `jti`; re-issuing with the same `jti` (new
//! audience, issuer or key) yields a different string for the same token. Inspecting answers
//! "is this old token string still my token?": it decodes, verifies when keys are known, and
//! says whether the jti is active, revoked or unknown.

use std::path::Path;

use serde_json::Value;

use crate::config::Config;
use crate::policy::compile::{compile, Inputs};

pub use crate::auth::mint::{mint, MintRequest};

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
    let (header, claims) = crate::auth::decode_unverified(jwt)?;
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
