//! Authentication: from the Authorization header to a [`Principal`].
//!
//! A PAT is a bearer JWT whose identity is its `jti`. The signature is checked with the key
//! named by `kid` (the key fixes the algorithm), the claims with strict types, and then the
//! `jti` must be in the registry and not revoked — on every request, against the snapshot the
//! request took. Verified tokens are cached by the sha256 of the token string, so a repeated
//! token skips the signature but never the registry and revocation check.

pub mod error;
pub mod keys;
pub mod mint;
pub mod registry;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use error::AuthError;
use keys::KeySet;

use crate::permissions::PrincipalPolicy;
pub use registry::{Registry, TokenEntry};

/// Tokens above this size are refused before any decoding: a PAT is a few hundred bytes, and
/// base64 + JSON work on attacker-sized input is pure cost.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Who is making the request.
#[derive(Debug, Clone)]
pub enum Principal {
    Public(Arc<PrincipalPolicy>),
    Token(Arc<TokenEntry>),
}

impl Principal {
    pub fn policy(&self) -> &PrincipalPolicy {
        match self {
            Self::Public(p) => p,
            Self::Token(t) => &t.policy,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Public(_) => "public",
            Self::Token(t) => &t.name,
        }
    }

    pub fn jti(&self) -> Option<&str> {
        match self {
            Self::Public(_) => None,
            Self::Token(t) => Some(&t.jti),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Public(_) => "public",
            Self::Token(_) => "token",
        }
    }
}

