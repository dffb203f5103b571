//! Test fixtures: a recording mock origin ([`origin`]), a gateway process built from a config
//! ([`config`], [`gateway`], [`metrics`]), token minting ([`tokens`]), raw sockets ([`raw`]).
//!
//! Every server binds 127.0.0.1. The mock origin binds port 0 directly; the gateway (a real
//! `contentgate serve` process) gets ports found free by binding port 0 just before it starts.
#![allow(dead_code, unused_imports)]

pub mod config;
pub mod gateway;
pub mod metrics;
pub mod origin;
pub mod raw;
pub mod redis;
pub mod sample;
pub mod tokens;
pub mod webdriver;

pub use config::*;
pub use gateway::*;
pub use origin::*;
pub use sample::*;
pub use tokens::*;
