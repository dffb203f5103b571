//! Why a request failed authentication. Each variant has a stable `reason()` used in the error
//! body and as the `reason` label of `contentgate_auth_results_total`; none of them carries the
//! token or any part of it.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("more than one Authorization header")]
    DuplicateHeader,
    #[error("the Authorization header is not valid text")]
    HeaderNotText,
    #[error("unsupported authorization scheme; use Bearer")]
    UnsupportedScheme,
    #[error("the Bearer token is empty")]
    MissingToken,
    #[error("authentication required: the public policy grants nothing")]
    PublicDenied,
    #[error("token larger than {0} bytes")]
    TooLarge(usize),
    #[error("token is not a well-formed JWT ({0})")]
    Malformed(&'static str),
    #[error("unsigned tokens (alg none) are refused")]
    AlgNone,
    #[error("token header has a crit parameter, which is not supported")]
    CritHeader,
    #[error("token header references a key by URL or embeds one (jku/x5u/jwk/x5c); these are never fetched")]
    KeyReference,
    #[error("no key is configured for this token")]
    UnknownKey,
    #[error("token algorithm does not match the configured key")]
    AlgMismatch,
    #[error("signature verification failed")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    BadIssuer,
    #[error("token audience is not accepted")]
    BadAudience,
    #[error("token claims are malformed ({0})")]
    MalformedClaims(&'static str),
    #[error("token has no jti")]
    MissingJti,
    #[error("token is not in the registry")]
    UnknownJti,
    #[error("token has been revoked")]
    Revoked,
}

impl AuthError {
    /// Stable machine-readable reason (closed set).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::DuplicateHeader => "duplicate_header",
            Self::HeaderNotText => "malformed_header",
            Self::UnsupportedScheme => "unsupported_scheme",
            Self::MissingToken => "missing_token",
            Self::PublicDenied => "missing_credentials",
            Self::TooLarge(_) => "token_too_large",
            Self::Malformed(_) => "malformed_token",
            Self::AlgNone => "alg_none",
            Self::CritHeader => "crit_header",
            Self::KeyReference => "key_reference",
            Self::UnknownKey => "unknown_key",
            Self::AlgMismatch => "alg_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadIssuer => "bad_issuer",
            Self::BadAudience => "bad_audience",
            Self::MalformedClaims(_) => "malformed_claims",
            Self::MissingJti => "missing_jti",
            Self::UnknownJti => "unknown_jti",
            Self::Revoked => "revoked",
        }
    }

    /// The request itself is malformed (400) rather than its credentials being refused (401).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, Self::DuplicateHeader)
    }

    /// Every reason, for pre-registering metric label values.
    pub const REASONS: [&'static str; 21] = [
        "duplicate_header",
        "malformed_header",
        "unsupported_scheme",
        "missing_token",
        "missing_credentials",
        "token_too_large",
        "malformed_token",
        "alg_none",
        "crit_header",
        "key_reference",
        "unknown_key",
        "alg_mismatch",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "bad_issuer",
        "bad_audience",
        "malformed_claims",
        "missing_jti",
        "unknown_jti",
        "revoked",
    ];
}