/// What a verified token proved, cached by token digest.
#[derive(Debug, Clone)]
struct Verified {
    jti: Arc<str>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// Signature and claim verification: keys plus the accepted issuers, audiences and leeway.
/// Shared between snapshots while `[auth]` and the key files are unchanged, so a policy reload
/// keeps the verified-token cache warm.
pub struct Verifier {
    keys: KeySet,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    cache: moka::sync::Cache<[u8; 32], Verified>,
    /// Tokens whose signature check failed, by digest: a client repeating a bogus token does
    /// not buy a signature verification per request (bounded, short-lived).
    failed: moka::sync::Cache<[u8; 32], AuthError>,
    /// Digest of the settings and key material this verifier was built from.
    pub source_digest: [u8; 32],
}

/// Failed token digests remembered (about 100 bytes each).
const FAILED_TOKENS: u64 = 10_000;

/// Header parameters the gateway looks at. Decoding into a struct (not a map) makes a
/// duplicated parameter an error instead of last-wins.
#[derive(Deserialize)]
struct RawHeader {
    alg: Value,
    kid: Option<Value>,
    crit: Option<Value>,
    jku: Option<Value>,
    x5u: Option<Value>,
    jwk: Option<Value>,
    x5c: Option<Value>,
}

/// Registered claims with loose types, checked strictly by hand: jsonwebtoken lets a
/// wrong-typed `iss`/`aud` through. A duplicated claim fails to decode.
#[derive(Deserialize)]
struct RawClaims {
    jti: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
}

impl Verifier {
    pub fn new(
        keys: KeySet,
        issuers: Vec<String>,
        audiences: Vec<String>,
        leeway: Duration,
        cache_entries: u64,
        source_digest: [u8; 32],
    ) -> Self {
        Self {
            keys,
            issuers,
            audiences,
            leeway,
            cache: moka::sync::Cache::builder()
                .max_capacity(cache_entries)
                .build(),
            failed: moka::sync::Cache::builder()
                .max_capacity(FAILED_TOKENS)
                .time_to_live(Duration::from_secs(300))
                .build(),
            source_digest,
        }
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn cached_tokens(&self) -> u64 {
        self.cache.entry_count()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn check_times(&self, exp: Option<u64>, nbf: Option<u64>) -> Result<(), AuthError> {
        let now = Self::now();
        let leeway = self.leeway.as_secs();
        if exp.is_some_and(|exp| exp.saturating_add(leeway) <= now) {
            return Err(AuthError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }

    /// Verifies `token` and returns the registry entry it stands for, refusing unknown and
    /// revoked jtis. `digest` is sha256(token).
    fn verify(
        &self,
        token: &str,
        digest: &[u8; 32],
        registry: &Registry,
    ) -> Result<Arc<TokenEntry>, AuthError> {
        if let Some(v) = self.cache.get(digest) {
            self.check_times(v.exp, v.nbf)?;
            return lookup(registry, &v.jti);
        }
        if let Some(e) = self.failed.get(digest) {
            return Err(e);
        }
        let (header_b64, claims_b64) = split(token)?;
        let header: RawHeader = decode_segment(header_b64)
            .ok_or(AuthError::Malformed("header is not base64url JSON"))?;
        let alg = match &header.alg {
            Value::String(a) => a.as_str(),
            _ => return Err(AuthError::Malformed("alg is not a string")),
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgNone);
        }
        if header.crit.is_some() {
            return Err(AuthError::CritHeader);
        }
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(AuthError::KeyReference);
        }
        let key = match &header.kid {
            Some(Value::String(kid)) => self.keys.get(kid),
            Some(_) => return Err(AuthError::Malformed("kid is not a string")),
            None => self.keys.sole(),
        };
        let Some(key) = key else {
            // No key for this token: it may be a CMS-issued PAT pinned by digest.
            return self.verify_pinned(claims_b64, digest, registry);
        };
        if jsonwebtoken::Algorithm::from_str_exact(alg) != Some(key.algorithm) {
            return Err(AuthError::AlgMismatch);
        }
        let mut validation = Validation::new(key.algorithm);
        // PATs are permanent: exp is optional. A configured issuer or audience list makes the
        // claim required (jsonwebtoken only checks the claims that are present otherwise).
        validation.required_spec_claims.clear();
        if !self.issuers.is_empty() {
            validation.required_spec_claims.insert("iss".into());
        }
        if !self.audiences.is_empty() {
            validation.required_spec_claims.insert("aud".into());
        }
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
        }
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::BadIssuer,
                ErrorKind::InvalidAudience => AuthError::BadAudience,
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::BadIssuer,
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::BadAudience,
                ErrorKind::InvalidAlgorithm => AuthError::AlgMismatch,
                ErrorKind::Json(_) => {
                    AuthError::MalformedClaims("claims are not a JSON object with unique keys")
                }
                ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                    AuthError::Malformed("bad segment encoding")
                }
                _ => AuthError::BadSignature,
            },
        );
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                // Failures that no later snapshot or clock can turn into a success.
                if matches!(
                    e,
                    AuthError::BadSignature | AuthError::AlgMismatch | AuthError::Malformed(_)
                ) {
                    self.failed.insert(*digest, e.clone());
                }
                return Err(e);
            }
        };
        let verified = self.check_claims(&data.claims, true)?;
        self.check_times(verified.exp, verified.nbf)?;
        let entry = lookup(registry, &verified.jti)?;
        self.cache.insert(*digest, verified);
        Ok(entry)
    }

    /// A registry entry may pin sha256 digests of exact token strings whose signing key the
    /// gateway does not have; a constant-time digest match stands in for the signature. Never
    /// cached: the pin lives in the registry and is re-checked against every snapshot.
    fn verify_pinned(
        &self,
        claims_b64: &str,
        digest: &[u8; 32],
        registry: &Registry,
    ) -> Result<Arc<TokenEntry>, AuthError> {
        let claims: RawClaims = decode_segment(claims_b64).ok_or(AuthError::UnknownKey)?;
        let verified = self
            .check_claims(&claims, false)
            .map_err(|_| AuthError::UnknownKey)?;
        // The pin stands in for the signature, so it is checked before anything the registry
        // says about the jti: an unsigned token must not learn whether a jti is revoked.
        let Some(entry) = registry.tokens.get(&*verified.jti).cloned() else {
            return Err(AuthError::UnknownKey);
        };
        let pinned = entry
            .pinned_sha256
            .iter()
            .fold(0u8, |acc, pin| acc | pin.ct_eq(digest).unwrap_u8());
        if pinned != 1 {
            return Err(AuthError::UnknownKey);
        }
        self.check_times(verified.exp, verified.nbf)?;
        lookup(registry, &verified.jti)
    }

    /// Strict claim types. `check_iss_aud`: whether issuer and audience lists apply (they do
    /// not to pinned CMS-issued tokens, whose issuer is the CMS).
    fn check_claims(&self, c: &RawClaims, check_iss_aud: bool) -> Result<Verified, AuthError> {
        let jti: Arc<str> = match &c.jti {
            None => return Err(AuthError::MissingJti),
            Some(Value::String(s)) if s.is_empty() => return Err(AuthError::MissingJti),
            Some(Value::String(s)) => Arc::from(s.as_str()),
            Some(_) => return Err(AuthError::MalformedClaims("jti is not a string")),
        };
        let time = |v: &Option<Value>, name: &'static str| match v {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or(AuthError::MalformedClaims(name)),
            Some(_) => Err(AuthError::MalformedClaims(name)),
        };
        let exp = time(&c.exp, "exp is not a number")?;
        // A token issued in the future (beyond the leeway) is not valid yet either: an `iat`
        // years ahead is a minting mistake or a forged clock, never a token to accept.
        let iat = time(&c.iat, "iat is not a number")?;
        let nbf = match (time(&c.nbf, "nbf is not a number")?, iat) {
            (Some(n), Some(i)) => Some(n.max(i)),
            (n, i) => n.or(i),
        };
        match &c.iss {
            None | Some(Value::String(_)) => {}
            Some(_) if !check_iss_aud => {}
            Some(_) => return Err(AuthError::BadIssuer),
        }
        if check_iss_aud {
            match &c.aud {
                None | Some(Value::String(_)) => {}
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
                Some(_) => return Err(AuthError::BadAudience),
            }
        }
        Ok(Verified { jti, exp, nbf })
    }
}

