//! contentgate — an edge gateway for headless-CMS GraphQL content APIs, on Pingora.
//!
//! A request's path: route ([`config`]) → authenticate ([`auth`], PATs by `jti`) → parse
//! ([`graphql`]) → stage ([`stage`]) → forward ([`proxy`]). Everything the hot path reads
//! is one immutable [`policy::Snapshot`] behind `ArcSwap`, reloaded without dropping a request.
//! [`pipeline`] holds the decision, free of I/O; [`proxy`] holds the Pingora hooks.

pub mod admin;
pub mod adminctl;
pub mod auth;
pub mod cache;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod graphql;
pub mod manage;
pub mod metrics;
pub mod permissions;
pub mod pipeline;
pub mod policy;
pub mod policyctl;
pub mod proxy;
pub mod ratelimit;
pub mod schema;
pub mod server;
pub mod stage;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod upstream;

/// jsonwebtoken must have exactly one crypto provider; installing it explicitly at start makes
/// a misbuilt binary fail here instead of panicking at the first verification.
pub fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}