fn lookup(registry: &Registry, jti: &str) -> Result<Arc<TokenEntry>, AuthError> {
    if registry.revoked.contains(jti) {
        return Err(AuthError::Revoked);
    }
    registry
        .tokens
        .get(jti)
        .cloned()
        .ok_or(AuthError::UnknownJti)
}

/// `header.claims.signature`, exactly three non-empty-header segments.
fn split(token: &str) -> Result<(&str, &str), AuthError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(c), Some(_), None) if !h.is_empty() && !c.is_empty() => Ok((h, c)),
        _ => Err(AuthError::Malformed(
            "expected three dot-separated segments",
        )),
    }
}

fn decode_segment<T: for<'de> Deserialize<'de>>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

trait FromStrExact: Sized {
    fn from_str_exact(s: &str) -> Option<Self>;
}

impl FromStrExact for jsonwebtoken::Algorithm {
    /// jsonwebtoken's `FromStr` is exact already; wrapped so a future lenient parse cannot
    /// widen what the header may say.
    fn from_str_exact(s: &str) -> Option<Self> {
        let alg: Self = s.parse().ok()?;
        (format!("{alg:?}") == s).then_some(alg)
    }
}

/// Resolves the request's principal. `authorization`: every Authorization header value.
pub fn authenticate(
    authorization: &[&[u8]],
    registry: &Registry,
    verifier: &Verifier,
) -> Result<Principal, AuthError> {
    let raw = match authorization {
        [] => {
            return if registry.public.permissions.is_empty() && !registry.public.introspection {
                Err(AuthError::PublicDenied)
            } else {
                Ok(Principal::Public(registry.public.clone()))
            }
        }
        [one] => *one,
        _ => return Err(AuthError::DuplicateHeader),
    };
    let value = std::str::from_utf8(raw)
        .map_err(|_| AuthError::HeaderNotText)?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::UnsupportedScheme);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge(MAX_TOKEN_BYTES));
    }
    if token.contains(' ') {
        return Err(AuthError::Malformed("whitespace inside the token"));
    }
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    verifier
        .verify(token, &digest, registry)
        .map(Principal::Token)
}

/// A JWT's header and claims, decoded without any verification (for "is this my token?"
/// screens; never for a decision).
pub fn decode_unverified(jwt: &str) -> Result<(serde_json::Value, serde_json::Value), String> {
    let mut parts = jwt.trim().split('.');
    let (Some(h), Some(c), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT: expected three dot-separated segments".into());
    };
    let decode = |seg: &str| -> Result<serde_json::Value, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seg)
            .map_err(|e| format!("bad base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("bad JSON: {e}"))
    };
    Ok((decode(h)?, decode(c)?))
}

/// sha256 of a token string, hex: what a registry entry pins.
pub fn token_digest_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}
